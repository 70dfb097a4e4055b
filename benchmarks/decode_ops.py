"""Tensor operations per decoder layer in one decode step: the simple step against the fused one.

A decode step for a few rows is bound by how many kernels it launches, not by their work, so the
count of tensor operations a layer is the lever the fused step pulls (docs/PERFORMANCE.md). This
counts them on any machine, without a GPU: every ``torch`` function call that computes (views,
reshapes and size queries left out) through a ``TorchFunctionMode``, on tiny random models of the
three families with bf16 weights. On a GPU most calls are one kernel each (``F.rms_norm`` is one
fused kernel there, ``scaled_dot_product_attention`` one or two); the time that saves is measured by
``decode.py`` (``engine_graph`` against ``engine_graph_fused``).

The count per layer is the difference between a two-layer and a one-layer step, so the step's fixed
part (embedding, rotary, mask, lm_head) is reported apart.

    python benchmarks/decode_ops.py --out decode_ops.json
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
from pathlib import Path

import torch
from torch.overrides import TorchFunctionMode

NOT_COMPUTE = {
    "view", "reshape", "split", "split_with_sizes", "chunk", "unsqueeze", "squeeze", "transpose",
    "t", "permute", "expand", "detach", "__getitem__", "size", "dim", "numel", "__get__",
}  # fmt: skip


class CountCalls(TorchFunctionMode):
    """Counts the computing torch calls made under it, by name."""

    def __init__(self):
        super().__init__()
        self.calls: collections.Counter[str] = collections.Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", str(func))
        if name not in NOT_COMPUTE:
            self.calls[name] += 1
        return func(*args, **(kwargs or {}))


def count_step(weights, fused: bool) -> collections.Counter:
    """The calls of one decode step (4 rows, 16 cache slots) over ``weights``."""
    from videothinker.models.decode import decode_step
    from videothinker.models.decode_fused import fused_decode_step

    n, slots = 4, 16
    kv = torch.zeros(
        weights.num_layers, 2, n, weights.num_kv_heads, slots, weights.head_dim, dtype=weights.dtype
    )
    attend = torch.zeros(n, slots, dtype=torch.bool)
    attend[:, :4] = True
    tokens, positions, index = torch.arange(1, n + 1), torch.full((n,), 4), torch.tensor([4])
    counter = CountCalls()
    with counter:
        if fused:
            fused_decode_step(weights, tokens, positions, kv, index, attend)
        else:
            decode_step(weights, tokens, positions, kv[:, 0], kv[:, 1], index, attend)
    return counter.calls


def main() -> None:
    from videothinker.models.decode import weights_from_model
    from videothinker.models.loading import load_model
    from videothinker.models.tiny import build_tiny_model

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="decode_ops.json")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for arch in ("qwen2_vl", "qwen2_5_vl", "qwen3_vl"):
            model = load_model(build_tiny_model(arch, Path(tmp) / arch))
            for fused in (False, True):
                totals = []
                for layers in (2, 1):
                    weights = weights_from_model(model, torch.bfloat16, fuse=fused)
                    weights.layers = weights.layers[:layers]
                    totals.append(count_step(weights, fused))
                per_layer = totals[0] - totals[1]
                name = f"{arch}/{'fused' if fused else 'simple'}"
                results[name] = {
                    "per_layer": sum(per_layer.values()),
                    "fixed": sum(totals[1].values()) - sum(per_layer.values()),
                    "per_layer_calls": dict(sorted(per_layer.items())),
                }
                print(
                    f"{name:22s} {results[name]['per_layer']:3d} a layer, {results[name]['fixed']:3d} a step besides"
                )
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
