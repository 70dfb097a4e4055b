"""FSDP2 for the policy and the reference: parameters, gradients and optimizer state sharded over
processes (``distributed.strategy = fsdp``, videothinker/distributed_config.py).

`shard_model` applies ``torch.distributed.fsdp.fully_shard`` to every module the model names in
``_no_split_modules`` (the Qwen VL families: each decoder layer and each vision block), then to the
whole model. Each unit's parameters are all-gathered right before its forward and freed after it
(again in backward), its gradients reduce-scattered back to the shards, and the optimizer, built on
the sharded parameters (DTensors), updates its shard only. With ``param_dtype=bfloat16`` the gathered
weights are bf16 copies of fp32 master shards (the presets' fp32 masters with bf16 compute) and
gradients are reduced in fp32.

What the root unit holds (embeddings, lm_head, the final norm, the vision tower's patch embedding
and merger: everything outside the layers and blocks) FSDP gathers around the root module's
``forward`` only. The lean log-prob path (rl/logprobs.py) calls submodules directly (the vision
tower once, then the language model on embeddings, then lm_head chunk by chunk), so `root_forward`
runs such a call as a forward of the root (``register_fsdp_forward_method``, FSDP2's own way of
running ``generate``): the root's parameters are gathered for it, and kept until backward has
reduced their gradients. Tied embeddings stay one parameter in one unit.

Sampling reads full weights: the decode engine's copy (models/decode.py) is built from each shard's
``full_tensor()``, one parameter at a time, and refreshed the same way after each optimizer step;
the engine's prefill is the model's own forward, which FSDP gathers unit by unit. HF checkpoints
are written from `full_state_dict`, gathered to rank 0 on the CPU.
"""

from __future__ import annotations

import types
from typing import Any

import torch

_ROOT_METHOD = "_videothinker_root_call"


def is_sharded(model: torch.nn.Module) -> bool:
    """Whether ``model`` was sharded by `shard_model` (its parameters are DTensor shards)."""
    return hasattr(model, _ROOT_METHOD)


def is_dtensor(t: torch.Tensor) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def ensure_process_group(device: torch.device) -> None:
    """A default process group for FSDP: the launcher's, or (a plain ``python`` / pytest process) one
    of a single process, kept in memory (gloo on CPU, nccl on CUDA)."""
    import torch.distributed as dist

    if dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)


def device_mesh(device: torch.device):
    """The 1-D mesh of all processes on ``device``'s type, over the default process group."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    ensure_process_group(device)
    return init_device_mesh(device.type, (dist.get_world_size(),))


def shard_units(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The modules that become shard units: those whose class the model names in
    ``_no_split_modules`` (Qwen VL: decoder layers and vision blocks), in module order."""
    names = set(getattr(model, "_no_split_modules", None) or [])
    units = [m for m in model.modules() if type(m).__name__ in names]
    if not units:
        raise ValueError(
            f"{type(model).__name__} names no _no_split_modules (its decoder layers): cannot pick FSDP units"
        )
    return units


def shard_model(
    model: torch.nn.Module,
    mesh,
    *,
    param_dtype: torch.dtype | None = None,
    reduce_dtype: torch.dtype | None = torch.float32,
) -> torch.nn.Module:
    """Shard ``model`` in place over ``mesh``: one FSDP2 unit per `shard_units` module, then the root.

    The model may sit on the CPU: each unit moves to the mesh's device as it is sharded, so a process
    never holds more than one unit's full weights on the GPU.

    Args:
        param_dtype: the dtype units are gathered and computed in (bf16 for fp32 master weights under
            bf16 autocast); None: the parameters' own.
        reduce_dtype: the dtype gradients are reduce-scattered in (None: param_dtype).

    Returns:
        The same model, its parameters DTensor shards; call it as before, and wrap direct calls of
        its submodules in `root_forward`.
    """
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method

    policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=reduce_dtype)
    for unit in shard_units(model):
        fully_shard(unit, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    setattr(model, _ROOT_METHOD, types.MethodType(lambda self, fn: fn(), model))
    register_fsdp_forward_method(model, _ROOT_METHOD)
    return model


def root_forward(model: torch.nn.Module, fn) -> Any:
    """``fn()``, run as a forward of ``model``'s root unit when it is sharded (its embeddings, lm_head,
    norm and merger gathered for it), else plainly. Without grad the root's gathered parameters are
    freed on return; with grad they stay until backward has reduced their gradients."""
    if not is_sharded(model):
        return fn()
    out = getattr(model, _ROOT_METHOD)(fn)
    if not torch.is_grad_enabled():
        model.reshard()
    return out


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every process calls it (a collective): the full, unsharded state dict on the CPU of rank 0,
    ``{}`` on the others. For an unsharded model: its own state dict."""
    if not is_sharded(model):
        return model.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
