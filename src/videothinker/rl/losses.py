"""The GRPO / CDPO objective as pure tensor functions (no models, no trainer state).

One objective serves all three training stages; only the reference and the sign of ``beta`` differ:

- bias-aware training: ``beta = 0`` and no reference (the KL term is absent);
- CDPO: the reference is the bias model and ``beta < 0``, so the KL term *repels* the policy from it;
- GRPO baseline: the reference is the initial model and ``beta > 0``, so the KL term *attracts*.

Per completion token (docs/LOSS.md has the derivation and the reference values)::

    ratio      = exp(logprobs - old_logprobs)
    surrogate  = min(ratio * A, clamp(ratio, 1 - epsilon_low, 1 + epsilon_high) * A)
    kl         = exp(d) - d - 1,  d = clamp(ref_logprobs - logprobs, -kl_clamp, kl_clamp)
    token_loss = -(surrogate - beta * kl)

The sign of ``beta`` is applied in `policy_loss` only and the clamp lives in `k3_kl` only.

The paper's repulsion is unbounded in practice (docs/LOSS.md, "Bounded repulsion"): on a token the
policy already finds likelier than the bias model its gradient pushes that token up further, so a
strong repulsion sharpens the policy into degenerate text. Three bounds, each off unless set:
`repulsion` caps the repelled term per token (``kl_cap``) or keeps only the tokens the bias model
finds at least as likely as the policy (``one_sided``); ``anchor_beta`` adds an attracting k3 term to
the initial model; `RepulsionController` adapts ``|beta|`` to hold KL(policy || bias) at a target.

Shapes: B prompts, G generations per prompt, N = B * G completions, T completion tokens (padded).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

LOSS_TYPES = ("grpo", "dapo", "dr_grpo")
SHAPES = ("k3", "logsigmoid")


def group_advantages(
    rewards: torch.Tensor,  # [B*G], generations of one prompt adjacent
    num_generations: int,
    scale_rewards: bool = True,
    eps: float = 1e-4,
) -> torch.Tensor:  # [B*G]
    """Group-normalised advantages ``(r - mean(group)) / (std(group) + eps)``.

    ``std`` is the *unbiased* sample standard deviation (``torch.std``, divisor G - 1), as in TRL's
    ``GRPOTrainer`` and the public VideoThinker code. A group whose rewards are all equal gets zero
    advantages. With ``scale_rewards=False`` the advantage is ``r - mean(group)`` (Dr. GRPO).

    Args:
        rewards: total reward of each completion, the G completions of a prompt next to each other.
        num_generations: G, completions per prompt (at least 2: one sample has no spread).
        scale_rewards: divide by the group's standard deviation.
        eps: added to the standard deviation (1e-4 in the reference code).

    Returns:
        advantages in float32 (float64 when the rewards are float64).

    >>> group_advantages(torch.tensor([1.0, 0.0, 2.0, 2.0]), num_generations=2)
    tensor([ 0.7070, -0.7070,  0.0000,  0.0000])
    """
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D [B*G], got shape {tuple(rewards.shape)}")
    if num_generations < 2:
        raise ValueError(f"num_generations must be >= 2 for group advantages, got {num_generations}")
    if rewards.numel() % num_generations:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {num_generations}")
    grouped = rewards.to(torch.promote_types(rewards.dtype, torch.float32)).view(
        -1, num_generations
    )  # [B, G]
    centred = grouped - grouped.mean(dim=1, keepdim=True)  # [B, G]
    if scale_rewards:
        centred = centred / (grouped.std(dim=1, keepdim=True) + eps)
    return centred.reshape(-1)


def completion_mask_after_eos(
    completion_ids: torch.Tensor,  # [N, T]
    eos_token_ids: int | Sequence[int],
) -> torch.Tensor:  # [N, T] int64
    """1 for every token up to and including the first EOS of its row, 0 after it; a row without
    EOS is all ones. Any token of ``eos_token_ids`` counts (Qwen chat models end a turn with
    ``<|im_end|>`` and may also emit ``<|endoftext|>``).

    >>> completion_mask_after_eos(torch.tensor([[5, 2, 7, 2], [5, 6, 7, 8]]), eos_token_ids=2)
    tensor([[1, 1, 0, 0],
            [1, 1, 1, 1]])
    """
    ids = [eos_token_ids] if isinstance(eos_token_ids, int) else list(eos_token_ids)
    if not ids:
        raise ValueError("eos_token_ids is empty")
    is_eos = torch.isin(completion_ids, torch.tensor(ids, device=completion_ids.device)).long()  # [N, T]
    eos_before = is_eos.cumsum(dim=1) - is_eos  # [N, T] count of EOS strictly before each position
    return (eos_before == 0).long()


def k3_kl(
    logprobs: torch.Tensor,  # [N, T]
    ref_logprobs: torch.Tensor,  # [N, T]
    kl_clamp: float,
) -> torch.Tensor:  # [N, T]
    """Per-token k3 estimate of KL(policy || reference): ``exp(d) - d - 1`` with
    ``d = clamp(ref_logprobs - logprobs, -kl_clamp, kl_clamp)``; always >= 0, and at most
    ``exp(kl_clamp) - kl_clamp - 1``. Its expectation over tokens sampled from the policy is the exact
    KL (Schulman, "Approximating KL divergence", 2020).

    The clamp keeps a *repulsive* term (beta < 0) bounded: without it, pushing a token's log-prob far
    above the reference's grows ``-d`` without limit. Where the clamp is active the gradient is zero.
    This is the only place the clamp is applied.
    """
    if kl_clamp <= 0:
        raise ValueError(f"kl_clamp must be > 0, got {kl_clamp}")
    d = torch.clamp(ref_logprobs - logprobs, min=-kl_clamp, max=kl_clamp)  # [N, T]
    return torch.exp(d) - d - 1


def repulsion(
    logprobs: torch.Tensor,  # [N, T]
    ref_logprobs: torch.Tensor,  # [N, T]
    kl_clamp: float,
    *,
    kl_cap: float | None = None,
    one_sided: bool = False,
    shape: str = "k3",
) -> torch.Tensor:  # [N, T]
    """The per-token term that a negative ``beta`` maximises: ``k3_kl`` as it is (the paper's form),
    or bounded.

    - ``shape``: ``k3`` (the paper's) or ``logsigmoid``, a saturating shape after NPO (Zhang et al.
      2024): ``log(2 sigmoid(x))`` with ``x = clamp(ref_logprobs - logprobs, +-kl_clamp)``; 0 where the
      two models agree, at most ``log 2``. Its gradient in ``logprobs`` is ``-sigmoid(-x)``: on the
      tokens ``one_sided`` keeps it pushes the sampled token down with weight 1/2 where the policy
      agrees with the bias model (where k3's gradient, ``1 - p_ref / p``, vanishes), fading as the
      policy falls below the bias model. Two-sided it is no repulsion: over tokens sampled from the
      policy its expected gradient is that of ``-sum_y p_ref(y) log(p(y) + p_ref(y))``, so maximising
      it moves the policy *toward* the bias model (docs/LOSS.md); `policy_loss` accepts it only with
      ``one_sided``. (The k3 term's expected gradient is that of KL(bias || policy), which a
      repulsion maximises by driving the policy's probability of the bias model's tokens to 0: the
      collapse the bounds stop.)
    - ``one_sided``: only tokens the reference finds at least as likely as the policy
      (``ref_logprobs >= logprobs``) count; elsewhere the term is 0. Its gradient in ``logprobs`` is
      ``1 - p_ref / p <= 0`` on the tokens kept, so it only ever pushes down tokens the bias model
      favours, never pushes up the policy's own (the side that sharpens into degenerate text).
    - ``kl_cap``: ``min(term, kl_cap)``; the term adds at most ``kl_cap`` per token, and a token past
      the cap gets no repulsive gradient (PAPO caps its maximised KL the same way, ``kl_prcp_cap``).
      ``k3 = kl_cap`` at ``|ref_logprobs - logprobs|`` of about 0.56 (reference likelier) to 0.7
      (policy likelier) for ``kl_cap = 0.2``.

    Bound: ``0 <= repulsion <= min(kl_cap, exp(kl_clamp) - kl_clamp - 1)``.

    >>> lp, ref = torch.tensor([[-1.0, -2.0]]), torch.tensor([[-3.0, -1.0]])  # k3: e^-2+1, e^1-2
    >>> repulsion(lp, ref, 11.0)
    tensor([[1.1353, 0.7183]])
    >>> repulsion(lp, ref, 11.0, kl_cap=0.8, one_sided=True)
    tensor([[0.0000, 0.7183]])
    >>> repulsion(lp, ref, 11.0, shape="logsigmoid")  # log(2 sigmoid(-2)), log(2 sigmoid(1))
    tensor([[-1.4338,  0.3799]])
    """
    if shape == "k3":
        term = k3_kl(logprobs, ref_logprobs, kl_clamp)  # [N, T]
    elif shape == "logsigmoid":
        if kl_clamp <= 0:
            raise ValueError(f"kl_clamp must be > 0, got {kl_clamp}")
        x = torch.clamp(ref_logprobs - logprobs, min=-kl_clamp, max=kl_clamp)  # [N, T]
        term = torch.nn.functional.logsigmoid(x) + math.log(2.0)
    else:
        raise ValueError(f"unknown repulsion shape {shape!r}; expected one of {', '.join(SHAPES)}")
    if one_sided:
        term = torch.where(ref_logprobs >= logprobs, term, torch.zeros_like(term))
    if kl_cap is not None:
        if kl_cap <= 0:
            raise ValueError(f"kl_cap must be > 0, got {kl_cap}")
        term = torch.clamp(term, max=kl_cap)
    return term


def _aggregate(
    values: torch.Tensor,  # [N, T], zero where masked
    mask: torch.Tensor,  # [N, T] float, 1 for completion tokens
    loss_type: str,
    max_completion_length: int | None,
) -> torch.Tensor:  # []
    """Reduce per-token values to a scalar the way ``loss_type`` says (see `policy_loss`)."""
    if loss_type == "grpo":
        per_sequence = values.sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)  # [N]
        return per_sequence.mean()
    if loss_type == "dapo":
        return values.sum() / mask.sum().clamp(min=1.0)
    length = values.size(1) if max_completion_length is None else max_completion_length
    return values.sum() / (values.size(0) * length)


def aggregated_kl(
    logprobs: torch.Tensor,  # [N, T]
    other_logprobs: torch.Tensor,  # [N, T]
    completion_mask: torch.Tensor,  # [N, T]
    *,
    kl_clamp: float = 11.0,
    loss_type: str = "grpo",
    max_completion_length: int | None = None,
) -> torch.Tensor:  # [] float32, no grad
    """The k3 KL of the policy to another model, aggregated over tokens as `policy_loss` aggregates its
    ``kl`` metric (the same number for the same model): what the trainer logs as ``kl_bias`` and
    ``kl_init``."""
    with torch.no_grad():
        keep = completion_mask.bool()
        mask = keep.float()
        zero = torch.zeros((), dtype=torch.float32, device=logprobs.device)
        lp = torch.where(keep, logprobs.float(), zero)
        other = torch.where(keep, other_logprobs.float(), zero)
        return _aggregate(k3_kl(lp, other, kl_clamp) * mask, mask, loss_type, max_completion_length)


def policy_loss(
    logprobs: torch.Tensor,  # [N, T] log-probs of the sampled tokens under the current policy (with grad)
    old_logprobs: torch.Tensor,  # [N, T] the same under the policy that sampled them (no grad)
    advantages: torch.Tensor,  # [N] one advantage per completion
    completion_mask: torch.Tensor,  # [N, T] 1 for completion tokens (through the first EOS), 0 after
    *,
    ref_logprobs: torch.Tensor | None = None,  # [N, T] the same under the reference model (no grad)
    beta: float = 0.0,
    epsilon_low: float = 0.2,
    epsilon_high: float = 0.28,
    kl_clamp: float = 11.0,
    loss_type: str = "grpo",
    max_completion_length: int | None = None,
    kl_cap: float | None = None,
    one_sided: bool = False,
    anchor_logprobs: torch.Tensor | None = None,  # [N, T] the same under the initial model (no grad)
    anchor_beta: float = 0.0,
    shape: str = "k3",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped policy-gradient loss with a signed k3 KL term (GRPO with ``beta >= 0``, CDPO with
    ``beta < 0``).

    ``token_loss = -(min(ratio * A, clamp(ratio, 1 - epsilon_low, 1 + epsilon_high) * A) - beta * kl)``
    with ``ratio = exp(logprobs - old_logprobs)`` and ``kl = k3_kl(logprobs, ref_logprobs, kl_clamp)``.
    Minimising it with ``beta > 0`` pulls the policy toward the reference; with ``beta < 0`` it pushes
    the policy away (the CDPO objective, reference = bias model).

    Bounded repulsion (beta < 0 only; all off by default, and then the loss is the paper's exactly):
    ``kl`` in the repelling term becomes ``repulsion(logprobs, ref_logprobs, kl_clamp, kl_cap=kl_cap,
    one_sided=one_sided)``, and ``anchor_beta > 0`` adds ``+ anchor_beta * k3_kl(logprobs,
    anchor_logprobs, kl_clamp)`` to the token loss: an attraction to the initial model beside the
    repulsion from the bias model.

    Aggregation of token losses over the batch (``loss_type``):
        ``grpo``: mean over each completion's tokens, then mean over completions (default; the
            reference code). A completion with no unmasked token counts as 0.
        ``dapo``: sum over all tokens / number of unmasked tokens (token level, DAPO).
        ``dr_grpo``: sum over all tokens / (N * max_completion_length) (constant normaliser, Dr. GRPO);
            ``max_completion_length=None`` uses the padded width T; pass the configured maximum so
            the normaliser does not change from step to step.

    Computation runs in float32 (float64 for float64 inputs) whatever the input dtype; masked
    positions are zeroed before any arithmetic, so padding may hold any value (even inf or NaN)
    without reaching the loss or its gradient.

    Args:
        logprobs, old_logprobs, ref_logprobs, advantages, completion_mask: see the shape comments.
        beta: KL coefficient; its sign is applied here and nowhere else. 0 needs no reference.
        epsilon_low, epsilon_high: clip range [1 - epsilon_low, 1 + epsilon_high] of the ratio (DAPO's
            asymmetric clip; the public code uses 0.2 / 0.28).
        kl_clamp: bound on |ref_logprobs - logprobs| inside the k3 estimator (11 in the public code).
        loss_type: ``grpo``, ``dapo`` or ``dr_grpo``.
        max_completion_length: the ``dr_grpo`` normaliser.
        kl_cap, one_sided, shape: bounds on the repelled term and its shape (`repulsion`); need
            ``beta < 0`` (shape: other than ``k3``).
        anchor_logprobs, anchor_beta: the initial model's log-probs and the coefficient (>= 0) of the
            attracting KL term to it; need ``beta < 0``.

    Returns:
        ``(loss, metrics)``: a 0-d loss with grad, and detached 0-d tensors (float32, float64 for float64 inputs):
        ``kl`` (k3 KL per token, aggregated as the loss; 0 without a reference), ``clip_fraction``
        (fraction of tokens where the clipped branch is active: ratio below 1 - epsilon_low with
        A < 0, or above 1 + epsilon_high with A > 0), ``clip_low_fraction``, ``clip_high_fraction`` (the
        two cases apart) and ``ratio_mean`` (mean importance ratio per token); the fractions and the
        ratio are token-level means over unmasked tokens. With a repulsion (beta < 0) also
        ``repulsion`` (the repelled term per token, after its bounds, aggregated as the loss) and
        ``repel_share`` (the repelling term's share of the loss's per-token magnitudes,
        ``sum|beta * repulsion| / (sum|ratio * A| + sum|beta * repulsion| + sum|anchor_beta * kl_anchor|)``);
        with an anchor, ``kl_anchor`` (k3 KL to the initial model per token, aggregated as the loss).
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"unknown loss_type {loss_type!r}; expected one of {', '.join(LOSS_TYPES)}")
    if beta != 0.0 and ref_logprobs is None:
        raise ValueError(
            f"beta={beta} needs ref_logprobs (the reference model's log-probs); only beta=0 runs without one"
        )
    if shape not in SHAPES:
        raise ValueError(f"unknown repulsion shape {shape!r}; expected one of {', '.join(SHAPES)}")
    if shape == "logsigmoid" and not one_sided:
        raise ValueError(
            "shape logsigmoid needs one_sided: two-sided, on the policy's own samples it attracts the policy "
            "to the bias model instead of repelling it (docs/LOSS.md)"
        )
    bounded = kl_cap is not None or one_sided or anchor_beta != 0.0 or shape != "k3"
    if bounded and beta >= 0:
        raise ValueError(
            f"kl_cap, one_sided, anchor_beta and shape bound a repulsion: they need beta < 0, got beta={beta}"
        )
    if anchor_beta < 0:
        raise ValueError(f"anchor_beta attracts to the initial model: it must be >= 0, got {anchor_beta}")
    if anchor_beta != 0.0 and anchor_logprobs is None:
        raise ValueError(f"anchor_beta={anchor_beta} needs anchor_logprobs (the initial model's log-probs)")
    if epsilon_low <= 0 or epsilon_high <= 0:
        raise ValueError(f"epsilon_low and epsilon_high must be > 0, got {epsilon_low}, {epsilon_high}")
    if logprobs.dim() != 2:
        raise ValueError(f"logprobs must be [N, T], got shape {tuple(logprobs.shape)}")
    named = {
        "old_logprobs": old_logprobs,
        "completion_mask": completion_mask,
        "ref_logprobs": ref_logprobs,
        "anchor_logprobs": anchor_logprobs,
    }
    for name, tensor in named.items():
        if tensor is not None and tensor.shape != logprobs.shape:
            raise ValueError(f"{name} has shape {tuple(tensor.shape)}, logprobs {tuple(logprobs.shape)}")
    if advantages.shape != logprobs.shape[:1]:
        raise ValueError(
            f"advantages must be [N] = [{logprobs.size(0)}], got shape {tuple(advantages.shape)}"
        )

    dtype = torch.promote_types(logprobs.dtype, torch.float32)
    keep = completion_mask.bool()  # [N, T]
    mask = keep.to(dtype)  # [N, T]
    zero = logprobs.new_zeros((), dtype=dtype)

    def clean(x: torch.Tensor) -> torch.Tensor:  # [N, T] -> [N, T] in dtype, 0 where masked
        return torch.where(keep, x.to(dtype), zero)

    logprobs_, old_ = clean(logprobs), clean(old_logprobs).detach()
    adv = advantages.to(dtype).detach().unsqueeze(1)  # [N, 1]

    ratio = torch.exp(logprobs_ - old_)  # [N, T]
    clipped_ratio = torch.clamp(ratio, 1.0 - epsilon_low, 1.0 + epsilon_high)  # [N, T]
    surrogate = torch.minimum(ratio * adv, clipped_ratio * adv)  # [N, T]

    extra: dict[str, torch.Tensor] = {}
    if ref_logprobs is None:
        kl = torch.zeros_like(surrogate)  # [N, T]
        token_loss = -surrogate
    else:
        ref_ = clean(ref_logprobs).detach()
        kl = k3_kl(logprobs_, ref_, kl_clamp) * mask  # [N, T]
        if beta >= 0.0:
            token_loss = -surrogate if beta == 0.0 else -(surrogate - beta * kl)
        else:
            repelled = (
                kl
                if not (kl_cap is not None or one_sided or shape != "k3")
                else (
                    repulsion(logprobs_, ref_, kl_clamp, kl_cap=kl_cap, one_sided=one_sided, shape=shape)
                    * mask
                )
            )  # [N, T]
            token_loss = -(surrogate - beta * repelled)
            magnitudes = [(ratio * adv).abs() * mask, (beta * repelled).abs()]  # [N, T] each
            if anchor_beta != 0.0:
                kl_anchor = k3_kl(logprobs_, clean(anchor_logprobs).detach(), kl_clamp) * mask  # [N, T]
                token_loss = token_loss + anchor_beta * kl_anchor
                magnitudes.append((anchor_beta * kl_anchor).abs())
                extra["kl_anchor"] = _aggregate(kl_anchor.detach(), mask, loss_type, max_completion_length)
            extra["repulsion"] = _aggregate(repelled.detach(), mask, loss_type, max_completion_length)
            total = sum(m.detach().sum() for m in magnitudes)
            extra["repel_share"] = magnitudes[1].detach().sum() / total.clamp(min=1e-30)

    loss = _aggregate(token_loss * mask, mask, loss_type, max_completion_length)

    with torch.no_grad():
        n_tokens = mask.sum().clamp(min=1.0)
        low = (ratio < 1.0 - epsilon_low) & (adv < 0) & keep  # [N, T]
        high = (ratio > 1.0 + epsilon_high) & (adv > 0) & keep  # [N, T]
        metrics = {
            "kl": _aggregate(kl.detach(), mask, loss_type, max_completion_length),
            "clip_fraction": (low | high).to(dtype).sum() / n_tokens,
            "clip_low_fraction": low.to(dtype).sum() / n_tokens,
            "clip_high_fraction": high.to(dtype).sum() / n_tokens,
            "ratio_mean": (ratio.detach() * mask).sum() / n_tokens,
            **extra,
        }
    return loss, metrics


class RepulsionController:
    """Adapts ``|beta|`` of a repulsion so that KL(policy || bias) holds at a target, stated relative to
    the KL measured over the first steps: one setting for models of any size (the adaptive KL controller
    of PPO and Ziegler et al. 2019, turned around: there a too-large KL raises an attraction, here it
    lowers a repulsion).

    For the first ``warmup`` steps beta stays as given and the KL is averaged; the policy is then about
    the initial model, so the average is KL(base || bias). The target is ``ratio`` times it. After
    that, each step::

        |beta| <- clamp(|beta| * exp(-rate * clamp(log(kl / target), -1, 1)), beta_min, beta_max)

    so a KL below the target strengthens the repulsion and one above it weakens it, by at most a
    factor ``exp(rate)`` a step. Bound: ``beta_min <= |beta| <= beta_max`` always.

    >>> c = RepulsionController(beta=-0.1, ratio=2.0, warmup=1, rate=0.1, beta_max=1.0)
    >>> c.update(0.01)  # warmup: target = 2 * 0.01
    -0.1
    >>> round(c.update(0.01), 4)  # kl half the target: log 0.5 = -0.69 -> |beta| * exp(0.069)
    -0.1072
    >>> round(c.update(0.2), 4)  # 10x the target: log clamped to 1 -> |beta| * exp(-0.1)
    -0.097
    """

    def __init__(
        self,
        beta: float,
        ratio: float,
        warmup: int = 5,
        rate: float = 0.1,
        beta_max: float = 1.0,
        beta_min: float = 1e-4,
    ):
        if beta >= 0:
            raise ValueError(f"the controller adapts a repulsion: beta must be < 0, got {beta}")
        if ratio <= 0 or warmup < 1 or rate <= 0 or not 0 < beta_min <= beta_max:
            raise ValueError(
                f"need ratio > 0, warmup >= 1, rate > 0 and 0 < beta_min <= beta_max; got ratio={ratio}, "
                f"warmup={warmup}, rate={rate}, beta_min={beta_min}, beta_max={beta_max}"
            )
        self.beta, self.ratio, self.warmup, self.rate = beta, ratio, warmup, rate
        self.beta_min, self.beta_max = beta_min, beta_max
        self.seen: list[float] = []  # the warmup's KL values
        self.target: float | None = None

    def update(self, kl: float) -> float:
        """Take the step's KL(policy || bias); return beta for the next step."""
        if self.target is None:
            self.seen.append(float(kl))
            if len(self.seen) >= self.warmup:
                self.target = self.ratio * max(sum(self.seen) / len(self.seen), 1e-8)
            return self.beta
        error = min(max(math.log(max(kl, 1e-12) / self.target), -1.0), 1.0)
        size = min(max(abs(self.beta) * math.exp(-self.rate * error), self.beta_min), self.beta_max)
        self.beta = -size
        return self.beta

    def state_dict(self) -> dict[str, Any]:
        return {"beta": self.beta, "seen": list(self.seen), "target": self.target}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.beta, self.seen, self.target = state["beta"], list(state["seen"]), state["target"]
