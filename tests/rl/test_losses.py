"""Tests of the GRPO / CDPO loss: hand-worked cases, a float64 loop reference across dtypes, masking,
gradients, the k3 bound, and the behaviour that defines CDPO (a repulsive step raises the KL)."""

from __future__ import annotations

import doctest
import math
import statistics

import pytest
import torch

from videothinker.rl import losses
from videothinker.rl.losses import (
    completion_mask_after_eos,
    group_advantages,
    k3_kl,
    policy_loss,
)

LN = math.log


def _loss(logprobs, advantages, mask=None, old=None, **kw):
    """policy_loss on Python lists; ``old`` defaults to logprobs (ratio 1)."""
    logprobs = torch.tensor(logprobs, dtype=torch.float64)
    old = logprobs if old is None else torch.tensor(old, dtype=torch.float64)
    mask = torch.ones_like(logprobs) if mask is None else torch.tensor(mask, dtype=torch.float64)
    if "ref_logprobs" in kw:
        kw["ref_logprobs"] = torch.tensor(kw["ref_logprobs"], dtype=torch.float64)
    return policy_loss(logprobs, old, torch.tensor(advantages, dtype=torch.float64), mask, **kw)


def test_doctests():
    assert doctest.testmod(losses).failed == 0


# ---------------------------------------------------------------- group advantages


def test_group_advantages_by_hand():
    # group 1: r = [1, 0], mean 0.5, unbiased std = sqrt((0.25 + 0.25) / 1) = 0.70711
    #   -> +-0.5 / (0.70711 + 1e-4) = +-0.70700
    # group 2: r = [3, 3, ...] equal rewards -> 0
    adv = group_advantages(torch.tensor([1.0, 0.0, 3.0, 3.0]), num_generations=2)
    expected = 0.5 / (math.sqrt(0.5) + 1e-4)
    torch.testing.assert_close(adv, torch.tensor([expected, -expected, 0.0, 0.0]))
    # without scaling: r - mean
    adv = group_advantages(torch.tensor([1.0, 0.0, 3.0, 3.0]), num_generations=2, scale_rewards=False)
    torch.testing.assert_close(adv, torch.tensor([0.5, -0.5, 0.0, 0.0]))


@pytest.mark.parametrize("scale", [True, False])
def test_group_advantages_matches_loop(scale):
    rewards = torch.rand(24, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2
    got = group_advantages(rewards, num_generations=4, scale_rewards=scale)
    expected = []
    for start in range(0, 24, 4):
        group = rewards[start : start + 4].tolist()
        mean, std = statistics.fmean(group), statistics.stdev(group)  # stdev: divisor n - 1
        expected += [(r - mean) / (std + 1e-4) if scale else r - mean for r in group]
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=1e-12)


def test_group_advantages_errors():
    with pytest.raises(ValueError, match="groups of 3"):
        group_advantages(torch.zeros(4), num_generations=3)
    with pytest.raises(ValueError, match=">= 2"):
        group_advantages(torch.zeros(4), num_generations=1)
    with pytest.raises(ValueError, match="1-D"):
        group_advantages(torch.zeros(2, 2), num_generations=2)


# ---------------------------------------------------------------- completion mask


def test_completion_mask_by_hand():
    ids = torch.tensor([[9, 2, 2, 7], [2, 5, 6, 7], [5, 6, 7, 8], [5, 3, 2, 8]])
    expected = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 1], [1, 1, 0, 0]])
    # EOS set {2, 3}: the last row stops at the 3
    assert torch.equal(completion_mask_after_eos(ids, [2, 3]), expected)
    # only 2 counts: the last row stops at the 2
    assert completion_mask_after_eos(ids, 2)[3].tolist() == [1, 1, 1, 0]


def test_completion_mask_matches_loop():
    ids = torch.randint(0, 5, (16, 12), generator=torch.Generator().manual_seed(1))
    got = completion_mask_after_eos(ids, (0, 4))
    for row, mask_row in zip(ids.tolist(), got.tolist()):
        expected, seen = [], False
        for token in row:
            expected.append(0 if seen else 1)
            seen = seen or token in (0, 4)
        assert mask_row == expected


# ---------------------------------------------------------------- hand-worked loss cases


