"""The optimizer of the RL step, chosen by name (`GRPOConfig.optim`, TRL / transformers' ``optim``).

Why there is a choice: at the paper's learning rate (1e-6) a bf16 weight of 0.02 cannot hold one AdamW
update (its spacing there is 2**-13 = 1.2e-4, so round-to-nearest drops any change under 6e-5), so the
presets keep fp32 master weights: 4 bytes of weight, 4 of gradient and 8 of AdamW moments per
parameter, 16 in all, 60 GB for the 3.75e9 parameters of Qwen2.5-VL-3B. Two ways keep the small
updates with less:

- **stochastic rounding** of bf16 weights (torchao): the update is computed in fp32 and the new weight
  rounded up or down at random, with the probabilities that make its expected value the fp32 result.
  A 1e-6 step moves a weight of 0.02 by one spacing with probability 1e-6 / 1.2e-4, so over many steps
  and weights it moves as fp32 would, while weight and gradient take 2 bytes each;
- **low-bit moments** (torchao): the two AdamW moments stored in 8 or 4 bits per value with one fp32
  scale per block (256 or 128 values), dequantized to fp32 for the update.

| ``optim`` | library | moments | on bf16 weights | bytes / parameter, fp32 weights -> bf16 weights |
| --- | --- | --- | --- | --- |
| ``adamw_torch_fused`` (default) | torch | the weights' dtype | rounds to nearest: lr 1e-6 is lost | 16 -> 8 |
| ``adamw_torch`` | torch | the weights' dtype | rounds to nearest: lr 1e-6 is lost | 16 -> 8 |
| ``adamw_torch_bf16_sr`` | torchao ``_AdamW`` | the weights' dtype | stochastic rounding | 16 -> 8 |
| ``adamw_torch_8bit`` | torchao ``AdamW8bit`` | 8-bit, blocks of 256 | stochastic rounding | 10 -> 6 |
| ``adamw_torch_4bit`` | torchao ``AdamW4bit`` | 4-bit, blocks of 128 | stochastic rounding | 9 -> 5 |

The names are transformers' ``OptimizerNames`` where they exist (``adamw_torch_8bit`` and
``adamw_torch_4bit`` are torchao's there too); ``adamw_torch_bf16_sr`` is this project's. Unlike
transformers, the torchao options always turn stochastic rounding on: it acts on bf16 weights only, and
bf16 weights without it would lose the updates that the presets' learning rate makes. torchao's
optimizers compile one fused update kernel per parameter shape with ``torch.compile`` on their first
step (about a minute on a 2-core CPU for a tiny model, which needs a C++ compiler; Triton on CUDA) and
run on CPU and CUDA alike.

bitsandbytes' 8-bit AdamW is not offered: it rounds bf16 weights to nearest, so it keeps lr 1e-6
updates only with fp32 master weights (10 bytes per parameter, 45 GB with the bf16 bias model for
the 3B: no room left on a 48 GB card), which ``adamw_torch_8bit`` on fp32 weights already gives.

Memory arithmetic, checkpoints and the measured numbers: docs/PERFORMANCE.md, "Memory".
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch

INSTALL_HINT = "pip install 'videothinker[lowmem]' (torchao >= 0.11)"
DEFAULT = "adamw_torch_fused"


@dataclass(frozen=True)
class OptimizerSpec:
    """One ``optim`` name: what it builds and what it costs.

    Attributes:
        summary: one line for help texts and docs.
        package: the module it imports (None: torch only).
        stochastic_rounding: bf16 weights are rounded stochastically, so updates far below their
            spacing still move them in expectation.
        moment_bytes: bytes per parameter of the two AdamW moments; None: two of the weights' dtype.
        build: ``build(params, lr=, betas=, weight_decay=, device=) -> Optimizer``.
    """

    summary: str
    package: str | None
    stochastic_rounding: bool
    moment_bytes: float | None
    build: Callable[..., torch.optim.Optimizer]


def _torch_adamw(fused: bool) -> Callable[..., torch.optim.Optimizer]:
    def build(params, *, device: torch.device, **kwargs) -> torch.optim.Optimizer:
        # Fused on CUDA: no parameter-sized temporaries in the step. On CPU the foreach kernel, as
        # this project has always used there (its numbers stay what they were).
        return torch.optim.AdamW(params, fused=fused and device.type == "cuda", **kwargs)

    return build


def _torchao(class_name: str) -> Callable[..., torch.optim.Optimizer]:
    def build(params, *, device: torch.device, **kwargs) -> torch.optim.Optimizer:
        import torchao.optim

        return getattr(torchao.optim, class_name)(params, bf16_stochastic_round=True, **kwargs)

    return build


OPTIMIZERS: dict[str, OptimizerSpec] = {
    "adamw_torch_fused": OptimizerSpec(
        "torch AdamW, fused kernel on CUDA (foreach on CPU); moments in the weights' dtype",
        None,
        False,
        None,
        _torch_adamw(fused=True),
    ),
    "adamw_torch": OptimizerSpec(
        "torch AdamW, foreach kernel; moments in the weights' dtype", None, False, None, _torch_adamw(False)
    ),
    "adamw_torch_bf16_sr": OptimizerSpec(
        "torchao AdamW with bf16 stochastic rounding; moments in the weights' dtype",
        "torchao",
        True,
        None,
        _torchao("_AdamW"),
    ),
    "adamw_torch_8bit": OptimizerSpec(
        "torchao AdamW8bit: 8-bit moments (blocks of 256), bf16 stochastic rounding",
        "torchao",
        True,
        2 * (1 + 4 / 256),  # a uint8 code per value + an fp32 scale per block, for each moment
        _torchao("AdamW8bit"),
    ),
    "adamw_torch_4bit": OptimizerSpec(
        "torchao AdamW4bit: 4-bit moments (blocks of 128), bf16 stochastic rounding",
        "torchao",
        True,
        2 * (0.5 + 4 / 128),
        _torchao("AdamW4bit"),
    ),
}


def optim_problems(name: str) -> list[str]:
    """What stops ``optim = name`` from working here (unknown name, missing package); [] if nothing."""
    if name not in OPTIMIZERS:
        return [f"grpo.optim must be one of {', '.join(OPTIMIZERS)}, got {name!r}"]
    package = OPTIMIZERS[name].package
    if package is not None and importlib.util.find_spec(package) is None:
        return [f"grpo.optim = {name} needs {package}: {INSTALL_HINT}"]
    return []


def bytes_per_parameter(name: str, weight_dtype: torch.dtype) -> float:
    """Static bytes per trained parameter: weight + gradient (both in the weights' dtype) + moments.

    >>> bytes_per_parameter("adamw_torch_fused", torch.float32), bytes_per_parameter("adamw_torch_8bit", torch.bfloat16)
    (16.0, 6.03125)
    """
    size = torch.finfo(weight_dtype).bits / 8
    moments = OPTIMIZERS[name].moment_bytes
    return 2 * size + (2 * size if moments is None else moments)


def build_optimizer(
    params: Iterable[torch.nn.Parameter],
    name: str,
    *,
    lr: float,
    betas: tuple[float, float] = (0.9, 0.999),
    weight_decay: float = 0.0,
    device: torch.device | str = "cpu",
) -> torch.optim.Optimizer:
    """The optimizer ``name`` (a key of `OPTIMIZERS`) over ``params``.

    Warns when some weights are half precision and the optimizer rounds them to nearest at a learning
    rate whose updates they cannot hold (below 1e-4: a bf16 weight of 0.02 moves in steps of 1.2e-4).

    Raises:
        ValueError: an unknown name, or a package the option needs is not installed.
    """
    from videothinker.console import warn

    if problems := optim_problems(name):
        raise ValueError(problems[0])
    spec = OPTIMIZERS[name]
    params = list(params)
    half = sorted(
        {str(p.dtype).removeprefix("torch.") for p in params if p.dtype in (torch.bfloat16, torch.float16)}
    )
    rounds_to_nearest = "float16" in half or (half and not spec.stochastic_rounding)
    if rounds_to_nearest and lr < 1e-4:
        warn(
            f"{'/'.join(half)} weights with optim = {name} and learning_rate {lr:g}: half-precision weights "
            "rounded to nearest lose updates this small (a bf16 weight of 0.02 moves in steps of about 1e-4); "
            "use model.dtype=bfloat16 with grpo.optim=adamw_torch_8bit (stochastic rounding), or "
            "model.dtype=float32 with grpo.bf16=true (fp32 master weights, bf16 compute)"
        )
    kwargs: dict[str, Any] = dict(lr=lr, betas=betas, weight_decay=weight_decay)
    return spec.build(params, device=torch.device(device), **kwargs)
