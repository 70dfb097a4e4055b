"""`videothinker study`: many RL variants on the same lab seeds, sharing each seed's bias model."""

from __future__ import annotations

import argparse

HELP = "compare RL variants (GRPO, CDPO forms) in the lab on several seeds, sharing each seed's bias model"
DESCRIPTION = """\
Train and evaluate RL variants in the causal lab, each seed's variants sharing its data, base model
and bias model(s); write OUT/study.md and OUT/study.json (accuracy per kind, shortcut rate, late
training metrics, collapses, paired differences to the variant named grpo with 95% intervals).

VARIANTS is a YAML mapping, one entry per variant:

  grpo:           {stage: grpo}
  cdpo_paper:     {stage: cdpo, set: {grpo.beta: -0.01}}
  cdpo_cap:       {stage: cdpo, set: {grpo.beta: -0.5, cdpo.kl_cap: 0.2}}
  cdpo_noLabels:  {stage: cdpo, bias: bias_shuffle}     # bias model without causal labels
  grpo_balanced:  {stage: grpo, data: balanced}         # 50% observational training set
  grpo_curve:     {stage: grpo, curve: true}            # also evaluate every --curve-every steps

Choose settings on --split val (the validation split); run the chosen ones on --split test seeds.
A rerun with the same --out resumes. Stopping the study (Ctrl-C, or SIGTERM from `kill` or a
scheduler) stops its child processes too; what finished stays. See docs/EXPERIMENT_GPU.md.

example (one H200):
  videothinker study --preset gpu --set base_model=packaged --set test_scenes=200 \\
      --variants configs/study/val_grid.yaml --seeds 3 4 --split val --jobs 4 --out runs/study
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--variants", metavar="FILE", required=True, help="YAML mapping of variants (above)")
    p.add_argument("--out", metavar="DIR", required=True, help="output folder")
    p.add_argument("--preset", choices=("quick", "default", "gpu"), default="gpu", help="demo preset (gpu)")
    p.add_argument("--smoke", action="store_true", help="the preset's code path at toy size (CPU)")
    p.add_argument(
        "--seeds", type=int, nargs="+", default=[3], help="seeds (default 3: a validation replicate)"
    )
    p.add_argument("--split", choices=("val", "test"), default="val", help="evaluation split (default val)")
    p.add_argument("--jobs", type=int, default=4, help="tasks at once, in child processes (default 4)")
    p.add_argument("--curve-every", type=int, default=20, help="steps between a curve variant's evaluations")
    p.add_argument(
        "--set", metavar="FIELD=VALUE", action="append", default=[], help="change a preset field (as in demo)"
    )
    p.add_argument("--device", default="auto", help="auto (cuda when visible), cpu or cuda")
    p.add_argument(
        "--report-only", action="store_true", help="write OUT/study.md of what finished; run nothing"
    )


def run(args: argparse.Namespace) -> int:
    from videothinker.demo.presets import apply_overrides, get_preset
    from videothinker.demo.study import load_variants, run_study

    if args.jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {args.jobs}")
    preset = apply_overrides(get_preset(args.preset, smoke=args.smoke), args.set)
    variants = load_variants(args.variants)
    run_study(
        args.out,
        preset,
        args.seeds,
        variants,
        split=args.split,
        jobs=args.jobs,
        device=args.device,
        curve_every=args.curve_every,
        report_only=args.report_only,
    )
    return 0