def test_clip_high_by_hand():
    # A = +1, ratios [1.1, 1.5] (old = 0, logprobs = ln ratio), clip range [0.8, 1.28]
    #   token 0: min(1.1 * 1, 1.1 * 1) = 1.1           (inside the range)
    #   token 1: min(1.5 * 1, 1.28 * 1) = 1.28         (upper clip active)
    #   grpo: -(1.1 + 1.28) / 2 = -1.19
    loss, m = _loss([[LN(1.1), LN(1.5)]], [1.0], old=[[0.0, 0.0]])
    assert loss.item() == pytest.approx(-1.19)
    assert m["clip_high_fraction"].item() == pytest.approx(0.5)
    assert m["clip_low_fraction"].item() == 0.0
    assert m["clip_fraction"].item() == pytest.approx(0.5)
    assert m["ratio_mean"].item() == pytest.approx((1.1 + 1.5) / 2)
    assert m["kl"].item() == 0.0  # no reference


def test_clip_low_by_hand():
    # A = -1, ratios [0.5, 1.1]
    #   token 0: min(0.5 * -1, 0.8 * -1) = -0.8        (lower clip active)
    #   token 1: min(1.1 * -1, 1.1 * -1) = -1.1
    #   grpo: -(-0.8 - 1.1) / 2 = 0.95
    loss, m = _loss([[LN(0.5), LN(1.1)]], [-1.0], old=[[0.0, 0.0]])
    assert loss.item() == pytest.approx(0.95)
    assert m["clip_low_fraction"].item() == pytest.approx(0.5)
    assert m["clip_high_fraction"].item() == 0.0
    # ratio 1.5 with A < 0 is NOT clipped (min takes the unclipped -1.5): -(-1.5) = 1.5
    loss, m = _loss([[LN(1.5)]], [-1.0], old=[[0.0]])
    assert loss.item() == pytest.approx(1.5)
    assert m["clip_fraction"].item() == 0.0


@pytest.mark.parametrize("beta", [0.1, -0.1])
def test_kl_term_by_hand(beta):
    # ratio 1, A = 0: the surrogate is 0, only the KL term is left.
    # d = ref - logp = [ln 2, 0] -> kl = [2 - ln 2 - 1, 1 - 0 - 1] = [0.306853, 0]
    # token_loss = -(0 - beta * kl) = beta * kl;  grpo: beta * 0.306853 / 2
    kl0 = 1 - LN(2)
    loss, m = _loss([[-1.0, -2.0]], [0.0], ref_logprobs=[[-1.0 + LN(2), -2.0]], beta=beta)
    assert loss.item() == pytest.approx(beta * kl0 / 2)
    assert m["kl"].item() == pytest.approx(kl0 / 2)


def test_kl_clamp_by_hand():
    # |ref - logp| = 20 > kl_clamp = 11:
    #   d = +11 -> e^11 - 11 - 1 = 59862.14;   d = -11 -> e^-11 + 11 - 1 = 10.0000167
    kl = k3_kl(
        torch.tensor([0.0, 0.0], dtype=torch.float64), torch.tensor([20.0, -20.0], dtype=torch.float64), 11.0
    )
    torch.testing.assert_close(kl, torch.tensor([math.exp(11) - 12, math.exp(-11) + 10], dtype=torch.float64))


def test_aggregations_by_hand():
    # ratio 1, beta 0 -> token_loss = -A on every unmasked token.
    # A = [1, -2]; mask [[1, 1, 1], [1, 0, 0]] -> token losses [[-1, -1, -1], [2, -, -]]
    #   grpo:    mean(-3 / 3, 2 / 1) = mean(-1, 2) = 0.5
    #   dapo:    (-3 + 2) / 4 tokens = -0.25
    #   dr_grpo: (-3 + 2) / (2 sequences * 4 max tokens) = -0.125;  with max = None -> T = 3: -1/6
    args = ([[-1.0, -2.0, -3.0], [-1.0, -2.0, -3.0]], [1.0, -2.0], [[1, 1, 1], [1, 0, 0]])
    assert _loss(*args, loss_type="grpo")[0].item() == pytest.approx(0.5)
    assert _loss(*args, loss_type="dapo")[0].item() == pytest.approx(-0.25)
    assert _loss(*args, loss_type="dr_grpo", max_completion_length=4)[0].item() == pytest.approx(-0.125)
    assert _loss(*args, loss_type="dr_grpo")[0].item() == pytest.approx(-1 / 6)


# ---------------------------------------------------------------- float64 loop reference


