"""Where the fused decode step's time goes, and which attention kernel to decode with.

The setting of decode.py: random-init Qwen2.5-VL-3B, B*G = 8 rows, a 1500-token prompt plus
``--decoded`` tokens already in the cache, bf16, the fused step (`models/decode_fused.py`). Three
parts, one run:

1. **step**: the fused step replayed from a CUDA graph (what the engine runs), ms per step; then the
   same step run eagerly under torch.profiler: the GPU time of its kernels summed per step and the
   kernels per step, grouped by kind (matrix products, attention, norms, elementwise, copies,
   sampling is not part of the step; the matmul attention's two batched products count as matrix
   products). Graph time minus kernel time is what the GPU spends between kernels. The graph is
   timed with each decode attention (``--attention``: the one profiled, by default the trainer's);
   ``--compiled``: the step with its layer compiled whole (``rollout.compile=true``).
2. **attention**: the decode attention call alone, at the step's shape (query [N, K, Q/K, D] against
   the cache [N, K, S, D] with the additive mask), per call and x layers (10 calls captured in one
   CUDA graph and replayed, as the engine runs them: launches are not counted), for each way:
   SDPA as the step calls it (torch's choice of backend), SDPA forced to each backend that accepts
   the call, SDPA with a boolean mask, flex attention (compiled, a mask from the valid length),
   plain matmul-softmax-matmul, and the step's own forms (``baddbmm``; flex attention with the
   block mask `flex_block_mask` makes from ``attend``). ``sdpa_no_mask``
   (wrong: attends to every slot) is the lower bound.
   Every variant's output is compared with the step's own (max abs difference, bf16).
3. **products**: the 5 weight-bound products of one layer alone (q/k/v, o, gate/up, down) and the LM
   head (graph-timed too), against the bytes they read at the copy bandwidth decode.py measures.

    python benchmarks/decode_breakdown.py --out decode_breakdown.json    # one CUDA GPU
    python benchmarks/decode_breakdown.py --tiny                          # CPU smoke run (no graphs)
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import defaultdict

import torch
import torch.nn.functional as F
from decode import copy_bandwidth
from fullsize import build_model, qwen2_5_vl_3b_config

KINDS = (  # kernel name fragments -> kind, first match wins
    ("attention", ("attention", "fmha", "flash", "flex", "sdpa", "softmax", "cudnn")),
    (
        "matrix product",
        (
            "gemm",
            "gemv",
            "cutlass",
            "sm90",
            "matmul",
            "addmm",
            "bmm",
            "mm_",
            "xmma",
            "nvjet",
            "::mm",
            "linear",
        ),
    ),
    ("norm", ("rms", "norm")),
    ("copy", ("copy", "index", "scatter", "cat")),
)


def kind_of(name: str) -> str:
    low = name.lower()
    return next((kind for kind, parts in KINDS if any(p in low for p in parts)), "elementwise/other")


def median_time(fn, repeats: int, device: str, inner: int = 1) -> float:
    """Median seconds of one call of ``fn`` (``inner`` calls per timing), after two warm-up calls."""
    for _ in range(2):
        fn()
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) / inner)
    return statistics.median(times)


def capture(fn, calls: int = 1, warmups: int = 1) -> torch.cuda.CUDAGraph:
    """``calls`` calls of ``fn`` captured in one CUDA graph, after ``warmups`` calls on a side stream
    (where compiling and first allocations happen, outside the capture)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(warmups):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            fn()
    return graph


def graph_time(fn, repeats: int, device: str, inner: int = 10) -> tuple[float, str]:
    """Median seconds of one call of ``fn`` with ``inner`` calls captured in one CUDA graph and
    replayed, so that launches (which dominate a microsecond kernel run eagerly) are not counted, as
    in the engine's graph; and how it was timed. Eagerly where there is no GPU or the call cannot be
    captured."""
    if device != "cuda":
        return median_time(fn, repeats, device, inner), "eager"
    try:
        graph = capture(fn, inner, warmups=2)
    except Exception as exc:  # e.g. a compiled call that cannot be captured
        print(f"  (not capturable, timed eagerly: {type(exc).__name__}: {str(exc)[:120]})")
        torch.cuda.synchronize()
        return median_time(fn, repeats, device, inner), "eager"
    return median_time(graph.replay, repeats, device) / inner, "graph"


