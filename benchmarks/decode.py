"""Milliseconds per decode step: the decode engine against transformers' generate, and the floor.

The setting of DESIGN.md §4: random-init Qwen2.5-VL-3B (weights do not change speed), one 16-frame
448x308 video (1408 video tokens in a 1500-token prompt), B*G = 8 rows, SDPA attention. Each path
samples completions of T1 and of T2 tokens with an EOS the model cannot emit (so every row runs the
whole length); the decode cost per step is (t(T2) - t(T1)) / (T2 - T1), prefill excluded. Medians of
``--repeats`` runs per length, all paths in one run:

- engine_graph:   `DecodeEngine`, the decode step captured in a CUDA graph and replayed;
- engine_graph_compiled: the same with each layer's parts around attention through torch.compile
                  (``rollout.compile=true``);
- engine_graph_fused: the graph path with the fused step (``rollout.fused_step=true``, SDPA over the cache,
                  ``rollout.decode_attention=sdpa``: q/k/v and
                  gate/up one product each, F.rms_norm, one rotary, one cache write a layer;
                  for bf16 weights a fused copy of them);
- engine_graph_fused_compiled: the fused step with its whole layer through torch.compile
                  (``rollout.fused_step=true``, ``rollout.compile=true``);
- engine_graph_fused_matmul: the fused step attending over the cache with two batched products
                  around a softmax (``rollout.decode_attention=matmul``, the default since 2026-12-05);
                  _compiled_matmul: and compiled;
- engine_graph_fused_flex: the fused step attending over the cache with torch's flex attention
                  (``rollout.decode_attention=flex``); _compiled_flex: and compiled;
- engine_eager:   the same step run eagerly (what the CPU runs);
- generate:       one prefill fanned out to G, then ``generate`` with a dynamic cache
                  (``rollout.engine=generate``);
- generate_static: ``generate(num_return_sequences=G, cache_implementation="static")``;
- floor:          the bytes one step must read (bf16 text-model weights + the KV cache) over the
                  device-to-device copy bandwidth measured in the same run.

    python benchmarks/decode.py --out decode.json                 # one CUDA GPU
    python benchmarks/decode.py --master-fp32 --out decode.json   # fp32 weights, bf16 autocast
    python benchmarks/decode.py --tiny                             # CPU smoke run
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch
from fullsize import build_model, qwen2_5_vl_3b_config, timed, video_prompt


def copy_bandwidth(device: str, gib: float = 2.0) -> float:
    """Bytes per second of a device-to-device copy (read + write counted), median of 10."""
    if device != "cuda":
        return float("nan")
    src = torch.randn(int(gib * 2**30 / 4), device=device)
    dst = torch.empty_like(src)
    times = []
    for _ in range(12):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dst.copy_(src)
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return 2 * src.numel() * 4 / statistics.median(times[2:])


def main() -> None:
    from videothinker.models.engine import DecodeEngine, prompt_model_inputs
    from videothinker.rl.rollout import generate_rollout

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--generations", type=int, default=8, help="G (rows = G, B = 1)")
    parser.add_argument("--t1", type=int, default=32, help="the shorter completion length")
    parser.add_argument("--t2", type=int, default=288, help="the longer completion length")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--master-fp32", action="store_true", help="fp32 weights under bf16 autocast")
    parser.add_argument(
        "--paths",
        default="engine_graph,engine_graph_fused,engine_graph_fused_compiled,engine_graph_fused_matmul,"
        "engine_graph_fused_compiled_matmul,engine_graph_fused_flex,engine_graph_fused_compiled_flex,"
        "engine_graph_compiled,engine_eager,generate,generate_static",
    )
    parser.add_argument("--tiny", action="store_true", help="a few-layer model, small video (CPU smoke run)")
    parser.add_argument("--out", default="decode.json")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    G = args.generations
    config = qwen2_5_vl_3b_config(args.tiny)
    dtype = torch.float32 if args.master_fp32 else torch.bfloat16
    model = build_model(config, seed=0, device=device, dtype=dtype).eval()
    inputs = video_prompt(
        config, device, **(dict(frames=4, height=56, width=56, prompt_tokens=40) if args.tiny else {})
    )
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=args.master_fp32)
    never = config.text_config.vocab_size + 7  # an EOS id the model cannot sample
    engines = {
        "engine_graph": DecodeEngine(model, dtype=torch.bfloat16, check_every=1 << 30),
        "engine_eager": DecodeEngine(model, dtype=torch.bfloat16, cuda_graphs=False, check_every=1 << 30),
    }
    if "engine_graph_fused" in args.paths.split(","):
        engines["engine_graph_fused"] = DecodeEngine(
            model, dtype=torch.bfloat16, fuse=True, decode_attention="sdpa", check_every=1 << 30
        )
    if "engine_graph_fused_compiled" in args.paths.split(","):
        engines["engine_graph_fused_compiled"] = DecodeEngine(
            model, dtype=torch.bfloat16, fuse=True, compile=True, decode_attention="sdpa", check_every=1 << 30
        )
    for name, compiled, attention in (
        ("engine_graph_fused_matmul", False, "matmul"),
        ("engine_graph_fused_compiled_matmul", True, "matmul"),
        ("engine_graph_fused_flex", False, "flex"),
        ("engine_graph_fused_compiled_flex", True, "flex"),
    ):
        if name in args.paths.split(","):
            engines[name] = DecodeEngine(
                model,
                dtype=torch.bfloat16,
                fuse=True,
                compile=compiled,
                decode_attention=attention,
                check_every=1 << 30,
            )
    if "engine_graph_compiled" in args.paths.split(","):
        engines["engine_graph_compiled"] = DecodeEngine(
            model, dtype=torch.bfloat16, compile=True, check_every=1 << 30
        )

    def run(path: str, T: int) -> torch.Tensor:
        with torch.no_grad(), autocast:
            if path in engines:
                return engines[path].generate(
                    inputs, G, max_new_tokens=T, eos_token_ids=[never], pad_token_id=0
                )
            if path == "generate":
                rollout = generate_rollout(
                    model, inputs, G, max_completion_length=T, eos_token_ids=[never], pad_token_id=0
                )
                return rollout.completion_ids
            sequences = model.generate(
                **prompt_model_inputs(model, inputs),
                num_return_sequences=G,
                max_new_tokens=T,
                min_new_tokens=T,
                do_sample=True,
                top_k=0,
                eos_token_id=never,
                pad_token_id=0,
                cache_implementation="static",
            )
            return sequences[:, inputs["input_ids"].shape[1] :]

    results = {
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "rows": G,
        "prompt_tokens": int(inputs["input_ids"].shape[1]),
        "master_fp32": args.master_fp32,
        "t1": args.t1,
        "t2": args.t2,
    }
    for path in args.paths.split(","):
        first, _, _ = timed(lambda p=path: run(p, args.t1))  # warm-up (captures the engine's graph)
        assert first.shape[1] == args.t1, first.shape
        times = {}
        for T in (args.t1, args.t2):
            run(path, T)  # warm-up of this length
            times[T] = statistics.median(timed(lambda p=path, t=T: run(p, t))[1] for _ in range(args.repeats))
        per_step = (times[args.t2] - times[args.t1]) / (args.t2 - args.t1)
        results[path] = {
            "ms_per_decode_step": 1e3 * per_step,
            "prefill_and_first_ms": 1e3 * (times[args.t1] - (args.t1 - 1) * per_step),
            f"total_s_at_{args.t2}": times[args.t2],
        }
        print(f"{path:16} {1e3 * per_step:8.2f} ms per decode step", flush=True)
    w = engines["engine_graph"].weights
    weight_bytes = (
        sum(t.numel() * 2 for layer in w.layers for t in vars(layer).values() if isinstance(t, torch.Tensor))
        + w.lm_head.numel() * 2
        + w.norm.numel() * 2
    )
    S = inputs["input_ids"].shape[1] + args.t2
    cache_bytes = 2 * w.num_layers * G * w.num_kv_heads * S * w.head_dim * 2
    bandwidth = copy_bandwidth(device)
    results["floor"] = {
        "weight_bytes": weight_bytes,
        "cache_bytes_at_t2": cache_bytes,
        "copy_bandwidth_tb_s": bandwidth / 1e12,
        "ms_per_decode_step": 1e3 * (weight_bytes + cache_bytes) / bandwidth,
    }
    print(f"{'floor':16} {results['floor']['ms_per_decode_step']:8.2f} ms ({bandwidth / 1e12:.2f} TB/s copy)")
    if "engine_graph" in results and "generate" in results:
        results["ratio_generate_over_engine_graph"] = (
            results["generate"]["ms_per_decode_step"] / results["engine_graph"]["ms_per_decode_step"]
        )
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
