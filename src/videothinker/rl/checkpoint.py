"""Checkpoints: HF-format model + trainer state, written atomically, resumed exactly, kept last-N.

A checkpoint is a folder ``checkpoint-<step>`` that transformers loads as a model (so it can serve as
the reference of the next stage) plus the trainer's state:

- ``model.safetensors`` + config (``save_pretrained``), or for a LoRA run only the policy's adapter
  (``adapter_config.json`` + ``adapter_model.safetensors``, models/lora.py); the processor files;
- ``optimizer.pt`` and ``scheduler.pt`` (tensors and plain containers only; loaded with
  ``weights_only=True``, never unpickling arbitrary objects); under FSDP one optimizer file per
  process instead, ``optimizer-rank<r>.pt``, its shard of every state tensor;
- ``rng.safetensors`` (torch CPU and CUDA generator states) and ``trainer_state.json`` (step, data
  position, Python and NumPy RNG states, counters, how many processes wrote it), written last; each
  further process's RNG states in ``rng-rank<r>.safetensors`` and ``rng-rank<r>.json``.

Every process of a run calls `save_checkpoint` and `load_trainer_state`; the main process writes
what is shared. Each checkpoint is written under a temporary name and renamed when complete, so a
crash mid-save leaves the last good checkpoint in place; a folder without ``trainer_state.json`` is
never resumed from.

A checkpoint resumes on another number of processes, or with the other ``distributed.strategy``:
the optimizer state is reassembled from its shards (they are dim-0 pieces, FSDP2's layout) and cut
for the new layout; processes beyond the old count start from the main process's RNG states. With
the same global batch (``per_device_train_batch_size`` x processes x ``gradient_accumulation_steps``)
the run continues as the uninterrupted one does: a micro-batch's samples depend on the position of
its prompts only (rl/trainer.py).
"""

from __future__ import annotations

import json
import random
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.pt"
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


@dataclass
class TrainerState:
    """What, besides weights and optimizer, a run needs to continue exactly."""

    step: int
    sampler: dict[str, Any]
    nonfinite_in_a_row: int = 0
    extra: dict[str, Any] | None = None


