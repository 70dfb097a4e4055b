"""Reports comparing runs: report.md with accuracy tables and training summaries, plus PNG plots.

A run folder is an evaluation run (it holds metrics.json, see `videothinker.eval.metrics`), a training
run (it holds log.jsonl: one JSON object per logged step, with keys such as step, loss, reward,
reward/accuracy, reward/format, reward/observational, reward/inferential, kl, clip_fraction,
completion_length), or both. Logs are read tolerantly: any key may be missing, lines without a numeric
step are ignored, and a truncated last line (a run still writing) is dropped.

`write_report(run_dirs, out_dir, names=None)` is the library entry point (the demo calls it);
`videothinker report` wraps it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from videothinker.console import warn
from videothinker.eval.metrics import METRICS_FILE, format_percent, read_metrics
from videothinker.eval.plots import TRAINING_PANELS, bar_chart, training_curves

LOG_FILE = "log.jsonl"
REPORT_FILE = "report.md"
# Training summaries average the last 10% of logged steps (at least one), so one noisy step does not
# stand for the end of the run.
TAIL_FRACTION = 0.1


@dataclass
class Run:
    """One run folder as the report sees it.

    Attributes:
        name: label in tables and legends (the folder name unless given).
        path: the folder.
        metrics: its metrics.json, or None for a training-only run.
        log: its training log entries, each with a numeric "step" (empty for an evaluation-only run).
    """

    name: str
    path: Path
    metrics: dict[str, Any] | None = None
    log: list[dict[str, Any]] = field(default_factory=list)


def read_training_log(path: str | Path) -> list[dict[str, Any]]:
    """Entries of a training log.jsonl that carry a numeric step, in file order."""
    path = Path(path)
    lines = path.read_text(encoding="utf-8").split("\n")
    entries = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            if lineno == len(lines):  # the last line of a log still being written
                continue
            warn(f"{path}, line {lineno}: not valid JSON; ignored")
            continue
        if isinstance(entry, dict) and isinstance(entry.get("step"), int | float):
            entries.append(entry)
    return entries


def load_run(path: str | Path, name: str | None = None) -> Run:
    """Read a run folder (metrics.json and / or log.jsonl)."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"run folder not found: {path}")
    has_metrics, has_log = (path / METRICS_FILE).is_file(), (path / LOG_FILE).is_file()
    if not has_metrics and not has_log:
        raise ValueError(f"{path} holds neither {METRICS_FILE} (an eval run) nor {LOG_FILE} (a training run)")
    return Run(
        name=name or path.name,
        path=path,
        metrics=read_metrics(path) if has_metrics else None,
        log=read_training_log(path / LOG_FILE) if has_log else [],
    )


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _accuracy_rows(runs: list[Run]) -> tuple[list[str], list[str], list[list[str]]]:
    """Rows of the comparison table (overall, each benchmark, each question kind); returns the
    benchmark names, the kind names and the rows."""
    benchmarks = sorted({b for r in runs for b in r.metrics["benchmarks"]})
    kinds = sorted({k for r in runs for k in r.metrics["question_kinds"]})

    def cell(group: dict[str, Any] | None) -> str:
        return "-" if group is None else format_percent(group["accuracy"])

    rows = [["overall"] + [cell(r.metrics["overall"]) for r in runs]]
    rows += [[b] + [cell(r.metrics["benchmarks"].get(b)) for r in runs] for b in benchmarks]
    rows += [[f"kind: {k}"] + [cell(r.metrics["question_kinds"].get(k)) for r in runs] for k in kinds]
    return benchmarks, kinds, rows


def _tail_mean(entries: list[dict[str, Any]], key: str) -> float | None:
    values = [float(e[key]) for e in entries if isinstance(e.get(key), int | float) and math.isfinite(e[key])]
    if not values:
        return None
    tail = values[-max(1, int(len(values) * TAIL_FRACTION)) :]
    return sum(tail) / len(tail)


