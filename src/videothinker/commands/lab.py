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
    gen.add_argument("--scenes", type=int, required=True, help="number of scenes (videos)")
    gen.add_argument(
        "--observational-ratio",
        type=float,
        default=0.74,
        help="share of observational questions (default 0.74, the paper's CLEVRER share)",
    )
    gen.add_argument("--seed", type=int, default=0, help="random seed: the same seed gives the same files")
    gen.add_argument("--frames", type=int, default=32, help="frames per video (default 32)")
    gen.add_argument("--fps", type=int, default=8, help="frames per second (default 8)")
    gen.add_argument(
        "--size", type=_size, default=(112, 112), help="frame size WIDTHxHEIGHT (default 112x112)"
    )
    gen.add_argument(
        "--questions-per-scene", type=int, default=3, help="at most this many questions per scene"
    )
    gen.add_argument(
        "--start-index",
        type=int,
        default=0,
        help="index of the first scene (give a test set its own range, e.g. 10000)",
    )
    gen.add_argument(
        "--nested",
        action="store_true",
        help="official sub-folders of 1000 (videos/video_00000-01000/...) instead of flat folders",
    )
    gen.add_argument("--no-videos", action="store_true", help="write annotations and questions only")
    gen.add_argument(
        "--video-format",
        choices=("mp4", "png"),
        default="mp4",
        help="mp4: H.264 videos (PyAV); png: a folder of PNG frames per video (videos/video_00000/), "
        "for machines without PyAV; convert with `data clevrer --frame-fps FPS`",
    )
    gen.add_argument("--workers", type=int, default=1, help="processes generating scenes in parallel")

    split = sub.add_parser("split", help="split a questions file into train and test by scene")
    split.add_argument("--questions", required=True, help="questions file (official schema)")
    split.add_argument(
        "--test-fraction", type=float, default=0.2, help="share of scenes held out (default 0.2)"
    )
    split.add_argument("--seed", type=int, default=0, help="random seed of the split")


def run(args: argparse.Namespace) -> int:
    from videothinker.console import print0
    from videothinker.lab import LabConfig, generate_lab, write_split

    if args.lab_command == "split":
        train, test = write_split(args.questions, args.test_fraction, args.seed)
        print0(f"wrote {train} and {test}")
        return 0
    config = LabConfig(
        scenes=args.scenes,
        observational_ratio=args.observational_ratio,
        seed=args.seed,
        frames=args.frames,
        fps=args.fps,
        size=args.size,
        questions_per_scene=args.questions_per_scene,
        start_index=args.start_index,
        nested=args.nested,
        videos=not args.no_videos,
        video_format=args.video_format,
        workers=args.workers,
    )
    summary = generate_lab(args.out, config)
    print0(
        f"wrote {summary.scenes} scenes and {summary.questions} questions to {summary.out}: "
        f"{summary.observational} observational ({100 * summary.ratio:.1f}%), {summary.inferential} inferential"
    )
    return 0
