"""Where a policy forward+backward spends its GPU time: kernels by kind, forward and backward apart,
against the matrix products' floor. Used by ``cdpo_step.py --profile``.

The pass runs once under torch.profiler with a device synchronisation between its forward and its
backward, so every kernel is counted in the phase it ran in (the recompute of gradient
checkpointing runs in the backward). Kinds are decode_breakdown.py's (matrix product, attention,
norm, copy, elementwise/other). The floor counts the text model's weight products only (the vision
tower and the LM head are left out): 2 x parameters FLOP per position forward, twice that backward,
once more in the layers checkpointing recomputes, at the GPU's dense bf16 peak.
"""

from __future__ import annotations

from collections import defaultdict

import torch
from decode_breakdown import kind_of

H200_BF16_DENSE_FLOPS = 989e12  # NVIDIA's H200 SXM figure, dense (no sparsity)


def text_linear_params(config) -> int:
    """Weights of the text model's decoder-layer products (q, k, v, o, gate, up, down), all layers."""
    t = getattr(config, "text_config", config)
    head_dim = getattr(t, "head_dim", None) or t.hidden_size // t.num_attention_heads
    q = t.hidden_size * t.num_attention_heads * head_dim
    kv = 2 * t.hidden_size * t.num_key_value_heads * head_dim
    o = t.num_attention_heads * head_dim * t.hidden_size
    mlp = 3 * t.hidden_size * t.intermediate_size
    return t.num_hidden_layers * (q + kv + o + mlp)


def linear_floor_ms(config, positions: int, recomputed: float, peak_flops: float) -> float:
    """Milliseconds the text model's products need at ``peak_flops`` for one forward+backward over
    ``positions`` (forward 2 P, backward 4 P, recompute 2 P FLOP per position, P the parameters);
    ``recomputed``: the share of decoder layers gradient checkpointing recomputes (0 to 1)."""
    passes = 2 + 4 + 2 * recomputed
    return passes * text_linear_params(config) * positions / peak_flops * 1e3


def _under_aten(event) -> bool:
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith("aten::"):
            return True
        parent = parent.cpu_parent
    return False


def profile_pass(forward, backward, device: str) -> dict:
    """Run ``backward(forward())`` once under the profiler; kernel ms and counts by phase and kind."""
    from torch.profiler import ProfilerActivity, profile, record_function

    cuda = device == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        with record_function("vt::forward"):
            out = forward()
        if cuda:
            torch.cuda.synchronize()
        with record_function("vt::backward"):
            backward(out)
        if cuda:
            torch.cuda.synchronize()
    events = list(prof.events())
    boundary = next(e.time_range.start for e in events if e.name == "vt::backward")
    table: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0, 0.0])
    for event in events:
        if cuda and event.device_type != torch.autograd.DeviceType.CUDA:
            continue
        if not cuda and (not event.name.startswith("aten::") or _under_aten(event)):
            continue  # on a CPU: the outermost aten ops stand in for kernels
        phase = "backward" if event.time_range.start >= boundary else "forward"
        ms = (event.device_time if cuda else event.cpu_time) / 1e3
        entry = table[(phase, kind_of(event.name))]
        entry[0] += 1
        entry[1] += ms
    phases: dict[str, dict] = {}
    for (phase, kind), (count, ms) in sorted(table.items(), key=lambda kv: -kv[1][1]):
        p = phases.setdefault(phase, {"kernels": 0, "ms": 0.0, "by_kind": {}})
        p["kernels"] += count
        p["ms"] += ms
        p["by_kind"][kind] = {"count": count, "ms": ms}
    return phases
