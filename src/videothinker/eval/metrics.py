"""Metrics of a predictions file against its benchmark files: the one function behind metrics.json.

`videothinker eval` and `videothinker score` both call `compute_metrics`, which re-scores every
prediction from its raw output, so a change of scoring rules never needs the model again and the two
commands write identical files for the same inputs.

Accuracy is the mean score over *scored* records (micro-averaged: every record weighs the same, across
benchmarks too). Records whose video is missing (skipped) or undecodable (failed) count neither as
right nor as wrong: they are counted and listed. Records of the benchmark files with no prediction
yet (an interrupted run, or ``--limit``) are counted as pending.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from videothinker.eval.benchmarks import Benchmark, record_task
from videothinker.eval.predictions import FAILED, SCORED, SKIPPED, Key, Prediction
from videothinker.eval.scoring import score_record

METRICS_FILE = "metrics.json"


@dataclass
class _Tally:
    """Running sums of one group of scored records."""

    total: float = 0.0
    partial: float = 0.0
    scored: int = 0

    def add(self, score: float, partial: float) -> None:
        self.total += score
        self.partial += partial
        self.scored += 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "accuracy": self.total / self.scored if self.scored else None,
            "partial": self.partial / self.scored if self.scored else None,
            "scored": self.scored,
        }


def _groups(tallies: dict[str, _Tally]) -> dict[str, dict[str, Any]]:
    return {name: tallies[name].to_dict() for name in sorted(tallies)}


def compute_metrics(benchmarks: list[Benchmark], predictions: Mapping[Key, Prediction]) -> dict[str, Any]:
    """Metrics of the latest prediction per record over the records of the given benchmarks.

    Returns a JSON-ready dict: ``overall`` ({accuracy, partial, scored}), ``counts`` (records, scored,
    skipped, failed, pending), ``benchmarks`` (per benchmark: the same figures plus ``tasks``,
    ``problem_types`` and ``question_kinds``), ``question_kinds`` over all benchmarks, and the lists
    ``skipped`` and ``failed`` ({benchmark, id, video, reason}). Predictions of records that are not
    in the benchmarks are ignored.
    """
    overall, kinds = _Tally(), {}
    counts = {"records": 0, SCORED: 0, SKIPPED: 0, FAILED: 0, "pending": 0}
    per_benchmark: dict[str, Any] = {}
    listed: dict[str, list[dict[str, Any]]] = {SKIPPED: [], FAILED: []}
    for bench in benchmarks:
        tally = _Tally()
        tasks: dict[str, _Tally] = {}
        types: dict[str, _Tally] = {}
        bench_kinds: dict[str, _Tally] = {}
        bench_counts = {"records": len(bench.records), SCORED: 0, SKIPPED: 0, FAILED: 0, "pending": 0}
        for record in bench.records:
            prediction = predictions.get((bench.name, record.id))
            status = prediction.status if prediction is not None else "pending"
            bench_counts[status] += 1
            if prediction is None:
                continue
            if status != SCORED:
                listed[status].append(
                    {
                        "benchmark": bench.name,
                        "id": record.id,
                        "video": prediction.video,
                        "reason": prediction.error,
                    }
                )
                continue
            score = score_record(prediction.output, record)
            groups = [overall, tally, types.setdefault(record.problem_type, _Tally())]
            task = record_task(record, bench.name)
            if task is not None:
                groups.append(tasks.setdefault(task, _Tally()))
            if record.question_kind is not None:
                groups += [
                    kinds.setdefault(record.question_kind, _Tally()),
                    bench_kinds.setdefault(record.question_kind, _Tally()),
                ]
            for group in groups:
                group.add(score.score, score.partial)
        for key, value in bench_counts.items():
            counts[key] += value
        per_benchmark[bench.name] = {
            **tally.to_dict(),
            "counts": bench_counts,
            "tasks": _groups(tasks),
            "problem_types": _groups(types),
            "question_kinds": _groups(bench_kinds),
        }
    return {
        "overall": overall.to_dict(),
        "counts": counts,
        "benchmarks": per_benchmark,
        "question_kinds": _groups(kinds),
        "skipped": listed[SKIPPED],
        "failed": listed[FAILED],
    }


def write_metrics(metrics: dict[str, Any], out_dir: str | Path) -> Path:
    """Write metrics.json into a folder, atomically; returns its path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / METRICS_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(metrics, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def read_metrics(path: str | Path) -> dict[str, Any]:
    """Read a metrics.json (or the one in a folder)."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"metrics file not found: {path}")
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON (line {exc.lineno}): {exc.msg}") from None
    if not isinstance(metrics, dict) or "overall" not in metrics or "benchmarks" not in metrics:
        raise ValueError(f"{path}: not a metrics file of videothinker (no 'overall' / 'benchmarks')")
    return metrics


def format_percent(value: float | None) -> str:
    """An accuracy as a percentage with one decimal ("-" when nothing was scored)."""
    return "-" if value is None else f"{100 * value:.1f}"


def print_summary(metrics: dict[str, Any]) -> None:
    """Print accuracy overall, per benchmark and per question kind, with the counts, as a table."""
    from rich.table import Table

    from videothinker.console import print0

    table = Table(title="accuracy (%)")
    for column in ("group", "accuracy", "partial", "scored", "skipped", "failed", "pending"):
        table.add_column(column, justify="left" if column == "group" else "right")

    def row(name: str, group: dict[str, Any], counts: dict[str, int] | None = None) -> None:
        counts = counts or {}
        table.add_row(
            name,
            format_percent(group["accuracy"]),
            format_percent(group["partial"]),
            str(group["scored"]),
            *(str(counts[k]) if k in counts else "" for k in (SKIPPED, FAILED, "pending")),
        )

    row("overall", metrics["overall"], metrics["counts"])
    for name, bench in metrics["benchmarks"].items():
        row(name, bench, bench["counts"])
    for name, group in metrics["question_kinds"].items():
        row(f"kind: {name}", group)
    print0(table)