def _naive(logprobs, old, adv, mask, ref, beta, eps_low, eps_high, clamp, loss_type, max_len):
    """The loss written token by token in Python floats (float64), straight from DESIGN.md §2."""
    n, t = len(logprobs), len(logprobs[0])
    token_losses, kls = [[0.0] * t for _ in range(n)], [[0.0] * t for _ in range(n)]
    low = high = ratio_sum = tokens = 0
    for i in range(n):
        for j in range(t):
            if not mask[i][j]:
                continue
            ratio = math.exp(logprobs[i][j] - old[i][j])
            surrogate = min(ratio * adv[i], min(max(ratio, 1 - eps_low), 1 + eps_high) * adv[i])
            kl = 0.0
            if ref is not None:
                d = min(max(ref[i][j] - logprobs[i][j], -clamp), clamp)
                kl = math.exp(d) - d - 1
            token_losses[i][j], kls[i][j] = -(surrogate - beta * kl), kl
            low += ratio < 1 - eps_low and adv[i] < 0
            high += ratio > 1 + eps_high and adv[i] > 0
            ratio_sum += ratio
            tokens += 1

    def aggregate(values):
        if loss_type == "grpo":
            return sum(sum(v) / max(sum(m), 1) for v, m in zip(values, mask)) / n
        if loss_type == "dapo":
            return sum(map(sum, values)) / max(tokens, 1)
        return sum(map(sum, values)) / (n * (max_len or t))

    metrics = {
        "kl": aggregate(kls),
        "clip_fraction": (low + high) / max(tokens, 1),
        "clip_low_fraction": low / max(tokens, 1),
        "clip_high_fraction": high / max(tokens, 1),
        "ratio_mean": ratio_sum / max(tokens, 1),
    }
    return aggregate(token_losses), metrics


