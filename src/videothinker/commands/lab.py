"""`videothinker lab`: generate the synthetic causal lab (CLEVRER format), or split a generated set."""

from __future__ import annotations

import argparse

HELP = "generate the synthetic causal lab (videos, annotations, counterfactual questions)"
DESCRIPTION = """\
The causal lab: objects slide on parallel tracks and hit each other in chains; counterfactual
questions ask what happens if one object is removed, answered by simulating the scene again without
it. Files follow the official CLEVRER layout and schema, so `videothinker data clevrer` converts them.

  videothinker lab generate --out lab/train --scenes 400 --observational-ratio 0.74 --seed 0
  videothinker lab generate --out lab/test --scenes 100 --observational-ratio 0.5 --seed 1 --start-index 10000
  videothinker lab generate --config lab/train/lab.json --out lab/val --scenes 200 --seed 3 --start-index 30000
  videothinker lab split --questions lab/all/questions.json --test-fraction 0.2 --seed 0

See docs/LAB.md.
"""


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 112x112, got {text!r}") from None
    return width, height


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="lab_command", metavar="SUBCOMMAND", required=True)
    gen = sub.add_parser(
        "generate",
        help="generate a set of scenes",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    gen.add_argument("--out", required=True, help="output folder")
    gen.add_argument(
        "--config",
        help="a set's lab.json (or its folder): generate another set of the same world and rendering; "
        "the options given here override its settings",
    )
    gen.add_argument("--scenes", type=int, help="number of scenes (videos); required without --config")
    gen.add_argument(
        "--observational-ratio",
        type=float,
        help="share of observational questions (default 0.74, the paper's CLEVRER share)",
    )
    gen.add_argument("--seed", type=int, help="random seed: the same seed gives the same files (default 0)")
    gen.add_argument("--frames", type=int, help="frames per video (default 32)")
    gen.add_argument("--fps", type=int, help="frames per second (default 8)")
    gen.add_argument("--size", type=_size, help="frame size WIDTHxHEIGHT (default 112x112)")
    gen.add_argument(
        "--questions-per-scene", type=int, help="at most this many questions per scene (default 3)"
    )
    gen.add_argument(
        "--start-index",
        type=int,
        help="index of the first scene (default 0; give a test set its own range, e.g. 10000)",
    )
    gen.add_argument(
        "--nested",
        action="store_true",
        default=None,
        help="official sub-folders of 1000 (videos/video_00000-01000/...) instead of flat folders",
    )
    gen.add_argument(
        "--no-videos",
        dest="videos",
        action="store_false",
        default=None,
        help="write annotations and questions only",
    )
    gen.add_argument(
        "--video-format",
        choices=("mp4", "png"),
        help="mp4 (default): H.264 videos (PyAV); png: a folder of PNG frames per video (videos/video_00000/), "
        "for machines without PyAV; convert with `data clevrer --frame-fps FPS`",
    )
    gen.add_argument(
        "--contact-marks",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a collision leaves a dot of the partner's colour on each object (default on)",
    )
    gen.add_argument(
        "--mark-radius",
        type=float,
        help="a contact mark's radius as a fraction of the object's (default 0.5, the recommended world; a lab.json written before marks had a size means 0.3)",
    )
    gen.add_argument("--workers", type=int, help="processes generating scenes in parallel (default 1)")

    base = sub.add_parser(
        "base-model",
        help="build the lab's base model (tiny Qwen2.5-VL + warm start) and measure it on a validation set",
        description="Build the base model a demo run of the preset builds (lab warm-start set, tiny "
        "random-init Qwen2.5-VL, supervised warm start), then evaluate it greedily on a validation set "
        "(seed + 3000, scenes 30000+): collisions read (seen probes), observational and inferential "
        "accuracy against the text-only answer prior. Writes OUT/base_model.json. See docs/LAB.md.",
    )
    base.add_argument("--out", required=True, metavar="DIR", help="output folder")
    base.add_argument(
        "--preset",
        choices=("quick", "default", "gpu"),
        default="default",
        help="demo preset (default: default)",
    )
    base.add_argument("--smoke", action="store_true", help="the preset's code path at toy size")
    base.add_argument("--seed", type=int, default=0, help="seed of data and model (default 0)")
    base.add_argument(
        "--set", metavar="FIELD=VALUE", action="append", default=[], help="change a preset field (repeatable)"
    )
    base.add_argument("--device", default="auto", help="auto (cuda when visible), cpu or cuda")
    base.add_argument("--threads", type=int, help="torch CPU threads (default: half the cores, at most 4)")

    split = sub.add_parser("split", help="split a questions file into train and test by scene")
    split.add_argument("--questions", required=True, help="questions file (official schema)")
    split.add_argument(
        "--test-fraction", type=float, default=0.2, help="share of scenes held out (default 0.2)"
    )
    split.add_argument("--seed", type=int, default=0, help="random seed of the split")


def run(args: argparse.Namespace) -> int:
    from videothinker.console import print0
    from videothinker.lab import LabConfig, generate_lab, load_lab_config, write_split

    if args.lab_command == "base-model":
        from videothinker.demo import set_cpu_threads
        from videothinker.demo.basemodel import run_base_model
        from videothinker.demo.presets import apply_overrides, get_preset

        set_cpu_threads(args.threads)
        preset = apply_overrides(get_preset(args.preset, smoke=args.smoke), args.set)
        run_base_model(args.out, preset, seed=args.seed, device=args.device)
        return 0
    if args.lab_command == "split":
        train, test = write_split(args.questions, args.test_fraction, args.seed)
        print0(f"wrote {train} and {test}")
        return 0
    given = {
        name: getattr(args, name)
        for name in (
            "scenes",
            "observational_ratio",
            "seed",
            "frames",
            "fps",
            "size",
            "questions_per_scene",
            "start_index",
            "nested",
            "videos",
            "video_format",
            "contact_marks",
            "mark_radius",
            "workers",
        )
        if getattr(args, name) is not None
    }
    if args.config:
        config = load_lab_config(args.config, **given)
    elif "scenes" not in given:
        raise ValueError("lab generate needs --scenes (or --config SET/lab.json)")
    else:
        config = LabConfig(**given)
    summary = generate_lab(args.out, config)
    print0(
        f"wrote {summary.scenes} scenes and {summary.questions} questions to {summary.out}: "
        f"{summary.observational} observational ({100 * summary.ratio:.1f}%), {summary.inferential} inferential; "
        f"{summary.seen} perception probes (seen.json)"
    )
    return 0