@dataclass(frozen=True)
class Processes:
    """This process among the run's: its rank, how many there are, a barrier that waits for all of
    them, and whether the optimizer state is sharded (FSDP: every process writes its own shard)."""

    rank: int = 0
    world_size: int = 1
    barrier: Callable[[], None] = field(default=lambda: None)
    sharded: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Every RNG state: torch tensors (CPU, each CUDA device) and JSON-able Python / NumPy states."""
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = state
    np_state = np.random.get_state()
    plain = {
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
    }
    return tensors, plain


def set_rng_state(tensors: dict[str, torch.Tensor], plain: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("torch_cuda_"))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    version, internal, gauss = plain["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, *rest = plain["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints under ``output_dir``, oldest first."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = [
        (int(m.group(1)), p)
        for p in root.iterdir()
        if (m := _CHECKPOINT_RE.match(p.name)) and (p / STATE_FILE).is_file()
    ]
    return [p for _, p in sorted(found)]


def save_checkpoint(
    output_dir: str | Path,
    *,
    model,
    processor,
    optimizer: torch.optim.Optimizer,
    scheduler,
    state: TrainerState,
    keep_last: int | None = None,
    save_model=None,
    processes: Processes = Processes(),
) -> Path:
    """Write ``checkpoint-<step>`` atomically, then prune to the newest ``keep_last`` checkpoints.
    Every process calls it.

    Args:
        save_model: ``fn(model, folder)`` writing the weights, called on every process (so that it
            may gather shards) and writing on the main one; default: ``model.save_pretrained`` there.
        processes: this process among the run's (default: the only one).
    """
    root = Path(output_dir)
    final = root / f"checkpoint-{state.step}"
    tmp = root / f".checkpoint-{state.step}.tmp"
    main, rank = processes.is_main, processes.rank
    if main:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    processes.barrier()
    if save_model is None:
        save_model = lambda m, d: m.save_pretrained(d, safe_serialization=True) if main else None  # noqa: E731
    save_model(model, tmp)
    if main and processor is not None:
        processor.save_pretrained(tmp)
    if processes.sharded:
        torch.save(_local_optimizer_state(optimizer), tmp / _optimizer_shard(rank))
    elif main:
        torch.save(optimizer.state_dict(), tmp / OPTIMIZER_FILE)
    if main:
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    tensors, plain = rng_state()
    suffix = "" if main else f"-rank{rank}"
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / f"rng{suffix}.safetensors"))
    if not main:
        (tmp / f"rng{suffix}.json").write_text(json.dumps(plain))
    processes.barrier()  # every process's files are in place
    if main:
        payload = {
            "step": state.step,
            "sampler": state.sampler,
            "nonfinite_in_a_row": state.nonfinite_in_a_row,
            "extra": state.extra or {},
            "rng": plain,
            "world_size": processes.world_size,
            "optimizer_sharded": processes.sharded,
        }
        (tmp / STATE_FILE).write_text(json.dumps(payload))
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        if keep_last is not None and keep_last > 0:
            for old in list_checkpoints(root)[:-keep_last]:
                shutil.rmtree(old, ignore_errors=True)
    processes.barrier()
    return final


def load_trainer_state(
    checkpoint: str | Path, optimizer, scheduler, processes: Processes = Processes()
) -> TrainerState:
    """Restore optimizer, scheduler and RNG states from a checkpoint; return the trainer state.
    Every process calls it; the optimizer state is cut for this run's layout (`Processes`).

    The model weights are loaded by the caller (``from_pretrained`` on the checkpoint folder, or the
    base plus the checkpoint's LoRA adapter).
    """
    ckpt = Path(checkpoint)
    if not (ckpt / STATE_FILE).is_file():
        raise FileNotFoundError(f"{ckpt} is not a complete checkpoint (no {STATE_FILE})")
    payload = json.loads((ckpt / STATE_FILE).read_text())
    saved_world, saved_sharded = payload.get("world_size", 1), payload.get("optimizer_sharded", False)
    optimizer.load_state_dict(_optimizer_state_for(ckpt, optimizer, saved_world, saved_sharded, processes))
    scheduler.load_state_dict(torch.load(ckpt / "scheduler.pt", weights_only=True))
    own = ckpt / f"rng-rank{processes.rank}.json"
    if processes.is_main or not own.is_file():  # a process the checkpoint did not have: the main one's
        set_rng_state(load_file(str(ckpt / "rng.safetensors")), payload["rng"])
    else:
        set_rng_state(
            load_file(str(ckpt / f"rng-rank{processes.rank}.safetensors")), json.loads(own.read_text())
        )
    return TrainerState(
        step=payload["step"],
        sampler=payload["sampler"],
        nonfinite_in_a_row=payload.get("nonfinite_in_a_row", 0),
        extra=payload.get("extra"),
    )


# ------------------------------------------------------------------------------ optimizer shards
def _optimizer_shard(rank: int) -> str:
    return f"optimizer-rank{rank}.pt"


def _local_optimizer_state(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """``optimizer.state_dict()`` with each DTensor replaced by this process's shard (plain tensors,
    which ``torch.load(weights_only=True)`` reads back), and which entries those were."""
    from videothinker.models.sharding import is_dtensor

    saved = optimizer.state_dict()
    state, sharded = {}, []
    for index, entries in saved["state"].items():
        state[index] = {}
        for key, value in entries.items():
            if isinstance(value, torch.Tensor) and is_dtensor(value):
                sharded.append([index, key])
                value = value.to_local()
            state[index][key] = value
    return {"state": state, "param_groups": saved["param_groups"], "sharded": sharded}


def _optimizer_state_for(
    ckpt: Path, optimizer: torch.optim.Optimizer, saved_world: int, saved_sharded: bool, processes: Processes
) -> dict[str, Any]:
    """The optimizer state dict for this process's parameters: its own shard when the layout is the
    checkpoint's, else every entry reassembled from the shards (dim-0 pieces, in rank order) and cut
    as this process's parameters are (DTensor shards under FSDP, whole tensors otherwise)."""
    from torch.distributed.tensor import DTensor

    from videothinker.models.sharding import is_dtensor

    def load(name: str, mmap: bool = False) -> dict[str, Any]:
        return torch.load(ckpt / name, weights_only=True, map_location="cpu", mmap=mmap)

    if not saved_sharded:
        pieces = [load(OPTIMIZER_FILE, mmap=processes.sharded) | {"sharded": []}]
    elif processes.sharded and saved_world == processes.world_size:
        pieces = [load(_optimizer_shard(processes.rank))]
    else:  # another layout: every shard, read a tensor at a time (mmap) as they are reassembled
        pieces = [load(_optimizer_shard(r), mmap=True) for r in range(saved_world)]
    params = [p for group in optimizer.param_groups for p in group["params"]]
    sharded = {(int(i), k) for i, k in pieces[0]["sharded"]}
    state = {}
    for index, entries in pieces[0]["state"].items():
        param = params[int(index)]
        state[index] = {}
        for key, value in entries.items():
            if (int(index), key) in sharded and len(pieces) > 1 and value.dim() > 0:
                value = torch.cat([piece["state"][index][key] for piece in pieces])
            if isinstance(value, torch.Tensor) and is_dtensor(param) and value.dim() > 0:
                local = param.to_local()
                if value.shape == param.shape and local.shape != param.shape:  # whole: take our piece
                    start = processes.rank * -(-param.shape[0] // processes.world_size)
                    value = value[start : start + local.shape[0]]
                if value.shape != local.shape:
                    raise ValueError(
                        f"{ckpt}: optimizer state {key!r} of parameter {index} has shape {tuple(value.shape)}, "
                        f"this process's shard {tuple(local.shape)}"
                    )
                value = DTensor.from_local(
                    value.to(local.device, copy=True),
                    param.device_mesh,
                    param.placements,
                    run_check=False,
                    shape=param.shape,
                    stride=param.stride(),
                )
            state[index][key] = value
    return {"state": state, "param_groups": pieces[0]["param_groups"]}


def checkpoint_to_resume(out: Path, resume: str | None) -> Path | None:
    """The checkpoint a run in ``out`` starts from: "auto" (the newest there, if any), a path, or None
    (start fresh; a folder holding checkpoints is then an error)."""
    existing = list_checkpoints(out)
    if resume == "auto":
        return existing[-1] if existing else None
    if resume is None:
        if existing:
            raise ValueError(
                f"{out} already holds checkpoints ({existing[-1].name}); resume (the default) or choose "
                "another output folder"
            )
        return None
    path = Path(resume)
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint to resume not found: {path}")
    return path
