"""`videothinker train`: one stage of the method (bias-aware training, CDPO) or the GRPO baseline."""

from __future__ import annotations

import argparse

HELP = "train a stage: bias (bias model), cdpo (debiased policy) or grpo (baseline)"
DESCRIPTION = """\
Train one stage with GRPO-style RL on a video-QA file of the Video-R1 family.

  bias  bias-aware training: GRPO with beta = 0 on the observational questions only
        (records whose question_kind is observational; a file of only those works too)
  cdpo  Causal Debiasing Policy Optimization: GRPO on all questions whose KL term is measured
        against the bias model (--reference) with a negative beta (default -0.01), clamped k3.
        The paper's repulsion vanishes at -0.01 and collapses the policy from about -0.2 in the
        lab; cdpo.kl_cap (a per-token cap), cdpo.one_sided, cdpo.anchor_beta (a pull to the
        initial model), cdpo.kl_target (beta adapted to a KL target) and cdpo.shape logsigmoid (a
        saturating one-sided shape) bound it (docs/LOSS.md); fused decoding: rollout.fused_step
  grpo  the baseline: reference = the initial model, beta >= 0 (beta = 0 loads no reference)

Settings come from the defaults, the stage's defaults, --config (a YAML file or a preset name:
paper_qwen2_5_vl_3b_bias / _cdpo / _grpo, paper_qwen2_5_vl_3b_cdpo_48gb (one 48 GB card),
paper_qwen2_5_vl_7b_cdpo, qwen2_5_vl_3b_cdpo_bounded (the paper's CDPO with a bounded repulsion),
tiny_cpu), then --set key=value (repeatable; TRL names: num_generations,
max_completion_length, beta, epsilon, epsilon_high, learning_rate, loss_type, optim, ...), then the
flags below. The resolved config is written to OUT/config.yaml.

Sampling runs on the decode engine (one prefill per prompt, a static KV cache, the decode step
replayed as a CUDA graph on a GPU; the fused step, a third of the kernels, where the engine copies
the weights anyway: fp32 masters, LoRA, FSDP; rollout.fused_step=true/false forces it either way);
--set rollout.engine=generate samples with transformers' generate instead. --set share_prompt=true
runs each prompt once for its G completions in the log-prob passes, not once per completion (the
same log-probs; sdpa or eager attention; off by default until timed on a GPU). Bad media stop the run
before any model loads, with a count and the first paths; --set data.skip_invalid=true leaves those
records out (docs/TRAINING.md).

A run whose format reward, token entropy or share of degenerate completions collapses stops with
one line naming the step, the likely cause and the last good checkpoint (collapse.*, docs/TRAINING.md).

Writes OUT/log.jsonl (one line per step; --set report_to=[jsonl, wandb] also to W&B), OUT/checkpoint-<step>/ (HF format + trainer state; a run
in a folder with checkpoints resumes from the newest) and OUT/final/ (the model, in HF format: the
--reference of the next stage, or the --model of `videothinker eval`).

example (the paper's recipe, Qwen2.5-VL-3B):
  videothinker train --stage bias --config paper_qwen2_5_vl_3b_bias --model Qwen2.5-VL-3B-Instruct \\
      --data clevrer_train.json --video-root videos/ --out runs/bias
  videothinker train --stage cdpo --config paper_qwen2_5_vl_3b_cdpo --model Qwen2.5-VL-3B-Instruct \\
      --reference runs/bias/final --data clevrer_train.json --video-root videos/ --out runs/cdpo
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--stage", choices=("bias", "cdpo", "grpo"), help="the stage (default: the config's, else grpo)"
    )
    p.add_argument("--model", metavar="PATH", help="the initial model: a local HF checkpoint folder")
    p.add_argument("--data", metavar="FILE", help="training records (.json / .jsonl of the Video-R1 family)")
    p.add_argument("--video-root", metavar="DIR", help="folder the records' video paths are relative to")
    p.add_argument(
        "--reference", metavar="PATH", help="reference model of the KL term (cdpo: the bias model)"
    )
    p.add_argument("--out", metavar="DIR", help="output folder (logs, checkpoints, final model)")
    p.add_argument("--config", metavar="FILE", help="YAML config file or preset name")
    p.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], help="override a setting")
    resume = p.add_mutually_exclusive_group()
    resume.add_argument("--resume", metavar="CHECKPOINT", help="resume from this checkpoint folder")
    resume.add_argument(
        "--no-resume", action="store_true", help="start fresh (error if OUT holds checkpoints)"
    )


def run(args: argparse.Namespace) -> int:
    from videothinker.config import load_train_config
    from videothinker.rl.trainer import train
    from videothinker.yaml_config import to_dict

    flags = {
        "stage": args.stage,
        "model.path": args.model,
        "data.path": args.data,
        "data.video_root": args.video_root,
        "reference": args.reference,
        "output_dir": args.out,
    }
    overrides = list(args.set) + [f"{k}={v}" for k, v in flags.items() if v is not None]
    config = load_train_config(args.config, overrides)
    if not config.model.path or not config.data.path:
        raise ValueError("train needs a model (--model PATH) and data (--data FILE)")
    _write_config(config, to_dict(config))
    resume = None if args.no_resume else (args.resume or "auto")
    train(config, resume=resume)
    _close_process_group()
    return 0


def _close_process_group() -> None:
    """Leave the process group of a multi-process run (or of a sharded one-process run) together, so
    no process exits while another still talks to it (torchrun / accelerate launch then report an
    abort)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _write_config(config, resolved: dict) -> None:
    from pathlib import Path

    import yaml

    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
