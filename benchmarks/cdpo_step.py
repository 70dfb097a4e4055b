"""Peak memory and time of one CDPO step, lean path vs naive path, in the same run.

The setting of docs/../DESIGN §4: random-init Qwen2.5-VL-3B (weights do not change speed), one
16-frame 448x308 video (1408 video tokens, 1500 prompt tokens), G = 8 completions of up to 256
tokens, bf16 weights, SDPA attention, gradient checkpointing on (the paper preset), AdamW.

One CDPO step = sample G completions, reference (bias model) log-probs without grad, policy
log-probs with grad, the CDPO loss (beta = -0.01, clamped k3), backward, optimizer step.

- lean:  `generate_rollout` with the decode engine (`--engine graph`, the default: one prefill, static
         KV cache, CUDA-graph decode step; `--engine generate`: one prefill fanned out to G, then
         ``generate``) + `completion_logprobs` (the video encoded once per model and shared;
         completion-only logits, fp32 chunks);
- naive: `simple_generate_rollout` (generate(num_return_sequences=G)) + `naive_completion_logprobs`
         (video repeated G times, full-vocab logits over prompt + completion);
- shared: the lean sampler + `shared_prompt_logprobs` (``grpo.share_prompt``: each prompt run once
         for its G completions, P + G (T - 1) positions instead of G (P + T - 1));
         ``shared_dense`` is its simple reference (the layout's whole mask, the model's own attention).

Both paths run on the same models, inputs and sampled completions (the naive path's log-probs
are computed on the lean path's rollout, so the loss, the work and the memory compare like for
like; sampling is timed separately for each). Prints a table; writes JSON to --out.

    python benchmarks/cdpo_step.py --out results.json          # needs a CUDA GPU (H100/H200)
    python benchmarks/cdpo_step.py --master-fp32 --completion-tokens 768 --repeats 2   # the paper setting

``--anchor`` adds the path ``lean_anchor``: the lean step with a third model, the initial model as
CDPO's anchor (``cdpo.anchor_beta`` 0.01, its log-probs one more pass without grad), and the bounded
loss (beta -0.3, ``cdpo.kl_cap`` 0.2, ``cdpo.one_sided``); ``anchor_over_lean`` is its cost over the
lean step's (a GRPO step costs what the lean step costs: one frozen model beside the policy).

    python benchmarks/cdpo_step.py --master-fp32 --completion-tokens 768 --repeats 3 --paths lean --anchor

``--master-fp32`` is the paper presets' precision: fp32 policy weights (and AdamW state) with bf16
autocast; the engine then decodes from a bf16 copy of the text model, refreshed after each
optimizer step (timed with the optimizer).

``--profile`` adds, for each path, one more policy forward+backward under torch.profiler: its kernels
by kind, forward and backward apart (the recompute runs in the backward), beside the text model's
weight products at the GPU's peak (`update_profile.py`).

``--fused-step auto|true|false`` (auto) builds the engine as the trainer does (`make_engine`,
``rollout.fused_step``): auto decodes with the fused step where the engine copies the weights anyway
(``--master-fp32``) and with the simple step for bf16 weights; true forces the fused step (its
buffers then a copy). Runs before 2026-12-05 always used the simple step.
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch
from fullsize import allocated, build_model, qwen2_5_vl_3b_config, timed, video_prompt
from update_profile import H200_BF16_DENSE_FLOPS, linear_floor_ms, profile_pass


def reference_code_logprobs(model, prompt_ids, prompt_mask, completion_ids, completion_mask, video, G):
    """Log-probs as the public reference code computes them: video repeated G times, full logits,
    full-vocab fp32 log-softmax over prompt + completion, then the completion slice."""
    from videothinker.models.vision import visuals_per_prompt, vlm_body

    P = prompt_ids.shape[1]
    input_ids = torch.cat([prompt_ids.repeat_interleave(G, dim=0), completion_ids], dim=1)
    mask = torch.cat([prompt_mask.repeat_interleave(G, dim=0), completion_mask], dim=1)
    per_prompt = visuals_per_prompt(vlm_body(model), prompt_ids, video)
    kwargs = video.repeat_per_prompt(*per_prompt, G).model_kwargs()
    logits = model(input_ids=input_ids, attention_mask=mask, use_cache=False, **kwargs).logits[:, :-1].float()
    logps = torch.log_softmax(logits, dim=-1).gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    return logps[:, P - 1 :]


def main() -> None:
    from videothinker.config import DECODE_ATTENTION
    from videothinker.models.loading import enable_activation_checkpointing
    from videothinker.rl.logprobs import completion_logprobs, naive_completion_logprobs
    from videothinker.rl.losses import policy_loss
    from videothinker.rl.rollout import generate_rollout, simple_generate_rollout
    from videothinker.rl.shared_prompt import shared_prompt_logprobs

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--completion-tokens", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-gradient-checkpointing", action="store_true")
    parser.add_argument(
        "--checkpoint-layers",
        type=int,
        default=None,
        help="model.checkpoint_layers: only the first N decoder layers recompute (default: all)",
    )
    parser.add_argument(
        "--tiny", action="store_true", help="a few-layer model and a small video (CPU smoke run)"
    )
    parser.add_argument(
        "--policy-only",
        action="store_true",
        help="only the policy on the GPU (no bias model, no optimizer step): its forward+backward alone",
    )
    parser.add_argument(
        "--engine", choices=["graph", "generate"], default="graph", help="lean path's sampler"
    )
    parser.add_argument(
        "--fused-step",
        choices=["auto", "true", "false"],
        default="auto",
        help="the engine's rollout.fused_step (auto: fused where it copies the weights anyway, as the trainer)",
    )
    parser.add_argument(
        "--decode-attention",
        choices=DECODE_ATTENTION,
        default=None,
        help="the fused step's attention over the cache (rollout.decode_attention; default: the trainer's)",
    )
    parser.add_argument(
        "--compile", action="store_true", help="rollout.compile: the fused layer compiled whole"
    )
    parser.add_argument(
        "--master-fp32",
        action="store_true",
        help="fp32 policy weights with bf16 autocast (the paper presets)",
    )
    parser.add_argument(
        "--paths",
        default="lean,naive,reference_code",
        help="comma-separated log-prob paths to time (lean first, then any of shared, shared_dense, naive, "
        "reference_code; naive and reference_code sample with generate)",
    )
    parser.add_argument(
        "--anchor",
        action="store_true",
        help="also time lean_anchor: a third model (the initial one) as CDPO's anchor, with the bounded loss",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also profile one policy forward+backward per path: kernels by kind and phase, and the floor",
    )
    parser.add_argument(
        "--peak-tflops",
        type=float,
        default=H200_BF16_DENSE_FLOPS / 1e12,
        help="the GPU's dense bf16 peak for --profile's floor (default: H200)",
    )
    parser.add_argument("--out", default="cdpo_step.json")
    args = parser.parse_args()
    G, T = args.generations, args.completion_tokens
    device = "cuda" if torch.cuda.is_available() else "cpu"

    config = qwen2_5_vl_3b_config(args.tiny)
    policy = build_model(
        config, seed=0, device=device, dtype=torch.float32 if args.master_fp32 else torch.bfloat16
    )
    bias = (
        None if args.policy_only else build_model(config, seed=1, device=device).eval().requires_grad_(False)
    )
    # the anchor: the policy's initial weights (same seed), frozen, in bf16 as the trainer loads it
    anchor = build_model(config, seed=0, device=device).eval().requires_grad_(False) if args.anchor else None
    if not args.no_gradient_checkpointing:
        enable_activation_checkpointing(policy)
        if args.checkpoint_layers is not None:
            from videothinker.models.loading import limit_activation_checkpointing

            limit_activation_checkpointing(policy, args.checkpoint_layers)
    # Fused AdamW (as the trainer uses on CUDA): no parameter-sized temporaries in the optimizer step.
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-6, fused=device == "cuda")
    engine = None
    if args.engine == "graph":  # as the trainer builds it (rollout.fused_step: auto, true or false)
        from videothinker.config import RolloutConfig
        from videothinker.models.engine import make_engine

        fused = {"auto": None, "true": True, "false": False}[args.fused_step]
        rollout = RolloutConfig(fused_step=fused, compile=args.compile)
        rollout.decode_attention = args.decode_attention or rollout.decode_attention
        engine = make_engine(policy, rollout, torch.bfloat16)
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=args.master_fp32)
    video = dict(frames=4, height=56, width=56, prompt_tokens=40) if args.tiny else {}
    inputs = video_prompt(config, device, **video)
    # An EOS id the random model cannot sample keeps every completion at T tokens.
    gen = dict(
        max_completion_length=T,
        temperature=1.0,
        eos_token_ids=[config.text_config.vocab_size + 7],
        pad_token_id=0,
    )

    all_fns = {
        "lean": completion_logprobs,
        "lean_anchor": completion_logprobs,
        "naive": naive_completion_logprobs,
        "reference_code": reference_code_logprobs,
        "shared": shared_prompt_logprobs,
        "shared_dense": lambda *a: shared_prompt_logprobs(*a, attention="dense"),
    }
    paths = args.paths.split(",")
    if paths[0] != "lean" or any(p not in all_fns or p == "lean_anchor" for p in paths):
        parser.error(
            f"--paths: lean first, then any of {', '.join(p for p in all_fns if not p.startswith('lean'))}; got {args.paths!r}"
        )
    if args.anchor:
        if args.policy_only:
            parser.error("--anchor needs the bias model: drop --policy-only")
        paths.insert(1, "lean_anchor")
    logprob_fns = {p: all_fns[p] for p in paths}

    def sample(path):
        policy.eval()
        with torch.no_grad(), autocast:
            if path.startswith(("lean", "shared")):
                return generate_rollout(policy, inputs, G, engine=engine, **gen)
            return simple_generate_rollout(policy, inputs, G, **gen)

    def update(path, rollout, phases=None):
        """Reference log-probs, policy forward+backward, optimizer step; per-phase (s, peak GiB)."""
        logp = logprob_fns[path]
        args_ = (
            rollout.prompt_ids,
            rollout.prompt_mask,
            rollout.completion_ids,
            rollout.completion_mask,
            rollout.video,
            G,
        )

        anchored = path == "lean_anchor"

        def ref_pass():
            if bias is None:
                return None
            with torch.no_grad(), autocast:
                return logp(bias, *args_)

        def anchor_pass():
            if not anchored:
                return None
            with torch.no_grad(), autocast:
                return logp(anchor, *args_)

        def policy_pass():
            policy.train()
            with autocast:
                logprobs = logp(policy, *args_)
            advantages = torch.randn(G, device=device)
            loss, _ = policy_loss(
                logprobs,
                logprobs.detach(),
                advantages,
                rollout.completion_mask,
                ref_logprobs=ref,
                beta=0.0 if ref is None else (-0.3 if anchored else -0.01),
                **(
                    dict(kl_cap=0.2, one_sided=True, anchor_logprobs=anchor_ref, anchor_beta=0.01)
                    if anchored
                    else {}
                ),
            )
            loss.backward()
            return float(loss.detach())

        def optimizer_pass():
            if not args.policy_only:
                optimizer.step()
                if engine is not None:
                    engine.refresh_weights()
            optimizer.zero_grad(set_to_none=True)

        ref, t_ref, m_ref = timed(ref_pass)
        anchor_ref, t_anchor, m_anchor = timed(anchor_pass)
        _, t_pol, m_pol = timed(policy_pass)
        _, t_opt, m_opt = timed(optimizer_pass)
        if phases is not None:
            phases.append(
                {
                    "ref_s": t_ref,
                    "ref_gib": m_ref,
                    "anchor_s": t_anchor,
                    "anchor_gib": m_anchor,
                    "policy_s": t_pol,
                    "policy_gib": m_pol,
                    "optimizer_s": t_opt,
                    "optimizer_gib": m_opt,
                }
            )

    def profile_policy(path, rollout) -> dict:
        """One policy forward+backward of ``path`` under the profiler (a plain sum as the loss: the
        update's loss is a few elementwise kernels), and the floor of its text-model products."""
        P, Tc = rollout.prompt_ids.shape[1], rollout.completion_ids.shape[1]
        positions = {"shared": P + G * (Tc - 1), "naive": G * (P + Tc), "reference_code": G * (P + Tc)}
        positions = positions.get(path.removesuffix("_dense"), G * (P + Tc - 1))

        def forward():
            policy.train()
            with autocast:
                logprobs = logprob_fns[path](
                    policy,
                    rollout.prompt_ids,
                    rollout.prompt_mask,
                    rollout.completion_ids,
                    rollout.completion_mask,
                    rollout.video,
                    G,
                )
            return (logprobs * rollout.completion_mask).sum()

        def backward(loss):
            loss.backward()
            optimizer.zero_grad(set_to_none=True)

        layers = config.text_config.num_hidden_layers
        recomputed = 0.0 if args.no_gradient_checkpointing else (args.checkpoint_layers or layers) / layers
        out = {"phases": profile_pass(forward, backward, device), "text_positions": positions}
        out["peak_tflops"] = args.peak_tflops
        out["linear_floor_ms"] = linear_floor_ms(config, positions, recomputed, args.peak_tflops * 1e12)
        return out

    rollout = sample("lean")  # warm-up of the sampling path; its completions feed both update paths
    update("lean", rollout)  # warm-up; creates the AdamW state
    static = allocated()  # weights (policy, bias model) and AdamW state: the same for every path
    results = {
        "static_gib": static,
        "G": G,
        "T": T,
        "prompt_tokens": int(inputs["input_ids"].shape[1]),
        "gradient_checkpointing": not args.no_gradient_checkpointing,
        "checkpoint_layers": args.checkpoint_layers,
        "policy_only": args.policy_only,
        "engine": args.engine,
        "fused_step": engine is not None and engine.fused_step,
        "decode_attention": None if engine is None else engine.decode_attention,
        "compile": args.compile,
        "master_fp32": args.master_fp32,
        "engine_copy_gib": 0.0 if engine is None else engine.weights.copy_bytes / 2**30,
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "torch": torch.__version__,
    }
    for path in logprob_fns:
        sampler = "lean" if path.startswith(("lean", "shared")) else "naive"
        update(path, rollout)  # warm-up
        rows, phases = [], []
        for _ in range(args.repeats):
            _, t_sample, m_sample = timed(lambda p=sampler: sample(p))
            _, t_update, _ = timed(lambda p=path, ph=phases: update(p, rollout, ph))
            # The phases reset the peak counter: the update's peak is the largest phase peak.
            m_update = max(phases[-1][k] for k in ("ref_gib", "anchor_gib", "policy_gib", "optimizer_gib"))
            rows.append((t_sample, m_sample, t_update, m_update))
        results[path] = {
            "sampler": sampler,
            "sample_s": statistics.median(r[0] for r in rows),
            "sample_peak_gib": max(r[1] for r in rows),
            "update_s": statistics.median(r[2] for r in rows),
            "update_peak_gib": max(r[3] for r in rows),
            "step_s": statistics.median(r[0] + r[2] for r in rows),
            "step_peak_gib": max(max(r[1], r[3]) for r in rows),
            "policy_fwd_bwd_s": statistics.median(p["policy_s"] for p in phases),
            "policy_fwd_bwd_peak_gib": max(p["policy_gib"] for p in phases),
            "ref_logprobs_s": statistics.median(p["ref_s"] for p in phases),
            "ref_logprobs_peak_gib": max(p["ref_gib"] for p in phases),
            "anchor_logprobs_s": statistics.median(p["anchor_s"] for p in phases),
            "completion_tokens": int(rollout.completion_mask.sum()),
        }
        if args.profile:
            results[path]["profile"] = profile_policy(path, rollout)
        if device == "cuda":
            torch.cuda.empty_cache()
    lean = results["lean"]
    results["ratios"] = {
        other: {
            "step_peak": lean["step_peak_gib"] / max(results[other]["step_peak_gib"], 1e-9),
            "step_peak_above_static": (lean["step_peak_gib"] - static)
            / max(results[other]["step_peak_gib"] - static, 1e-9),
            "policy_fwd_bwd_peak": lean["policy_fwd_bwd_peak_gib"]
            / max(results[other]["policy_fwd_bwd_peak_gib"], 1e-9),
            "step_time": lean["step_s"] / results[other]["step_s"],
            "update_time": lean["update_s"] / results[other]["update_s"],
            "sample_time": lean["sample_s"] / results[other]["sample_s"],
        }
        for other in paths[1:]
        if other != "lean_anchor"
    }
    if args.anchor:  # the cost target's ratio: CDPO with the third model over a two-model step
        with_anchor = results["lean_anchor"]
        results["anchor_over_lean"] = {
            "step_time": with_anchor["step_s"] / lean["step_s"],
            "update_time": with_anchor["update_s"] / lean["update_s"],
            "step_peak": with_anchor["step_peak_gib"] / max(lean["step_peak_gib"], 1e-9),
            "static_gib_with_anchor": static,
        }
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
    what = "policy weights" if args.policy_only else "weights of policy + bias model, AdamW state"
    what += " + the anchor model" if args.anchor else ""
    print(f"{results['device']}: static ({what}) {static:.1f} GiB")
    print(
        f"{'log-probs':15} {'sample s':>9} {'update s':>9} {'fwd+bwd s':>10} {'fwd+bwd GiB':>12} "
        f"{'step s':>7} {'step peak GiB':>14}"
    )
    for path in logprob_fns:
        r = results[path]
        print(
            f"{path:15} {r['sample_s']:9.2f} {r['update_s']:9.2f} {r['policy_fwd_bwd_s']:10.2f} "
            f"{r['policy_fwd_bwd_peak_gib']:12.1f} {r['step_s']:7.2f} {r['step_peak_gib']:14.1f}"
        )
    print(json.dumps(results["ratios"], indent=1))
    for path in logprob_fns if args.profile else ():
        prof = results[path]["profile"]
        print(
            f"{path}: {prof['text_positions']} text positions; products' floor {prof['linear_floor_ms']:.0f} ms"
        )
        for phase, p in prof["phases"].items():
            kinds = ", ".join(f"{k} {v['ms']:.0f} ms ({v['count']})" for k, v in p["by_kind"].items())
            print(f"  {phase}: {p['ms']:.0f} ms in {p['kernels']} kernels: {kinds}")
    if args.anchor:
        print("CDPO with the anchor over the two-model step:", json.dumps(results["anchor_over_lean"]))


if __name__ == "__main__":
    main()
