"""`videothinker data`: data preparation; `data clevrer` converts CLEVRER-format questions to records."""

from __future__ import annotations

import argparse

HELP = "prepare training data (CLEVRER counterfactual questions -> labelled records)"
DESCRIPTION = """\
Data preparation subcommands.

  videothinker data clevrer --questions train.json --annotations annotation_train --videos video_train \\
      --out data/clevrer_train.jsonl

turns the counterfactual questions of the official CLEVRER release (or of the causal lab) into
Video-R1-style records, each labelled question_kind = observational | inferential.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    clevrer = sub.add_parser(
        "clevrer",
        help="CLEVRER counterfactual questions -> records with question_kind",
        description="Convert the counterfactual questions of an official-format questions file into "
        "Video-R1-style records (.json or .jsonl by the --out suffix), labelled observational or inferential.",
    )
    clevrer.add_argument(
        "--questions", required=True, help="questions file (official schema: a list of scenes)"
    )
    clevrer.add_argument(
        "--annotations", required=True, help="folder of annotation_XXXXX.json (flat or nested)"
    )
    clevrer.add_argument("--videos", required=True, help="folder of video_XXXXX.mp4 (flat or nested)")
    clevrer.add_argument("--out", required=True, help="output records, .json or .jsonl")
    clevrer.add_argument(
        "--rule",
        choices=("answer", "object"),
        default="answer",
        help="answer: observational iff every choice's answer is what the video shows (default); "
        "object: observational iff the removed object takes part in no collision",
    )
    clevrer.add_argument(
        "--kind",
        choices=("observational", "inferential", "seen", "all"),
        default="all",
        help="keep only questions of this kind (default all)",
    )
    clevrer.add_argument(
        "--absolute-paths",
        action="store_true",
        help="write absolute video paths (default: relative to the output file's folder)",
    )
    clevrer.add_argument(
        "--frame-fps",
        type=float,
        metavar="FPS",
        help="videos may be folders of frames (video_XXXXX/ with image files, as `lab generate --video-format "
        "png` writes), played at this rate: their records get data_type frame and this fps",
    )
    clevrer.add_argument(
        "--skip-invalid",
        action="store_true",
        help="skip and count unusable questions instead of stopping at the first",
    )


def run(args: argparse.Namespace) -> int:
    from videothinker.console import print0, warn
    from videothinker.data.clevrer import convert, write_records

    records, report = convert(
        args.questions,
        args.annotations,
        args.videos,
        args.out,
        rule=args.rule,
        kind=args.kind,
        absolute_paths=args.absolute_paths,
        skip_invalid=args.skip_invalid,
        frame_fps=args.frame_fps,
    )
    for message in report.first_errors:
        warn(f"skipped: {message}")
    write_records(records, args.out)
    print0(f"{args.out} ({args.rule} rule):")
    for line in report.lines():
        print0(line)
    return 0
