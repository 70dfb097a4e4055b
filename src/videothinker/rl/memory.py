"""Peak accelerator memory of a training step, as torch's caching allocator counts it.

``peak_allocated_gib`` is the most memory held by tensors at any moment since the last reset
(`torch.cuda.max_memory_allocated`); ``peak_reserved_gib`` the most the allocator held from the
driver, cached blocks included (`torch.cuda.max_memory_reserved`): what the card must have, and
close to what nvidia-smi shows less the CUDA context (about 0.5 GiB). On CPU there is no such
count, so nothing is reported.
"""

from __future__ import annotations

import torch

GIB = 2**30


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak window on ``device`` (nothing on CPU)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> dict[str, float]:
    """``{"peak_allocated_gib": .., "peak_reserved_gib": ..}`` since the last reset; {} on CPU."""
    if device.type != "cuda":
        return {}
    return {
        "peak_allocated_gib": torch.cuda.max_memory_allocated(device) / GIB,
        "peak_reserved_gib": torch.cuda.max_memory_reserved(device) / GIB,
    }