def _eval_section(runs: list[Run], out_dir: Path) -> list[str]:
    benchmarks, kinds, rows = _accuracy_rows(runs)
    parts = ["## Accuracy (%)", "", _md_table(["group"] + [r.name for r in runs], rows), ""]
    count_rows = [
        [r.name]
        + [str(r.metrics["counts"].get(k, 0)) for k in ("records", "scored", "skipped", "failed", "pending")]
        for r in runs
    ]
    parts += ["Records per run (skipped and failed records count neither as right nor as wrong):", ""]
    parts += [_md_table(["run", "records", "scored", "skipped", "failed", "pending"], count_rows), ""]
    for bench in benchmarks:
        tasks = sorted({t for r in runs for t in r.metrics["benchmarks"].get(bench, {}).get("tasks", {})})
        if not tasks:
            continue
        task_rows = [
            [t]
            + [
                format_percent(
                    r.metrics["benchmarks"].get(bench, {}).get("tasks", {}).get(t, {}).get("accuracy")
                )
                for r in runs
            ]
            for t in tasks
        ]
        parts += [
            f"### {bench}: accuracy per task (%)",
            "",
            _md_table(["task"] + [r.name for r in runs], task_rows),
            "",
        ]
    groups = ["overall", *benchmarks]
    series = {
        r.name: [r.metrics["overall"]["accuracy"]]
        + [r.metrics["benchmarks"].get(b, {}).get("accuracy") for b in benchmarks]
        for r in runs
    }
    if bar_chart(out_dir / "accuracy_per_benchmark.png", "accuracy per benchmark", groups, series):
        parts += ["![accuracy per benchmark](accuracy_per_benchmark.png)", ""]
    if kinds:
        series = {
            r.name: [r.metrics["question_kinds"].get(k, {}).get("accuracy") for k in kinds] for r in runs
        }
        if bar_chart(out_dir / "accuracy_per_kind.png", "accuracy per question kind", kinds, series):
            parts += ["![accuracy per question kind](accuracy_per_kind.png)", ""]
    return parts


def _training_section(runs: list[Run], out_dir: Path) -> list[str]:
    keys = [k for panel in TRAINING_PANELS.values() for k in panel]
    keys = [k for k in keys if any(_tail_mean(r.log, k) is not None for r in runs)]
    rows = []
    for run in runs:
        steps = [e["step"] for e in run.log]
        means = [_tail_mean(run.log, k) for k in keys]
        rows.append(
            [run.name, str(len(steps)), f"{max(steps):g}"] + ["-" if m is None else f"{m:.4g}" for m in means]
        )
    parts = [
        "## Training",
        "",
        f"Figures are means over the last {TAIL_FRACTION:.0%} of logged steps.",
        "",
        _md_table(["run", "logged steps", "last step", *keys], rows),
        "",
    ]
    if training_curves(out_dir / "training_curves.png", {r.name: r.log for r in runs}):
        parts += ["![training curves](training_curves.png)", ""]
    return parts


def write_report(
    run_dirs: list[str | Path],
    out_dir: str | Path,
    names: list[str] | None = None,
    *,
    title: str = "videothinker report",
    intro: str | None = None,
) -> Path:
    """Write ``out_dir``/report.md (tables) and its PNG plots comparing the runs; returns report.md.

    Args:
        run_dirs: evaluation and / or training run folders.
        out_dir: where report.md and the plots go (created if needed).
        names: labels of the runs (default: folder names, made unique).
        title: the report's heading.
        intro: markdown placed under the heading, before the tables (e.g. what was run and why).
    """
    if not run_dirs:
        raise ValueError("write_report needs at least one run folder")
    if names is not None and len(names) != len(run_dirs):
        raise ValueError(f"got {len(names)} names for {len(run_dirs)} run folders")
    if names is None:
        names = [Path(d).name or str(d) for d in run_dirs]
        names = [n if names.count(n) == 1 else f"{n} ({i + 1})" for i, n in enumerate(names)]
    runs = [load_run(d, n) for d, n in zip(run_dirs, names)]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    parts = [f"# {title}", ""]
    if intro:
        parts += [intro.rstrip("\n"), ""]
    parts += [
        _md_table(
            ["run", "folder", "contents"],
            [
                [
                    r.name,
                    str(r.path),
                    ", ".join(
                        x for x, present in (("evaluation", r.metrics), ("training log", r.log)) if present
                    )
                    or "empty training log",
                ]
                for r in runs
            ],
        ),
        "",
    ]
    evaluated = [r for r in runs if r.metrics is not None]
    trained = [r for r in runs if r.log]
    if evaluated:
        parts += _eval_section(evaluated, out_dir)
    if trained:
        parts += _training_section(trained, out_dir)
    path = out_dir / REPORT_FILE
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