def _random_batch(seed, n=6, t=7, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    logprobs = -torch.rand(n, t, generator=g, dtype=torch.float64) * 3
    old = (
        logprobs + torch.randn(n, t, generator=g, dtype=torch.float64) * 0.3
    )  # ratios around 1, some clipped
    ref = logprobs + torch.randn(n, t, generator=g, dtype=torch.float64) * 2.5  # some beyond kl_clamp = 4
    adv = torch.randn(n, generator=g, dtype=torch.float64)
    lengths = torch.randint(0, t + 1, (n,), generator=g)
    lengths[0] = 0  # one completion with no token at all
    mask = (torch.arange(t) < lengths[:, None]).long()
    return [x.to(dtype) for x in (logprobs, old, ref, adv)] + [mask]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("loss_type", ["grpo", "dapo", "dr_grpo"])
@pytest.mark.parametrize("beta", [0.0, 0.04, -0.01])
def test_matches_float64_loop_reference(dtype, loss_type, beta):
    logprobs, old, ref, adv, mask = _random_batch(seed=3, dtype=dtype)
    use_ref = ref if beta != 0.0 else None
    kw = dict(
        beta=beta,
        epsilon_low=0.2,
        epsilon_high=0.28,
        kl_clamp=4.0,
        loss_type=loss_type,
        max_completion_length=9,
    )
    loss, metrics = policy_loss(logprobs, old, adv, mask, ref_logprobs=use_ref, **kw)
    as_lists = [x.double().tolist() if x is not None else None for x in (logprobs, old, adv, mask, use_ref)]
    expected_loss, expected_metrics = _naive(*as_lists, beta, 0.2, 0.28, 4.0, loss_type, 9)
    # inputs are rounded to `dtype` first; the function computes in >= float32
    tol = 1e-12 if dtype == torch.float64 else 2e-5
    assert loss.item() == pytest.approx(expected_loss, rel=tol, abs=tol)
    for name, value in expected_metrics.items():
        assert metrics[name].item() == pytest.approx(value, rel=tol, abs=tol), name
        assert not metrics[name].requires_grad
    assert (metrics["clip_low_fraction"] > 0) and (
        metrics["clip_high_fraction"] > 0
    )  # the batch exercises both


# ---------------------------------------------------------------- masking, gradients, errors


def test_values_after_eos_change_nothing():
    logprobs, old, ref, adv, mask = _random_batch(seed=5, dtype=torch.float32)
    garbage = torch.full_like(logprobs, float("nan"))
    garbage[:, ::2] = float("inf")

    def run(lp, o, r):
        lp = lp.clone().requires_grad_(True)
        loss, metrics = policy_loss(lp, o, adv, mask, ref_logprobs=r, beta=-0.01, kl_clamp=4.0)
        loss.backward()
        return loss, metrics, lp.grad

    masked = mask.bool()
    loss_a, metrics_a, grad_a = run(logprobs, old, ref)
    loss_b, metrics_b, grad_b = run(*(torch.where(masked, x, garbage) for x in (logprobs, old, ref)))
    assert torch.isfinite(loss_a) and loss_a.item() == loss_b.item()
    assert all(metrics_a[k].item() == metrics_b[k].item() for k in metrics_a)
    assert torch.equal(grad_a, grad_b)
    assert torch.all(grad_b[~masked] == 0)


def test_all_masked_is_finite():
    logprobs = torch.zeros(2, 3, requires_grad=True)
    for loss_type in losses.LOSS_TYPES:
        loss, metrics = policy_loss(
            logprobs,
            logprobs.detach(),
            torch.ones(2),
            torch.zeros(2, 3),
            ref_logprobs=torch.zeros(2, 3),
            beta=0.1,
            loss_type=loss_type,
        )
        loss.backward()
        assert loss.item() == 0.0 and torch.isfinite(logprobs.grad).all()
        assert all(torch.isfinite(v) for v in metrics.values())


def test_gradient_by_hand():
    # N = 1, T = 2, ratio 1 (old = logp), A = 0.5, beta = 0.2, d = ref - logp = [ln 2, 0]
    #   d/dlogp [-(ratio * A)] = -A * ratio = -0.5             (unclipped at ratio 1)
    #   d/dlogp [beta * (e^d - d - 1)] = beta * (1 - e^d) = 0.2 * (1 - 2) = -0.2  for token 0, 0 for token 1
    #   grpo divides by T = 2: grad = [(-0.5 - 0.2) / 2, (-0.5 + 0) / 2] = [-0.35, -0.25]
    logprobs = torch.tensor([[-1.0, -2.0]], dtype=torch.float64, requires_grad=True)
    ref = torch.tensor([[-1.0 + LN(2), -2.0]], dtype=torch.float64)
    loss, _ = policy_loss(
        logprobs, logprobs.detach(), torch.tensor([0.5]), torch.ones(1, 2), ref_logprobs=ref, beta=0.2
    )
    loss.backward()
    torch.testing.assert_close(logprobs.grad, torch.tensor([[-0.35, -0.25]], dtype=torch.float64))
    # ratio 1.5 > 1.28 with A > 0: the clipped branch is a constant -> no gradient from the surrogate
    logprobs = torch.tensor([[LN(1.5)]], dtype=torch.float64, requires_grad=True)
    policy_loss(logprobs, torch.zeros(1, 1), torch.tensor([1.0]), torch.ones(1, 1))[0].backward()
    assert logprobs.grad.item() == 0.0


def test_k3_nonnegative_bounded_and_flat_beyond_clamp():
    clamp = 3.0
    logprobs = torch.zeros(401, dtype=torch.float64, requires_grad=True)
    ref = torch.linspace(-50, 50, 401, dtype=torch.float64)
    kl = k3_kl(logprobs, ref, clamp)
    assert torch.all(kl >= 0)
    assert torch.all(kl <= math.exp(clamp) - clamp - 1 + 1e-9)
    kl.sum().backward()
    beyond = ref.abs() > clamp
    assert torch.all(logprobs.grad[beyond] == 0) and torch.all(
        logprobs.grad[(ref.abs() < clamp) & (ref != 0)] != 0
    )
    with pytest.raises(ValueError, match="kl_clamp"):
        k3_kl(logprobs, ref, 0.0)


def test_beta_zero_needs_no_reference_and_ignores_one():
    logprobs, old, ref, adv, mask = _random_batch(seed=7, dtype=torch.float64)
    without, m_without = policy_loss(logprobs, old, adv, mask)
    with_ref, m_with = policy_loss(logprobs, old, adv, mask, ref_logprobs=ref, beta=0.0)
    assert without.item() == with_ref.item()
    assert m_without["kl"].item() == 0.0 and m_with["kl"].item() > 0  # a given reference is still measured


def test_errors():
    x, adv, mask = torch.zeros(2, 3), torch.zeros(2), torch.ones(2, 3)
    with pytest.raises(ValueError, match="needs ref_logprobs"):
        policy_loss(x, x, adv, mask, beta=-0.01)
    with pytest.raises(ValueError, match="unknown loss_type"):
        policy_loss(x, x, adv, mask, loss_type="ppo")
    with pytest.raises(ValueError, match="advantages"):
        policy_loss(x, x, torch.zeros(3), mask)
    with pytest.raises(ValueError, match="completion_mask"):
        policy_loss(x, x, adv, torch.ones(2, 4))
    with pytest.raises(ValueError, match="epsilon"):
        policy_loss(x, x, adv, mask, epsilon_low=0.0)


# ---------------------------------------------------------------- behaviour on a tiny policy


def _exact_kl(logits, ref_logits):
    """KL(policy || reference) summed over positions, computed exactly over the vocabulary."""
    p, q = torch.log_softmax(logits, -1), torch.log_softmax(ref_logits, -1)
    return (p.exp() * (p - q)).sum().item()


def _kl_after_one_step(beta, seed, positions=4, vocab=6, samples=256, lr=1.0):
    """One SGD step of policy_loss (zero advantages: only the KL term acts) on a table of
    position-wise logits; returns the exact KL to the reference before and after."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.nn.Parameter(torch.randn(positions, vocab, generator=g))
    ref_logits = torch.randn(positions, vocab, generator=g)
    tokens = torch.multinomial(torch.softmax(logits.detach(), -1), samples, replacement=True, generator=g).T
    rows = torch.arange(positions)
    logprobs = torch.log_softmax(logits, -1)[rows, tokens]  # [N, T]
    ref_logprobs = torch.log_softmax(ref_logits, -1)[rows, tokens]  # [N, T]
    before = _exact_kl(logits.detach(), ref_logits)
    loss, metrics = policy_loss(
        logprobs,
        logprobs.detach(),
        torch.zeros(samples),
        torch.ones(samples, positions),
        ref_logprobs=ref_logprobs,
        beta=beta,
    )
    # the k3 mean is an unbiased estimate of the exact KL (per token here: summed KL / positions)
    assert metrics["kl"].item() == pytest.approx(before / positions, rel=0.25)
    loss.backward()
    with torch.no_grad():
        logits -= lr * logits.grad
    return before, _exact_kl(logits.detach(), ref_logits)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_repulsive_step_increases_kl_attractive_step_decreases_it(seed):
    before, after = _kl_after_one_step(beta=-0.1, seed=seed)
    assert after > before, "beta < 0 (CDPO) must push the policy away from the reference"
    before, after = _kl_after_one_step(beta=0.1, seed=seed)
    assert after < before, "beta > 0 (GRPO) must pull the policy toward the reference"


# ---------------------------------------------------------------- bounded repulsion


def test_repulsion_by_hand():
    # d = ref - logprobs: token 1: -3 - (-1) = -2 -> k3 = e^-2 + 2 - 1 = 1.13534 (policy likelier)
    #                     token 2: -1 - (-2) = +1 -> k3 = e^1 - 1 - 1 = 0.71828 (bias likelier)
    lp, ref = torch.tensor([[-1.0, -2.0]]), torch.tensor([[-3.0, -1.0]])
    k1, k2 = math.exp(-2) + 1, math.e - 2
    torch.testing.assert_close(losses.repulsion(lp, ref, 11.0), torch.tensor([[k1, k2]]))
    # cap 0.8: min(1.135, 0.8) = 0.8, min(0.718, 0.8) = 0.718
    torch.testing.assert_close(losses.repulsion(lp, ref, 11.0, kl_cap=0.8), torch.tensor([[0.8, k2]]))
    # one-sided: token 1 has ref < logprobs -> 0; token 2 kept
    torch.testing.assert_close(losses.repulsion(lp, ref, 11.0, one_sided=True), torch.tensor([[0.0, k2]]))
    # the kl_clamp still applies first: d clamped to +-0.5 -> k3(-0.5) = 0.10653, k3(0.5) = 0.14872
    torch.testing.assert_close(
        losses.repulsion(lp, ref, 0.5), torch.tensor([[math.exp(-0.5) - 0.5, math.exp(0.5) - 1.5]])
    )


def test_logsigmoid_repulsion_by_hand():
    # x = ref - logprobs: token 1: -2 -> log(2 sigmoid(-2)) = log(2 * 0.119203) = -1.43378
    #                     token 2: +1 -> log(2 sigmoid(1)) = log(2 * 0.731059) = 0.37989
    #                     token 3:  0 -> log(2 * 0.5) = 0 (the two models agree)
    lp = torch.tensor([[-1.0, -2.0, -0.5]], dtype=torch.float64, requires_grad=True)
    ref = torch.tensor([[-3.0, -1.0, -0.5]], dtype=torch.float64)
    sig = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
    term = losses.repulsion(lp, ref, 11.0, shape="logsigmoid")
    expected = [math.log(2 * sig(-2)), math.log(2 * sig(1)), 0.0]
    torch.testing.assert_close(term, torch.tensor([expected], dtype=torch.float64))
    # gradient in logprobs: -sigmoid(-x) = -sigmoid(logprobs - ref): -0.880797, -0.268941, -0.5;
    # k3's at agreement is 1 - p_ref / p = 0
    term.sum().backward()
    torch.testing.assert_close(lp.grad, torch.tensor([[-sig(2), -sig(-1), -0.5]], dtype=torch.float64))
    # one-sided: token 1 (policy likelier) -> 0; the rest kept; never above log 2
    one = losses.repulsion(lp.detach(), ref, 11.0, shape="logsigmoid", one_sided=True)
    torch.testing.assert_close(one, torch.tensor([[0.0, expected[1], 0.0]], dtype=torch.float64))
    far = losses.repulsion(torch.tensor([[-20.0]]), torch.tensor([[0.0]]), 11.0, shape="logsigmoid")
    assert 0.69 < far.item() <= math.log(2)
    with pytest.raises(ValueError, match="unknown repulsion shape"):
        losses.repulsion(lp.detach(), ref, 11.0, shape="npo")


def test_two_sided_logsigmoid_attracts_and_is_refused():
    """On the policy's own samples the two-sided log-sigmoid moves the policy toward the bias model
    (its expected gradient is that of -sum_y p_ref log(p + p_ref)); one-sided it repels, and keeps
    the entropy where the one-sided uncapped k3 loses it."""
    two_sided, _ = _repel(60, beta=-1.0, shape="logsigmoid")
    one_sided, entropy = _repel(150, beta=-1.0, shape="logsigmoid", one_sided=True)
    _, k3_entropy = _repel(150, beta=-1.0, one_sided=True)
    assert two_sided[-1] < 0.5 * two_sided[0]  # attracted
    assert one_sided[30] > 2 * one_sided[0]  # repelled
    assert entropy > 1.2 > 0.8 > k3_entropy
    logprobs, old, ref, adv, mask = _random_batch(seed=1)
    with pytest.raises(ValueError, match="needs one_sided"):
        policy_loss(logprobs, old, adv, mask, ref_logprobs=ref, beta=-0.3, shape="logsigmoid")
    with pytest.raises(ValueError, match="need beta < 0"):
        policy_loss(logprobs, old, adv, mask, ref_logprobs=ref, beta=0.04, shape="logsigmoid", one_sided=True)


def test_bounded_loss_by_hand():
    # one token, ratio 1, A = 0: the loss is the KL terms alone.
    # logprobs -1, bias -3 (d = -2, k3 = 1.13534), initial model -1.5 (d = -0.5, k3 = 0.10653)
    args = ([[-1.0]], [0.0])
    k_bias, k_init = math.exp(-2) + 1, math.exp(-0.5) - 0.5
    # paper form, beta -0.1: loss = beta * k3 = -0.113534
    assert _loss(*args, ref_logprobs=[[-3.0]], beta=-0.1)[0].item() == pytest.approx(-0.1 * k_bias)
    # cap 0.2: loss = -0.1 * 0.2 = -0.02
    loss, metrics = _loss(*args, ref_logprobs=[[-3.0]], beta=-0.1, kl_cap=0.2)
    assert loss.item() == pytest.approx(-0.02)
    assert metrics["repulsion"].item() == pytest.approx(0.2)
    assert metrics["kl"].item() == pytest.approx(k_bias)  # the logged KL is the uncapped estimate
    # anchor 0.04: loss = -0.02 + 0.04 * 0.10653; share = 0.02 / (0 + 0.02 + 0.0042612)
    anchor = torch.tensor([[-1.5]], dtype=torch.float64)
    loss, metrics = _loss(
        *args, ref_logprobs=[[-3.0]], beta=-0.1, kl_cap=0.2, anchor_logprobs=anchor, anchor_beta=0.04
    )
    assert loss.item() == pytest.approx(-0.02 + 0.04 * k_init)
    assert metrics["kl_anchor"].item() == pytest.approx(k_init)
    assert metrics["repel_share"].item() == pytest.approx(0.02 / (0.02 + 0.04 * k_init))


def _naive_bounded(
    logprobs, old, adv, mask, ref, anchor, beta, cap, one_sided, anchor_beta, clamp, shape="k3"
):
    """The bounded CDPO loss token by token in Python floats (grpo aggregation), from docs/LOSS.md."""

    def k3(a, b):
        d = min(max(b - a, -clamp), clamp)
        return math.exp(d) - d - 1

    def logsigmoid(a, b):  # log(2 sigmoid(x)) = log 2 - log(1 + e^-x)
        x = min(max(b - a, -clamp), clamp)
        return math.log(2.0) - math.log1p(math.exp(-x))

    per_sequence = []
    for i in range(len(logprobs)):
        total = 0.0
        for j in range(len(logprobs[0])):
            if not mask[i][j]:
                continue
            ratio = math.exp(logprobs[i][j] - old[i][j])
            surrogate = min(ratio * adv[i], min(max(ratio, 0.8), 1.28) * adv[i])
            rep = (k3 if shape == "k3" else logsigmoid)(logprobs[i][j], ref[i][j])
            if one_sided and ref[i][j] < logprobs[i][j]:
                rep = 0.0
            if cap is not None:
                rep = min(rep, cap)
            total += -(surrogate - beta * rep) + anchor_beta * k3(logprobs[i][j], anchor[i][j])
        per_sequence.append(total / max(sum(mask[i]), 1))
    return sum(per_sequence) / len(per_sequence)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize(
    "cap, one_sided, anchor_beta, shape",
    [
        (0.2, False, 0.0, "k3"),
        (None, True, 0.0, "k3"),
        (0.5, True, 0.04, "k3"),
        (None, False, 0.1, "k3"),
        (None, True, 0.0, "logsigmoid"),
        (0.3, True, 0.04, "logsigmoid"),
    ],
)
def test_bounded_matches_float64_loop_reference(dtype, cap, one_sided, anchor_beta, shape):
    logprobs, old, ref, adv, mask = _random_batch(seed=7, dtype=dtype)
    anchor = (
        logprobs.double() + 0.3 * torch.randn(logprobs.shape, generator=torch.Generator().manual_seed(1))
    ).to(dtype)
    loss, _ = policy_loss(
        logprobs, old, adv, mask, ref_logprobs=ref, beta=-0.3, kl_clamp=4.0, kl_cap=cap,
        one_sided=one_sided, anchor_logprobs=anchor, anchor_beta=anchor_beta, shape=shape,
    )  # fmt: skip
    lists = [x.double().tolist() for x in (logprobs, old, adv, mask, ref, anchor)]
    expected = _naive_bounded(*lists, -0.3, cap, one_sided, anchor_beta, 4.0, shape)
    tol = 1e-12 if dtype == torch.float64 else 2e-5
    assert loss.item() == pytest.approx(expected, rel=tol, abs=tol)


def test_a_cap_beyond_every_token_is_the_paper_form():
    logprobs, old, ref, adv, mask = _random_batch(seed=2)
    paper, _ = policy_loss(logprobs, old, adv, mask, ref_logprobs=ref, beta=-0.05, kl_clamp=4.0)
    huge = math.exp(4.0) - 4.0 - 1  # the clamp's own bound
    capped, _ = policy_loss(logprobs, old, adv, mask, ref_logprobs=ref, beta=-0.05, kl_clamp=4.0, kl_cap=huge)
    assert capped.item() == pytest.approx(paper.item(), rel=1e-6)


def test_bounded_options_errors():
    logprobs, old, ref, adv, mask = _random_batch(seed=1)
    with pytest.raises(ValueError, match="need beta < 0"):
        policy_loss(logprobs, old, adv, mask, ref_logprobs=ref, beta=0.04, kl_cap=0.2)
    with pytest.raises(ValueError, match="needs anchor_logprobs"):
        policy_loss(logprobs, old, adv, mask, ref_logprobs=ref, beta=-0.1, anchor_beta=0.04)
    with pytest.raises(ValueError, match="must be >= 0"):
        policy_loss(
            logprobs, old, adv, mask, ref_logprobs=ref, beta=-0.1, anchor_beta=-1.0, anchor_logprobs=ref
        )
    with pytest.raises(ValueError, match="kl_cap must be > 0"):
        losses.repulsion(logprobs, ref, 4.0, kl_cap=0.0)


def _repel(steps, seed=0, positions=3, vocab=5, samples=512, lr=0.5, **kw):
    """SGD on a logits table under the repulsion alone (zero advantages), fresh samples each step;
    returns the exact KL(policy || reference) after each step and the final entropy per position."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.nn.Parameter(torch.randn(positions, vocab, generator=g) * 0.3)
    ref_logits = logits.detach() + torch.randn(positions, vocab, generator=g) * 0.3
    rows, kls = torch.arange(positions), []
    for _ in range(steps):
        probs = torch.softmax(logits.detach(), -1)
        tokens = torch.multinomial(probs, samples, replacement=True, generator=g).T  # [samples, positions]
        logprobs = torch.log_softmax(logits, -1)[rows, tokens]
        ref_logprobs = torch.log_softmax(ref_logits, -1)[rows, tokens]
        if kw.get("shape") == "logsigmoid" and not kw.get("one_sided"):  # policy_loss refuses it
            loss = kw["beta"] * losses.repulsion(logprobs, ref_logprobs, 11.0, shape="logsigmoid").mean()
        else:
            loss, _ = policy_loss(
                logprobs, logprobs.detach(), torch.zeros(samples), torch.ones(samples, positions),
                ref_logprobs=ref_logprobs, **kw,
            )  # fmt: skip
        logits.grad = None
        loss.backward()
        with torch.no_grad():
            logits -= lr * logits.grad
        kls.append(_exact_kl(logits.detach(), ref_logits) / positions)
    p = torch.softmax(logits.detach(), -1)
    return kls, float(-(p * p.log()).sum(-1).mean())


def test_a_capped_repulsion_stops_at_its_bound_where_the_paper_form_runs_away():
    """The paper's form sharpens the policy onto single tokens (entropy near 0, KL at its largest:
    the collapse seen in the lab); the capped form raises the KL too, then levels off with the
    policy's entropy intact: once a sampled token's k3 passes the cap it gets no gradient."""
    paper, paper_entropy = _repel(150, beta=-1.0)
    capped, capped_entropy = _repel(150, beta=-1.0, kl_cap=0.2)
    assert capped[5] > capped[0] and paper[5] > paper[0]  # both repel
    assert paper_entropy < 0.01 and paper[-1] > 1.0  # collapsed
    assert capped_entropy > 1.0 and capped[-1] < 0.4  # bounded
    assert capped[-1] - capped[-30] < 0.05 < paper[60] - paper[30]  # levelled off where the paper's climbs


def test_an_anchor_holds_the_policy_near_the_initial_model():
    """With an attraction to the initial model (here: the policy's start), a repulsion moves the policy
    less far from the bias model than alone."""

    def run(anchor_beta):
        g = torch.Generator().manual_seed(4)
        logits = torch.nn.Parameter(torch.randn(2, 5, generator=g) * 0.3)
        init = torch.log_softmax(logits.detach(), -1)
        ref = torch.log_softmax(logits.detach() + torch.randn(2, 5, generator=g) * 0.3, -1)
        rows = torch.arange(2)
        for _ in range(30):
            tokens = torch.multinomial(
                torch.softmax(logits.detach(), -1), 256, replacement=True, generator=g
            ).T
            logprobs = torch.log_softmax(logits, -1)[rows, tokens]
            loss, _ = policy_loss(
                logprobs, logprobs.detach(), torch.zeros(256), torch.ones(256, 2), ref_logprobs=ref[rows, tokens],
                beta=-0.5, anchor_logprobs=init[rows, tokens], anchor_beta=anchor_beta,
            )  # fmt: skip
            logits.grad = None
            loss.backward()
            with torch.no_grad():
                logits -= 0.5 * logits.grad
        return _exact_kl(logits.detach(), init)

    assert run(2.0) < 0.5 * run(0.0)


def test_controller_holds_the_kl_at_its_target():
    # the KL responds to |beta| as kl = 0.5 * |beta| (a linear plant); warmup at beta -0.01 -> kl 0.005,
    # target 4 * 0.005 = 0.02, reached at |beta| = 0.04
    c = losses.RepulsionController(beta=-0.01, ratio=4.0, warmup=3, rate=0.2, beta_max=1.0)
    for _ in range(200):
        c.update(0.5 * abs(c.beta))
    assert c.target == pytest.approx(0.02)
    assert c.beta == pytest.approx(-0.04, rel=0.02)
    # bounded: a KL that never rises drives |beta| to beta_max and no further
    c = losses.RepulsionController(beta=-0.1, ratio=2.0, warmup=1, rate=0.5, beta_max=0.3)
    c.update(0.1)
    for _ in range(50):
        c.update(0.0)
    assert c.beta == pytest.approx(-0.3)
    state = c.state_dict()
    again = losses.RepulsionController(beta=-0.5, ratio=2.0, warmup=1)
    again.load_state_dict(state)
    assert again.beta == c.beta and again.target == c.target
    with pytest.raises(ValueError, match="beta must be < 0"):
        losses.RepulsionController(beta=0.1, ratio=2.0)
