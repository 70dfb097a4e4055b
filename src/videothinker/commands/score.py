"""`videothinker score`: recompute metrics.json from saved predictions, without the model."""

from __future__ import annotations

import argparse

HELP = "re-score saved predictions against benchmark files (no model needed)"
DESCRIPTION = """\
Recompute metrics from a predictions.jsonl written by `videothinker eval`: every raw output is scored
again with the current rules, so a change of scoring never needs the model. The metrics.json written
is the one `eval` writes for the same predictions (both call the same function). Give the same
benchmark files as to `eval` (predictions are matched by benchmark name and record id).

example:
  videothinker score --benchmark data/eval_mvbench.json --predictions runs/eval-cdpo/predictions.jsonl
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--benchmark", nargs="+", required=True, metavar="FILE", help="benchmark .json/.jsonl files"
    )
    parser.add_argument(
        "--predictions", required=True, metavar="FILE", help="predictions.jsonl of an eval run"
    )
    parser.add_argument("--out", help="folder for metrics.json (default: the folder of --predictions)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from videothinker.console import print0, warn
    from videothinker.eval.benchmarks import load_benchmarks
    from videothinker.eval.metrics import compute_metrics, print_summary, write_metrics
    from videothinker.eval.predictions import latest, read_predictions

    benchmarks = load_benchmarks(args.benchmark)
    predictions = latest(read_predictions(args.predictions))
    known = {(bench.name, record.id) for bench in benchmarks for record in bench.records}
    unmatched = [key for key in predictions if key not in known]
    if unmatched:
        names = sorted({bench for bench, _ in unmatched})
        warn(
            f"{len(unmatched)} predictions match no record of the given benchmarks (benchmarks: {', '.join(names)})"
        )
    metrics = compute_metrics(benchmarks, predictions)
    path = write_metrics(metrics, args.out or Path(args.predictions).parent)
    print_summary(metrics)
    print0(f"metrics written to {path}")
    return 0
