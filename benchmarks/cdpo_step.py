"""Peak memory and time of one CDPO step, lean path vs naive path, in the same run.

The setting of docs/../DESIGN §4: random-init Qwen2.5-VL-3B (weights do not change speed), one
16-frame 448x308 video (1408 video tokens, 1500 prompt tokens), G = 8 completions of up to 256
tokens, bf16 weights, SDPA attention, gradient checkpointing on (the paper preset), AdamW.

One CDPO step = sample G completions, reference (bias model) log-probs without grad, policy
log-probs with grad, the CDPO loss (beta = -0.01, clamped k3), backward, optimizer step.

- lean:  `generate_rollout` (one prefill fanned out to G) + `completion_logprobs` (the video encoded
         once per model and shared; completion-only logits, fp32 chunks);
- naive: `simple_generate_rollout` (generate(num_return_sequences=G)) + `naive_completion_logprobs`
         (video repeated G times, full-vocab logits over prompt + completion).

Both paths run on the same models, inputs and sampled completions (the naive path's log-probs
are computed on the lean path's rollout, so the loss, the work and the memory compare like for
like; sampling is timed separately for each). Prints a table; writes JSON to --out.

    python benchmarks/cdpo_step.py --out results.json          # needs a CUDA GPU (H100/H200)
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch


def qwen2_5_vl_3b_config(tiny: bool = False):
    """The Qwen2.5-VL-3B-Instruct architecture (its published config.json values); ``tiny`` shrinks
    it to a few layers for a CPU smoke run of this script."""
    from transformers import Qwen2_5_VLConfig

    text = dict(
        vocab_size=151936,
        hidden_size=2048,
        intermediate_size=11008,
        num_hidden_layers=36,
        num_attention_heads=16,
        num_key_value_heads=2,
        max_position_embeddings=128000,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        hidden_act="silu",
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
    )
    vision = dict(
        depth=32,
        hidden_size=1280,
        intermediate_size=3420,
        num_heads=16,
        out_hidden_size=2048,
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
        window_size=112,
        fullatt_block_indexes=[7, 15, 23, 31],
        in_chans=3,
        hidden_act="silu",
    )
    if tiny:
        text.update(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4)
        text["rope_parameters"]["mrope_section"] = [4, 6, 6]
        vision.update(
            depth=2,
            hidden_size=64,
            intermediate_size=128,
            num_heads=2,
            out_hidden_size=128,
            fullatt_block_indexes=[1],
        )
    config = Qwen2_5_VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=151655,
        video_token_id=151656,
        vision_start_token_id=151652,
        vision_end_token_id=151653,
        tie_word_embeddings=True,
    )
    config._attn_implementation = "sdpa"
    return config


def build_model(config, seed: int, device: str):
    from transformers import Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(seed)
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=torch.bfloat16)
    return model


def video_prompt(config, device, frames=16, height=308, width=448, prompt_tokens=1500):
    """A B=1 prompt: text, <vision_start>, 1408 video tokens, <vision_end>, text; random patches."""
    grid = (frames // 2, height // 14, width // 14)  # (8, 22, 32) patches
    video_tokens = grid[0] * grid[1] * grid[2] // 4  # 1408 after the 2x2 merge
    text = prompt_tokens - video_tokens - 2
    g = torch.Generator().manual_seed(0)
    head = torch.randint(1000, 100000, (text // 2,), generator=g)
    tail = torch.randint(1000, 100000, (text - text // 2,), generator=g)
    ids = torch.cat(
        [
            head,
            torch.tensor([config.vision_start_token_id]),
            torch.full((video_tokens,), config.video_token_id),
            torch.tensor([config.vision_end_token_id]),
            tail,
        ]
    ).unsqueeze(0)
    patches = grid[0] * grid[1] * grid[2]
    return {
        "input_ids": ids.to(device),
        "attention_mask": torch.ones_like(ids).to(device),
        "pixel_values_videos": torch.randn(patches, 3 * 2 * 14 * 14, generator=g).to(device, torch.bfloat16),
        "video_grid_thw": torch.tensor([grid]).to(device),
        "second_per_grid_ts": torch.tensor([1.0]).to(device),
    }


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


def timed(fn):
    """(result, seconds, peak GiB allocated during fn); on CPU the peak is reported as 0."""
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    out = fn()
    if cuda:
        torch.cuda.synchronize()
    return out, time.perf_counter() - start, torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0


def allocated() -> float:
    return torch.cuda.memory_allocated() / 2**30 if torch.cuda.is_available() else 0.0


def main() -> None:
    from videothinker.rl.logprobs import completion_logprobs, naive_completion_logprobs
    from videothinker.rl.losses import policy_loss
    from videothinker.rl.rollout import generate_rollout, simple_generate_rollout

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--completion-tokens", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-gradient-checkpointing", action="store_true")
    parser.add_argument(
        "--tiny", action="store_true", help="a few-layer model and a small video (CPU smoke run)"
    )
    parser.add_argument(
        "--policy-only",
        action="store_true",
        help="only the policy on the GPU (no bias model, no optimizer step): its forward+backward alone",
    )
    parser.add_argument("--out", default="cdpo_step.json")
    args = parser.parse_args()
    G, T = args.generations, args.completion_tokens
    device = "cuda" if torch.cuda.is_available() else "cpu"

    config = qwen2_5_vl_3b_config(args.tiny)
    policy = build_model(config, seed=0, device=device)
    bias = (
        None if args.policy_only else build_model(config, seed=1, device=device).eval().requires_grad_(False)
    )
    if not args.no_gradient_checkpointing:
        policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    # Fused AdamW (as the trainer uses on CUDA): no parameter-sized temporaries in the optimizer step.
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-6, fused=device == "cuda")
    video = dict(frames=4, height=56, width=56, prompt_tokens=40) if args.tiny else {}
    inputs = video_prompt(config, device, **video)
    # An EOS id the random model cannot sample keeps every completion at T tokens.
    gen = dict(
        max_completion_length=T,
        temperature=1.0,
        eos_token_ids=[config.text_config.vocab_size + 7],
        pad_token_id=0,
    )

    logprob_fns = {
        "lean": completion_logprobs,
        "naive": naive_completion_logprobs,
        "reference_code": reference_code_logprobs,
    }

    def sample(path):
        policy.eval()
        with torch.no_grad():
            fn = generate_rollout if path == "lean" else simple_generate_rollout
            return fn(policy, inputs, G, **gen)

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

        def ref_pass():
            if bias is None:
                return None
            with torch.no_grad():
                return logp(bias, *args_)

        def policy_pass():
            policy.train()
            logprobs = logp(policy, *args_)
            advantages = torch.randn(G, device=device)
            loss, _ = policy_loss(
                logprobs,
                logprobs.detach(),
                advantages,
                rollout.completion_mask,
                ref_logprobs=ref,
                beta=0.0 if ref is None else -0.01,
            )
            loss.backward()
            return float(loss.detach())

        def optimizer_pass():
            if not args.policy_only:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        ref, t_ref, m_ref = timed(ref_pass)
        _, t_pol, m_pol = timed(policy_pass)
        _, t_opt, m_opt = timed(optimizer_pass)
        if phases is not None:
            phases.append(
                {
                    "ref_s": t_ref,
                    "ref_gib": m_ref,
                    "policy_s": t_pol,
                    "policy_gib": m_pol,
                    "optimizer_s": t_opt,
                    "optimizer_gib": m_opt,
                }
            )

    rollout = sample("lean")  # warm-up of the sampling path; its completions feed both update paths
    update("lean", rollout)  # warm-up; creates the AdamW state
    static = allocated()  # weights (policy, bias model) and AdamW state: the same for every path
    results = {
        "static_gib": static,
        "G": G,
        "T": T,
        "prompt_tokens": int(inputs["input_ids"].shape[1]),
        "gradient_checkpointing": not args.no_gradient_checkpointing,
        "policy_only": args.policy_only,
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "torch": torch.__version__,
    }
    for path in logprob_fns:
        sampler = "lean" if path == "lean" else "naive"
        update(path, rollout)  # warm-up
        rows, phases = [], []
        for _ in range(args.repeats):
            _, t_sample, m_sample = timed(lambda p=sampler: sample(p))
            _, t_update, _ = timed(lambda p=path, ph=phases: update(p, rollout, ph))
            # The phases reset the peak counter: the update's peak is the largest phase peak.
            m_update = max(phases[-1]["ref_gib"], phases[-1]["policy_gib"], phases[-1]["optimizer_gib"])
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
            "completion_tokens": int(rollout.completion_mask.sum()),
        }
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
        for other in ("naive", "reference_code")
    }
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
    what = "policy weights" if args.policy_only else "weights of policy + bias model, AdamW state"
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


if __name__ == "__main__":
    main()
