"""Checkpoints: HF-format model + trainer state, written atomically, resumed exactly, kept last-N.

A checkpoint is a folder ``checkpoint-<step>`` that transformers loads as a model (so it can serve as
the reference of the next stage) plus the trainer's state:

- ``model.safetensors`` + config (``save_pretrained``), or for a LoRA run only the policy's adapter
  (``adapter_config.json`` + ``adapter_model.safetensors``, models/lora.py); the processor files;
- ``optimizer.pt`` and ``scheduler.pt`` (tensors and plain containers only; loaded with
  ``weights_only=True``, never unpickling arbitrary objects);
- ``rng.safetensors`` (torch CPU and CUDA generator states) and ``trainer_state.json`` (step, data
  position, Python and NumPy RNG states, counters), written last.

Each checkpoint is written under a temporary name and renamed when complete, so a crash mid-save leaves
the last good checkpoint in place; a folder without ``trainer_state.json`` is never resumed from.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

STATE_FILE = "trainer_state.json"
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


@dataclass
class TrainerState:
    """What, besides weights and optimizer, a run needs to continue exactly."""

    step: int
    sampler: dict[str, Any]
    nonfinite_in_a_row: int = 0
    extra: dict[str, Any] | None = None


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
) -> Path:
    """Write ``checkpoint-<step>`` atomically, then prune to the newest ``keep_last`` checkpoints.

    Args:
        save_model: ``fn(model, folder)`` writing the weights (default ``model.save_pretrained``);
            the trainer passes accelerate's unwrap-and-save here.
    """
    root = Path(output_dir)
    final = root / f"checkpoint-{state.step}"
    tmp = root / f".checkpoint-{state.step}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    (save_model or (lambda m, d: m.save_pretrained(d, safe_serialization=True)))(model, tmp)
    if processor is not None:
        processor.save_pretrained(tmp)
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    tensors, plain = rng_state()
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / "rng.safetensors"))
    payload = {
        "step": state.step,
        "sampler": state.sampler,
        "nonfinite_in_a_row": state.nonfinite_in_a_row,
        "extra": state.extra or {},
        "rng": plain,
    }
    (tmp / STATE_FILE).write_text(json.dumps(payload))
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    if keep_last is not None and keep_last > 0:
        for old in list_checkpoints(root)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def load_trainer_state(checkpoint: str | Path, optimizer, scheduler) -> TrainerState:
    """Restore optimizer, scheduler and RNG states from a checkpoint; return the trainer state.

    The model weights are loaded by the caller (``from_pretrained`` on the checkpoint folder, or the
    base plus the checkpoint's LoRA adapter).
    """
    ckpt = Path(checkpoint)
    if not (ckpt / STATE_FILE).is_file():
        raise FileNotFoundError(f"{ckpt} is not a complete checkpoint (no {STATE_FILE})")
    optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", weights_only=True, map_location="cpu"))
    scheduler.load_state_dict(torch.load(ckpt / "scheduler.pt", weights_only=True))
    payload = json.loads((ckpt / STATE_FILE).read_text())
    set_rng_state(load_file(str(ckpt / "rng.safetensors")), payload["rng"])
    return TrainerState(
        step=payload["step"],
        sampler=payload["sampler"],
        nonfinite_in_a_row=payload.get("nonfinite_in_a_row", 0),
        extra=payload.get("extra"),
    )
