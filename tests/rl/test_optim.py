"""The optimizers behind ``grpo.optim`` (rl/optim.py): each tracks fp32 AdamW on a small problem, keeps
updates of lr 1e-6 on bf16 weights of 0.02 (in expectation, as fp32 weights would take them), and
checkpoints and resumes exactly."""

from __future__ import annotations

import doctest
import io
import math

import pytest
import torch

from videothinker.rl import optim
from videothinker.rl.optim import OPTIMIZERS, build_optimizer, bytes_per_parameter

torchao = pytest.importorskip("torchao")

LOW_MEMORY = ["adamw_torch_bf16_sr", "adamw_torch_8bit", "adamw_torch_4bit"]


def test_doctests():
    assert doctest.testmod(optim).failed == 0


def test_bytes_per_parameter_worked_by_hand():
    # fp32 master path: weight 4 + gradient 4 + two fp32 moments 8 = 16 bytes.
    assert bytes_per_parameter("adamw_torch_fused", torch.float32) == 16
    # bf16 weights, bf16 moments: 2 + 2 + 4 = 8.
    assert bytes_per_parameter("adamw_torch_bf16_sr", torch.bfloat16) == 8
    # 8-bit moments: a uint8 code per value and an fp32 scale per 256 values, twice: 2 * (1 + 4/256).
    assert bytes_per_parameter("adamw_torch_8bit", torch.float32) == 8 + 2 * (1 + 1 / 64)
    # 4-bit moments: half a byte per value and an fp32 scale per 128 values, twice: 2 * (0.5 + 4/128).
    assert bytes_per_parameter("adamw_torch_4bit", torch.bfloat16) == 4 + 2 * (0.5 + 1 / 32)


# ------------------------------------------------------------------------ tracking fp32 AdamW


def _regression(seed: int = 0):
    """A least-squares problem with a [64, 128] weight (8192 values: the low-bit optimizers quantize
    its moments; they keep tensors under 4096 values, like the [64] bias, in full precision)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(512, 128, generator=g)
    w_true = torch.randn(64, 128, generator=g) * 0.1
    y = x @ w_true.T + 0.01 * torch.randn(512, 64, generator=g)
    w0 = torch.randn(64, 128, generator=g) * 0.02
    return x, y, w0


def _train(name: str, dtype: torch.dtype, steps: int = 150, lr: float = 3e-3):
    """Full-batch AdamW steps on the regression; returns (initial weight, final weight, the loss before
    each step and after the last), weights in fp32."""
    x, y, w0 = _regression()
    torch.manual_seed(0)  # the stochastic rounding's random bits
    w = torch.nn.Parameter(w0.to(dtype, copy=True))
    b = torch.nn.Parameter(torch.zeros(64, dtype=dtype))
    opt = build_optimizer([w, b], name, lr=lr, betas=(0.9, 0.999), weight_decay=0.01)
    losses = []
    for _ in range(steps + 1):
        loss = ((x @ w.float().T + b.float() - y) ** 2).mean()  # fp32 compute, as under autocast
        losses.append(float(loss.detach()))
        if len(losses) > steps:
            break
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return w0.to(dtype).float(), w.detach().float(), torch.tensor(losses)


@pytest.mark.parametrize(
    ("name", "dtype", "tolerance"),
    [
        ("adamw_torch", torch.float32, 1e-6),  # the same algorithm, another kernel on CUDA only
        ("adamw_torch_bf16_sr", torch.float32, 1e-5),  # on fp32 weights: plain AdamW (compiled)
        ("adamw_torch_bf16_sr", torch.bfloat16, 0.02),  # measured 0.009 (weights), 1e-4 (loss)
        ("adamw_torch_8bit", torch.float32, 0.03),  # measured 0.011, 0.003
        ("adamw_torch_8bit", torch.bfloat16, 0.03),  # measured 0.014, 0.002
        ("adamw_torch_4bit", torch.float32, 0.25),  # measured 0.17, 0.13: 4-bit moments track loosely
        ("adamw_torch_4bit", torch.bfloat16, 0.25),
    ],
)
def test_tracks_fp32_adamw(name, dtype, tolerance):
    """Over 150 steps (lr 3e-3, weight decay 0.01) the final weights lie within ``tolerance`` of the
    distance fp32 AdamW moved them from the start, and at every step the loss lies within ``tolerance``
    of fp32 AdamW's total loss drop."""
    start, reference, reference_losses = _train("adamw_torch_fused", torch.float32)
    _, weights, losses = _train(name, dtype)
    travelled = float((reference - start).norm())
    assert float((weights - reference).norm()) <= tolerance * travelled
    drop = float(reference_losses[0] - reference_losses[-1])
    assert float((losses - reference_losses).abs().max()) <= tolerance * drop


# ------------------------------------------------------------------ small updates on bf16 weights

N_WEIGHTS, STEPS, LR = 256 * 256, 10, 1e-6


