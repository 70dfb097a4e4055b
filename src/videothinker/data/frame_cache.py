"""The on-disk cache of sampled frames (``VideoConfig.cache_dir``): one safetensors file per video
and sampling request, so a video is decoded once per run rather than once per epoch.

Entries are keyed by a digest of the file (absolute path, size, mtime; for a frame folder every frame
file's) and of the request; written under a temporary name and renamed, so readers never see a
partial file; an unreadable entry is decoded again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from pathlib import Path

import torch

from videothinker.console import warn

VERSION = 1


def entry_key(path: Path, source: list, settings: dict) -> str:
    """Digest of a video (its ``source`` stats) and the sampling ``settings`` it was decoded with."""
    key = {"version": VERSION, "path": str(path.resolve()), "source": source, "request": settings}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def entry_file(cache_dir: str, key: str) -> Path:
    return Path(cache_dir) / key[:2] / f"{key}.safetensors"


def read_entry(file: Path) -> tuple[torch.Tensor, float] | None:
    """Frames and fps of a cache entry; None when absent or unreadable (a corrupt entry is re-decoded)."""
    if not file.exists():
        return None
    from safetensors.torch import load_file

    try:
        tensors = load_file(file)
        frames, fps = tensors["frames"], tensors["fps"]
        if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[1] != 3 or fps.numel() != 1:
            raise ValueError(f"unexpected tensors {frames.dtype} {tuple(frames.shape)}")
    except Exception as e:  # any failure to read the entry means: decode again
        warn(f"frame cache entry {file} is unreadable ({type(e).__name__}: {e}); decoding again")
        return None
    return frames, float(fps.item())


def write_entry(file: Path, frames: torch.Tensor, fps: float, source: str) -> None:
    """Write an entry under a temporary name, then rename it: readers never see a partial file."""
    from safetensors.torch import save_file

    tmp = file.with_name(f".{file.name}.{os.getpid()}.{threading.get_ident()}.tmp")  # decode threads too
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        tensors = {"frames": frames.contiguous(), "fps": torch.tensor([fps], dtype=torch.float64)}
        save_file(tensors, str(tmp), metadata={"source": source})
        os.replace(tmp, file)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        warn(f"cannot write frame cache entry {file} ({e}); continuing without caching it")
