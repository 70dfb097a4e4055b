"""Does the step's flex attention slow down once a second cache length has been seen?

`flex_cache_attention` compiles flex attention with torch's automatic dynamic shapes: the first cache
length compiles a kernel for that length, a second length compiles once more with the length dynamic,
and later lengths reuse that. This times the step's call (`flex_block_mask` + `cache_attention`, 8
rows, the 3B model's heads, bf16, 10 calls in one CUDA graph) at ``--slots`` cache slots with
``--written`` of them written, first in a fresh compile (static), then again after ``--other``
slots were compiled (dynamic), in one process; the block mask's making (once a step, for all
layers) apart; `baddbmm` at the same shape; both at a cache length 36 slots shorter, not a
multiple of 8 (decode_breakdown.py's 2268).

    python benchmarks/flex_shapes.py --out flex_shapes.json     # GPU
    python benchmarks/flex_shapes.py --tiny                     # CPU smoke run
"""

from __future__ import annotations

import argparse
import json
from types import SimpleNamespace

import torch
from decode_breakdown import graph_time

import videothinker.models.decode_fused as fused
from videothinker.models.decode_fused import cache_attention, flex_block_mask, step_mask

# Qwen2.5-VL-3B's attention: 16 query heads, 2 kv heads, head dim 128; what `step_mask` reads of the weights
HEADS = SimpleNamespace(num_heads=16, num_kv_heads=2, head_dim=128, dtype=torch.bfloat16)


def shapes(rows: int, slots: int, written: int, device: str):
    """The query, the joint K/V cache and ``attend`` (``written`` slots) of one layer at a step."""
    K, D = HEADS.num_kv_heads, HEADS.head_dim
    torch.manual_seed(0)  # the same q and cache for every call at one shape
    q = torch.randn((rows, K, HEADS.num_heads // K, D), dtype=HEADS.dtype, device=device)
    kv = torch.randn((2, rows, K, slots, D), dtype=HEADS.dtype, device=device)
    attend = torch.zeros((rows, slots), dtype=torch.bool, device=device)
    attend[:, :written] = True
    return q, kv, attend


def time_attention(
    rows: int, slots: int, written: int, repeats: int, device: str, attention: str
) -> tuple[float, torch.Tensor]:
    """The step's ``attention`` call alone (us), with the mask `step_mask` makes for it once a step
    (for all layers); and its output."""
    q, kv, attend = shapes(rows, slots, written, device)
    mask = step_mask(attend, HEADS, attention)
    seconds, _ = graph_time(lambda: cache_attention(q, kv, mask, 0.088), repeats, device)
    return seconds * 1e6, cache_attention(q, kv, mask, 0.088)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--slots", type=int, default=2304)
    parser.add_argument("--written", type=int, default=1952)
    parser.add_argument("--other", type=int, default=1600, help="the second cache length compiled")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", default="flex_shapes.json")
    parser.add_argument("--tiny", action="store_true", help="2 rows, a 320-slot cache (CPU smoke run)")
    args = parser.parse_args()
    if args.tiny:
        args.rows, args.slots, args.written, args.other, args.repeats = 2, 320, 200, 192, 2
    device = "cuda" if torch.cuda.is_available() else "cpu"
    shape = (args.rows, args.slots, args.written, args.repeats, device)
    static, reference = time_attention(*shape, "flex")
    time_attention(
        args.rows, args.other, min(args.written, args.other), args.repeats, device, "flex"
    )  # again
    dynamic, dynamic_out = time_attention(*shape, "flex")
    torch._dynamo.reset()
    fused._compiled_flex = None
    static_again, _ = time_attention(*shape, "flex")
    _, _, attend = shapes(args.rows, args.slots, args.written, device)
    group = HEADS.num_heads // HEADS.num_kv_heads
    mask_s, _ = graph_time(lambda: flex_block_mask(attend, group), args.repeats, device)
    matmul, matmul_out = time_attention(*shape, "matmul")
    unaligned = args.slots - 36  # a cache length that is not a multiple of 8 (decode_breakdown's 2268)
    short = (args.rows, unaligned, args.written, args.repeats, device)
    result = {
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "torch": torch.__version__,
        **{k: getattr(args, k) for k in ("rows", "slots", "written", "other")},
        "us_per_call": {
            "flex, first length (static)": static,
            "flex, after a second length (dynamic)": dynamic,
            "flex, static again": static_again,
            "flex_block_mask (once a step)": mask_s * 1e6,
            "baddbmm": matmul,
            f"flex at {unaligned} slots": time_attention(*short, "flex")[0],
            f"baddbmm at {unaligned} slots": time_attention(*short, "matmul")[0],
        },
        "max_abs_diff_to_baddbmm": {  # bf16 rounding only
            "flex (static)": (reference.float() - matmul_out.float()).abs().max().item(),
            "flex (dynamic)": (dynamic_out.float() - matmul_out.float()).abs().max().item(),
        },
    }
    for name, us in result["us_per_call"].items():
        print(f"{name:40} {us:8.1f} us")
    print("max |diff| to baddbmm:", result["max_abs_diff_to_baddbmm"])
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