def step_state(w, rows: int, prompt: int, decoded: int, slots: int, device: str):
    """A joint K/V cache with ``prompt + decoded`` valid slots per row, and the step's inputs."""
    L, K, D = w.num_layers, w.num_kv_heads, w.head_dim
    kv = torch.randn((L, 2, rows, K, slots, D), dtype=w.dtype, device=device)
    attend = torch.zeros((rows, slots), dtype=torch.bool, device=device)
    attend[:, : prompt + decoded] = True
    tokens = torch.randint(0, w.embed.shape[0], (rows,), device=device)
    positions = torch.full((rows,), prompt + decoded, device=device)
    write_index = torch.tensor([prompt + decoded], device=device)
    return kv, attend, tokens, positions, write_index


def profile_step(step, device: str, steps: int = 5) -> dict:
    """Kernels of ``steps`` eager steps under torch.profiler: per step, their count and time by kind."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CUDA] if device == "cuda" else [ProfilerActivity.CPU]
    step()
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        if device == "cuda":
            torch.cuda.synchronize()
    by_kind: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    top: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    for event in prof.events():
        if device == "cuda" and event.device_type != torch.autograd.DeviceType.CUDA:
            continue
        if device != "cuda" and not event.name.startswith("aten::"):
            continue
        ms = (event.device_time if device == "cuda" else event.cpu_time) / 1e3
        for table, key in ((by_kind, kind_of(event.name)), (top, event.name[:90])):
            table[key][0] += 1 / steps
            table[key][1] += ms / steps
    ordered = sorted(top.items(), key=lambda kv: -kv[1][1])[:15]
    return {
        "kernels_per_step": sum(v[0] for v in by_kind.values()),
        "kernel_ms_per_step": sum(v[1] for v in by_kind.values()),
        "by_kind": {
            k: {"count": v[0], "ms": v[1]} for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1][1])
        },
        "top": [{"name": k, "count": v[0], "ms": v[1]} for k, v in ordered],
    }


def attention_variants(q, k, v, mask, valid: int, scale: float, device: str) -> dict:
    """name -> a call computing the decode attention (None where the variant cannot run here)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    boolean = mask == 0

    def sdpa_backend(backend):
        def call():
            with sdpa_kernel([backend]):
                return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)

        return call

    def manual():
        scores = torch.matmul(q, k.transpose(-1, -2)) * scale + mask
        return torch.matmul(scores.softmax(-1), v)

    variants = {
        "sdpa": lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale),
        "sdpa_bool_mask": lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=boolean, scale=scale),
        "sdpa_math": sdpa_backend(SDPBackend.MATH),
        "matmul_softmax": manual,
        "sdpa_no_mask (wrong; lower bound)": lambda: F.scaled_dot_product_attention(q, k, v, scale=scale),
    }
    if device == "cuda":
        variants["sdpa_efficient"] = sdpa_backend(SDPBackend.EFFICIENT_ATTENTION)
        variants["sdpa_cudnn"] = sdpa_backend(SDPBackend.CUDNN_ATTENTION)
        try:
            from torch.nn.attention.flex_attention import create_block_mask, flex_attention

            lengths = torch.full((q.shape[0],), valid, device=device)

            def keep(b, h, q_idx, kv_idx):
                return kv_idx < lengths[b]

            block = create_block_mask(keep, q.shape[0], None, q.shape[2], k.shape[2], device=device)
            flex = torch.compile(flex_attention, dynamic=False)
            variants["flex_attention"] = lambda: flex(q, k, v, block_mask=block, scale=scale)
        except Exception as exc:  # an older torch, or no compiler on this machine
            print(f"flex_attention: not available ({type(exc).__name__}: {exc})")
    return variants


