"""`videothinker demo`: the main job, VideoThinker end to end in the causal lab (no downloads)."""

from __future__ import annotations

import argparse

HELP = "the main job: lab data -> warm-started tiny model -> bias, CDPO, GRPO -> evaluation -> report"
DESCRIPTION = """\
VideoThinker end to end in the synthetic causal lab, with no downloads:

  1. lab data: a warm-start set, a training set with the paper's 74% observational questions and a
     held-out test set with both kinds, converted to records labelled question_kind;
  2. base model: a tiny random-init Qwen2.5-VL with a short supervised warm start (a stand-in for a
     pretrained lightweight model, not one);
  3. bias-aware training (bias model), CDPO (repelled from the bias model) and the GRPO baseline;
  4. greedy evaluation of base, bias, CDPO and GRPO on the test set;
  5. OUT/report.md: accuracy per model and question kind, the paper's claims checked, plots.

A rerun with the same --out skips the phases that finished (OUT/phases.json) and resumes the others.

presets:  quick (under 3 minutes on 2 CPU cores)  default (under 15)  gpu (larger; one H100/H200,
frames written as PNG folders so that no PyAV is needed)

examples:
  videothinker demo                                    # preset default, OUT = demo/default
  videothinker demo --quick
  videothinker demo --preset gpu --seeds 0 1 2 --jobs 3 --out runs/gpu
  videothinker demo --preset gpu --smoke --seeds 0 1  # the gpu path at toy size, on a CPU
  videothinker demo --set warm_steps=300 --set rl.grpo.max_steps=40   # change preset fields

See docs/DEMO.md.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", metavar="DIR", help="output folder (default demo/PRESET)")
    p.add_argument(
        "--preset", choices=("quick", "default", "gpu"), default=None, help="size (default: default)"
    )
    p.add_argument("--quick", action="store_true", help="the same as --preset quick")
    p.add_argument(
        "--smoke", action="store_true", help="the preset's code path at toy size (minutes on a CPU)"
    )
    seeds = p.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=int, default=0, help="seed of data, model and training (default 0)")
    seeds.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        metavar="S",
        help="several seeds: OUT/seed-S each, plus an aggregate OUT/report.md",
    )
    p.add_argument(
        "--jobs", type=int, default=1, help="with --seeds: seeds run at once, in child processes (default 1)"
    )
    p.add_argument(
        "--set",
        metavar="FIELD=VALUE",
        action="append",
        default=[],
        help="change a preset field: warm_steps=300, model.hidden_size=256, rl.grpo.max_steps=40 (repeatable)",
    )
    p.add_argument("--device", default="auto", help="auto (cuda when visible), cpu or cuda")
    p.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads (default: half the cores, at most 4; tiny models gain little from more, and "
        "threads fighting another process for cores slow down many times)",
    )


def _preset(args: argparse.Namespace):
    from videothinker.demo.presets import apply_overrides, get_preset

    if args.quick and args.preset not in (None, "quick"):
        raise ValueError(f"--quick contradicts --preset {args.preset}")
    name = "quick" if args.quick else (args.preset or "default")
    return apply_overrides(get_preset(name, smoke=args.smoke), args.set)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from videothinker.demo import run_demo, run_demo_seeds, set_cpu_threads

    preset = _preset(args)
    out = Path(args.out or f"demo/{preset.name}")
    set_cpu_threads(args.threads)
    if args.seeds is None:
        run_demo(out, preset, seed=args.seed, device=args.device)
        return 0
    # what a child process running one seed is given (--seed and --out are added per seed)
    child_argv = ["--preset", preset.name.removesuffix("-smoke"), "--device", args.device]
    child_argv += ["--smoke"] * args.smoke + [x for item in args.set for x in ("--set", item)]
    child_argv += ["--threads", str(args.threads)] if args.threads else []
    run_demo_seeds(out, preset, args.seeds, device=args.device, jobs=args.jobs, child_argv=child_argv)
    return 0
