"""Peak memory of a step (rl/memory.py): torch's allocator counters on CUDA, nothing on CPU."""

from __future__ import annotations

import pytest
import torch

from videothinker.rl.memory import GIB, peak_memory, reset_peak_memory


def test_nothing_on_cpu():
    reset_peak_memory(torch.device("cpu"))
    assert peak_memory(torch.device("cpu")) == {}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_peak_of_a_window_on_cuda():
    device = torch.device("cuda")
    # what earlier tests of the same process still hold (graphs, caches) counts in every window
    before = torch.cuda.memory_allocated(device) / GIB
    reset_peak_memory(device)
    held = torch.empty(GIB // 4, dtype=torch.uint8, device=device)  # 0.25 GiB, freed below
    del held
    peak = peak_memory(device)
    assert peak["peak_allocated_gib"] >= before + 0.25
    assert peak["peak_reserved_gib"] >= peak["peak_allocated_gib"]
    reset_peak_memory(device)  # a new window no longer sees the freed block
    assert peak_memory(device)["peak_allocated_gib"] < before + 0.25