def main() -> None:
    from videothinker.config import RolloutConfig
    from videothinker.models.decode import weights_from_model
    from videothinker.models.decode_fused import (
        DECODE_ATTENTION,
        additive_mask,
        cache_attention,
        compiled_fused_layer,
        fused_decode_step,
        fused_layer,
        step_mask,
    )
    from videothinker.models.engine import cache_slots

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=8, help="B*G")
    parser.add_argument("--prompt", type=int, default=1500, help="prompt tokens in the cache")
    parser.add_argument("--decoded", type=int, default=384, help="completion tokens already decoded")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument(
        "--attention",
        choices=DECODE_ATTENTION,
        default=RolloutConfig().decode_attention,
        help="the step's decode attention, profiled in part 1 (default: the trainer's); the graph is "
        "timed with each",
    )
    parser.add_argument(
        "--compiled",
        action="store_true",
        help="the step with its layer compiled whole (rollout.compile=true): part 1 for it, with each "
        "attention (what the compiled layer's kernels are, e.g. why flex is slower there)",
    )
    parser.add_argument("--tiny", action="store_true", help="a few-layer model (CPU smoke run)")
    parser.add_argument("--out", default="decode_breakdown.json")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.tiny:
        args.prompt, args.decoded, args.repeats = min(args.prompt, 40), min(args.decoded, 8), 3
    model = build_model(qwen2_5_vl_3b_config(args.tiny), seed=0, device=device).eval()
    w = weights_from_model(model, fuse=True)
    slots = cache_slots(args.prompt, 768 if not args.tiny else 16)  # as the engine makes its cache
    kv, attend, tokens, positions, write_index = step_state(
        w, args.rows, args.prompt, args.decoded, slots, device
    )
    result: dict = {
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "torch": torch.__version__,
        "rows": args.rows,
        "valid_slots": args.prompt + args.decoded + 1,
        "cache_slots": slots,
        "layers": w.num_layers,
        "attention": args.attention,
        "compiled": args.compiled,
    }
    layers = {a: compiled_fused_layer() if args.compiled else fused_layer for a in DECODE_ATTENTION}

    def step_with(attention: str):
        layer = layers[attention]
        return lambda: fused_decode_step(w, tokens, positions, kv, write_index, attend, layer, attention)

    step = step_with(args.attention)

    # 1. the step: graph replay, then its kernels eagerly
    with torch.no_grad():
        eager_s = median_time(step, args.repeats, device)
        result["eager_ms_per_step"] = eager_s * 1e3
        if device == "cuda":
            result["graph_ms_per_step_by_attention"] = {}
            for attention in DECODE_ATTENTION:
                graph = capture(step_with(attention))
                ms = median_time(graph.replay, args.repeats, device, inner=10) * 1e3
                result["graph_ms_per_step_by_attention"][attention] = ms
                del graph
            result["graph_ms_per_step"] = result["graph_ms_per_step_by_attention"][args.attention]
        result["profile"] = profile_step(step, device)
        if "graph_ms_per_step" in result:
            result["between_kernels_ms_per_step"] = (
                result["graph_ms_per_step"] - result["profile"]["kernel_ms_per_step"]
            )

        # 2. attention alone, at the step's shape
        n, Q, K, D = args.rows, w.num_heads, w.num_kv_heads, w.head_dim
        q = torch.randn((n, K, Q // K, D), dtype=w.dtype, device=device)
        keys, values = kv[0, 0], kv[0, 1]
        mask = additive_mask(attend, w.dtype)
        valid = args.prompt + args.decoded + 1
        variants = attention_variants(q, keys, values, mask, valid, w.scaling, device)
        joint, flat = kv[0], step_mask(attend, w, "matmul")
        variants["baddbmm (the step's matmul)"] = lambda: cache_attention(q, joint, flat, w.scaling)
        blocks = step_mask(attend, w, "flex")
        variants["flex (the step's block mask)"] = lambda: cache_attention(q, joint, blocks, w.scaling)
        reference = variants["sdpa"]().float()
        attention = {}
        for name, call in variants.items():
            try:
                out = call()
                seconds, timed = graph_time(call, args.repeats, device)
            except Exception as exc:  # a backend that refuses this call's shape, mask or dtype
                attention[name] = {"status": f"{type(exc).__name__}: {str(exc)[:160]}"}
                continue
            attention[name] = {
                "us_per_call": seconds * 1e6,
                "ms_per_step": seconds * 1e3 * w.num_layers,
                "timed": timed,
                "max_abs_diff_to_sdpa": float((out.float() - reference).abs().max()),
            }
        result["attention"] = attention

        # 3. the weight-bound products of one layer, and the LM head
        lw = w.layers[0]
        x = torch.randn((n, w.embed.shape[1]), dtype=w.dtype, device=device)
        a = torch.randn((n, Q * D), dtype=w.dtype, device=device)
        m = torch.randn((n, lw.down.shape[1]), dtype=w.dtype, device=device)
        products = {
            "qkv": (lambda: F.linear(x, lw.qkv, lw.qkv_bias), lw.qkv),
            "o": (lambda: F.linear(a, lw.o), lw.o),
            "gate_up": (lambda: F.linear(x, lw.gate_up), lw.gate_up),
            "down": (lambda: F.linear(m, lw.down), lw.down),
            "lm_head": (lambda: F.linear(x, w.lm_head), w.lm_head),
        }
        bandwidth = copy_bandwidth(device)
        result["copy_bandwidth_tb_s"] = bandwidth / 1e12
        result["products"] = {}
        for name, (call, weight) in products.items():
            seconds, _ = graph_time(call, args.repeats, device)
            floor = weight.numel() * weight.element_size() / bandwidth
            result["products"][name] = {"us": seconds * 1e6, "floor_us": floor * 1e6}
        per_layer = sum(v["us"] for k, v in result["products"].items() if k != "lm_head")
        result["products_ms_per_step"] = (
            per_layer * w.num_layers + result["products"]["lm_head"]["us"]
        ) / 1e3

    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"fused step: eager {result['eager_ms_per_step']:.2f} ms", end="")
    if "graph_ms_per_step" in result:
        print(
            f", graph {result['graph_ms_per_step']:.2f} ms; kernels "
            f"{result['profile']['kernel_ms_per_step']:.2f} ms ({result['profile']['kernels_per_step']:.0f} a step), "
            f"between them {result['between_kernels_ms_per_step']:.2f} ms",
            end="",
        )
    print()
    for kernel, ms in result.get("graph_ms_per_step_by_attention", {}).items():
        print(f"  graph with {kernel} attention: {ms:.2f} ms")
    for kind, v in result["profile"]["by_kind"].items():
        print(f"  {kind:20}{v['count']:8.0f} kernels {v['ms']:8.3f} ms")
    print("attention alone (x layers = ms a step):")
    for name, v in attention.items():
        if "status" in v:
            print(f"  {name:36} {v['status']}")
        else:
            print(
                f"  {name:36}{v['us_per_call']:9.1f} us {v['ms_per_step']:8.3f} ms/step  "
                f"max |diff| {v['max_abs_diff_to_sdpa']:.1e} ({v['timed']})"
            )
    print("weight-bound products (one layer; us, and the copy-bandwidth floor):")
    for name, v in result["products"].items():
        print(f"  {name:10}{v['us']:9.1f} us  floor {v['floor_us']:8.1f} us")
    print(f"products per step: {result['products_ms_per_step']:.2f} ms; wrote {args.out}")


if __name__ == "__main__":
    main()
