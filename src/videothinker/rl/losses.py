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

Shapes: B prompts, G generations per prompt, N = B * G completions, T completion tokens (padded).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

LOSS_TYPES = ("grpo", "dapo", "dr_grpo")


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
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped policy-gradient loss with a signed k3 KL term (GRPO with ``beta >= 0``, CDPO with
    ``beta < 0``).

    ``token_loss = -(min(ratio * A, clamp(ratio, 1 - epsilon_low, 1 + epsilon_high) * A) - beta * kl)``
    with ``ratio = exp(logprobs - old_logprobs)`` and ``kl = k3_kl(logprobs, ref_logprobs, kl_clamp)``.
    Minimising it with ``beta > 0`` pulls the policy toward the reference; with ``beta < 0`` it pushes
    the policy away (the CDPO objective, reference = bias model).

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

    Returns:
        ``(loss, metrics)``: a 0-d loss with grad, and detached 0-d tensors (float32, float64 for float64 inputs):
        ``kl`` (k3 KL per token, aggregated as the loss; 0 without a reference), ``clip_fraction``
        (fraction of tokens where the clipped branch is active: ratio below 1 - epsilon_low with
        A < 0, or above 1 + epsilon_high with A > 0), ``clip_low_fraction``, ``clip_high_fraction`` (the
        two cases apart) and ``ratio_mean`` (mean importance ratio per token); the fractions and the
        ratio are token-level means over unmasked tokens.
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"unknown loss_type {loss_type!r}; expected one of {', '.join(LOSS_TYPES)}")
    if beta != 0.0 and ref_logprobs is None:
        raise ValueError(
            f"beta={beta} needs ref_logprobs (the reference model's log-probs); only beta=0 runs without one"
        )
    if epsilon_low <= 0 or epsilon_high <= 0:
        raise ValueError(f"epsilon_low and epsilon_high must be > 0, got {epsilon_low}, {epsilon_high}")
    if logprobs.dim() != 2:
        raise ValueError(f"logprobs must be [N, T], got shape {tuple(logprobs.shape)}")
    named = {"old_logprobs": old_logprobs, "completion_mask": completion_mask, "ref_logprobs": ref_logprobs}
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

    if ref_logprobs is None:
        kl = torch.zeros_like(surrogate)  # [N, T]
        token_loss = -surrogate
    else:
        kl = k3_kl(logprobs_, clean(ref_logprobs).detach(), kl_clamp) * mask  # [N, T]
        token_loss = -surrogate if beta == 0.0 else -(surrogate - beta * kl)

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
        }
    return loss, metrics
