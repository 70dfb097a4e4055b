"""`videothinker report`: compare evaluation and training runs in report.md with PNG plots."""

from __future__ import annotations

import argparse

HELP = "compare runs: report.md with accuracy tables, training summaries and plots"
DESCRIPTION = """\
Write OUT/report.md comparing runs, with PNG plots beside it. A run folder is an evaluation run (it
holds metrics.json from `videothinker eval` / `score`) and / or a training run (it holds log.jsonl):
evaluation runs get accuracy tables overall, per benchmark, per task and per question kind, and bar
charts per benchmark and per kind; training runs get a summary table and curves of the reward (also
per question kind), the KL to the reference model and the completion length.

example:
  videothinker report runs/eval-grpo runs/eval-cdpo runs/train-cdpo --out runs/report --names GRPO CDPO train
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="evaluation and / or training run folders")
    parser.add_argument("--out", required=True, help="folder for report.md and the plots")
    parser.add_argument("--names", nargs="+", help="labels of the runs, in order (default: folder names)")


def run(args: argparse.Namespace) -> int:
    from videothinker.console import print0
    from videothinker.eval.report import write_report

    path = write_report(args.runs, args.out, names=args.names)
    print0(f"report written to {path}")
    return 0