def _small_updates(name: str, dtype: torch.dtype) -> torch.Tensor:
    """Displacement of 65536 weights of size ~0.02 after 10 AdamW steps of lr 1e-6 (gradients 1 + 0.5 *
    noise, the same for every optimizer and dtype: bf16 values, so no dtype changes them); fp32 [N]."""
    g = torch.Generator().manual_seed(1)
    signs = torch.randint(0, 2, (N_WEIGHTS,), generator=g) * 2 - 1
    w0 = (0.02 * (1 + 0.1 * torch.randn(N_WEIGHTS, generator=g)) * signs).bfloat16()
    grads = (1 + 0.5 * torch.randn(STEPS, N_WEIGHTS, generator=g)).bfloat16()
    torch.manual_seed(2)
    w = torch.nn.Parameter(w0.to(dtype, copy=True).view(256, 256))
    opt = build_optimizer([w], name, lr=LR)
    for t in range(STEPS):
        w.grad = grads[t].to(dtype).view(256, 256)
        opt.step()
    return w.detach().float().view(-1) - w0.float()


def _moves_as_fp32(moved: torch.Tensor, fp32: torch.Tensor) -> tuple[bool, str]:
    """The bf16 run's mean displacement equals the fp32 run's: within 5 standard errors of the mean
    difference (a chance failure ~6e-7) and within 5% of the fp32 displacement."""
    diff = moved - fp32
    stderr = float(diff.std()) / math.sqrt(diff.numel())
    gap, mean = abs(float(diff.mean())), abs(float(fp32.mean()))
    return (
        gap <= 5 * stderr and gap <= 0.05 * mean,
        f"gap {gap:.3g}, stderr {stderr:.3g}, fp32 mean {mean:.3g}",
    )


@pytest.mark.parametrize("name", LOW_MEMORY)
def test_updates_of_lr_1e_6_on_bf16_weights_are_kept_in_expectation(name):
    """Against the same optimizer on fp32 weights (same gradients, so the same moments: only the
    weights' rounding differs). A bf16 weight of 0.02 moves in steps of 2**-13 = 1.2e-4, 120 times one
    update, so each weight moves by 0 or 1.2e-4 per step; the mean over 65536 weights is the fp32 one."""
    fp32 = _small_updates(name, torch.float32)
    assert float(fp32.mean()) == pytest.approx(-STEPS * LR, rel=0.1)  # AdamW moves each weight ~lr per step
    moved = _small_updates(name, torch.bfloat16)
    ok, why = _moves_as_fp32(moved, fp32)
    assert ok, why
    assert 0 < float((moved != 0).float().mean()) < 0.5  # it moves some weights by a whole spacing, not all


def test_plain_bf16_adamw_loses_those_updates():
    """The control: torch AdamW on bf16 weights rounds each update to nearest, so none of them lands
    and the check above fails."""
    fp32 = _small_updates("adamw_torch", torch.float32)
    moved = _small_updates("adamw_torch", torch.bfloat16)
    assert float(moved.abs().max()) == 0.0
    ok, why = _moves_as_fp32(moved, fp32)
    assert not ok, why


def test_half_precision_weights_rounded_to_nearest_warn(capsys):
    w = torch.nn.Parameter(torch.zeros(8, dtype=torch.bfloat16))
    build_optimizer([w], "adamw_torch_fused", lr=1e-6)
    assert "lose updates this small" in capsys.readouterr().err
    build_optimizer([w], "adamw_torch_8bit", lr=1e-6)
    build_optimizer([torch.nn.Parameter(torch.zeros(8))], "adamw_torch_fused", lr=1e-6)
    assert "lose updates" not in capsys.readouterr().err


# ------------------------------------------------------------------------ checkpoint and resume


@pytest.mark.parametrize("name", ["adamw_torch_fused", *LOW_MEMORY])
def test_state_dict_round_trip_resumes_exactly(name):
    """Saved and loaded as the trainer does (torch.save; torch.load with weights_only=True) and with the
    RNG state restored (stochastic rounding draws from it), the next steps are bit-identical."""

    def make():
        torch.manual_seed(0)
        w = torch.nn.Parameter((torch.randn(64, 128) * 0.02).bfloat16())
        return w, build_optimizer([w], name, lr=1e-3)

    def step(w, opt, t):
        w.grad = (torch.sin(torch.arange(w.numel()).view_as(w) * (t + 1.0)) + 0.1 * t).to(w.dtype)
        opt.step()

    w, opt = make()
    for t in range(3):
        step(w, opt, t)
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    saved_w, rng = w.detach().clone(), torch.get_rng_state()
    for t in range(3, 6):
        step(w, opt, t)

    w2, opt2 = make()
    with torch.no_grad():
        w2.copy_(saved_w)
    buffer.seek(0)
    opt2.load_state_dict(torch.load(buffer, weights_only=True, map_location="cpu"))
    torch.set_rng_state(rng)
    for t in range(3, 6):
        step(w2, opt2, t)
    assert torch.equal(w, w2)


def test_every_option_is_documented_in_the_config_help():
    from videothinker.config import GRPOConfig
    from videothinker.yaml_config import describe

    help_text = {name: text for name, _, text in describe(GRPOConfig)}["optim"]
    assert all(name in help_text for name in OPTIMIZERS)
