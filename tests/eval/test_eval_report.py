"""Reports: tables built from metrics.json and training logs, PNG plots, and tolerance of odd logs."""

from __future__ import annotations

import json

import pytest

from videothinker.cli import main
from videothinker.eval.metrics import format_percent
from videothinker.eval.report import load_run, read_training_log, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _metrics(overall: float, mvbench: float, observational: float) -> dict:
    group = lambda acc: {"accuracy": acc, "partial": acc, "scored": 10}  # noqa: E731
    counts = {"records": 12, "scored": 10, "skipped": 1, "failed": 1, "pending": 0}
    return {
        "overall": group(overall),
        "counts": counts,
        "benchmarks": {
            "mvbench": {
                **group(mvbench),
                "counts": counts,
                "tasks": {"clevrer": group(mvbench / 2)},
                "problem_types": {},
                "question_kinds": {},
            }
        },
        "question_kinds": {"observational": group(observational)},
        "skipped": [],
        "failed": [],
    }


def _eval_run(path, *values):
    path.mkdir(parents=True)
    (path / "metrics.json").write_text(json.dumps(_metrics(*values)))
    return path


def _train_run(path, steps: int, extra_lines: str = ""):
    path.mkdir(parents=True)
    lines = [
        json.dumps(
            {
                "step": s,
                "reward": s / steps,
                "reward/observational": 0.5,
                "kl": 0.01 * s,
                "completion_length": 100 + s,
            }
        )
        for s in range(1, steps + 1)
    ]
    lines.insert(0, json.dumps({"event": "config", "beta": -0.01}))  # no step: not a training step
    (path / "log.jsonl").write_text("\n".join(lines) + "\n" + extra_lines)
    return path


def test_report_compares_eval_runs_and_plots(tmp_path):
    grpo = _eval_run(tmp_path / "grpo", 0.649, 0.6, 0.7)
    cdpo = _eval_run(tmp_path / "cdpo", 0.791, 0.609, 0.8)
    report = write_report([grpo, cdpo], tmp_path / "report", names=["GRPO", "CDPO"])
    text = report.read_text()
    assert "| group | GRPO | CDPO |" in text
    assert f"| overall | {format_percent(0.649)} | {format_percent(0.791)} |" in text
    assert f"| kind: observational | {format_percent(0.7)} | {format_percent(0.8)} |" in text
    assert f"| clevrer | {format_percent(0.3)} | {format_percent(0.609 / 2)} |" in text
    for png in ("accuracy_per_benchmark.png", "accuracy_per_kind.png"):
        assert f"]({png})" in text
        assert (tmp_path / "report" / png).read_bytes().startswith(PNG_MAGIC)
    assert "## Training" not in text


def test_report_of_training_logs_summarises_the_tail_and_plots_curves(tmp_path):
    # 20 steps: the last 10% are steps 19 and 20; reward s / 20 -> (0.95 + 1.0) / 2 = 0.975
    run = _train_run(tmp_path / "train", 20, extra_lines='{"step": 21, "rew')  # a line still being written
    text = write_report([run], tmp_path / "report").read_text()
    listing, summary = [line for line in text.splitlines() if line.startswith("| train |")]
    assert "training log" in listing
    assert summary.startswith("| train | 20 | 20 | 0.975 |")
    assert "reward/inferential" not in text  # a key no log has is left out
    assert (tmp_path / "report" / "training_curves.png").read_bytes().startswith(PNG_MAGIC)
    assert "## Accuracy" not in text


def test_training_log_tolerates_missing_keys_and_bad_lines(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"step": 1, "loss": 0.5}\nnot json\n["a list"]\n{"step": "two"}\n{"step": 3}\n')
    assert [e["step"] for e in read_training_log(path)] == [1, 3]
    run = tmp_path / "run"
    run.mkdir()
    (run / "log.jsonl").write_text('{"step": 1, "loss": 0.5}\n')  # nothing any panel draws
    text = write_report([run], tmp_path / "out").read_text()
    assert "training_curves.png" not in text


def test_mixed_runs_through_the_cli(tmp_path):
    ev = _eval_run(tmp_path / "a" / "run", 0.5, 0.5, 0.5)
    tr = _train_run(tmp_path / "b" / "run", 5)
    assert main(["report", str(ev), str(tr), "--out", str(tmp_path / "out")]) == 0
    text = (tmp_path / "out" / "report.md").read_text()
    assert "| run (1) |" in text and "| run (2) |" in text  # equal folder names made unique
    assert "## Accuracy" in text and "## Training" in text


def test_bad_run_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="run folder not found"):
        load_run(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="neither metrics.json"):
        load_run(tmp_path / "empty")
    with pytest.raises(ValueError, match="2 names for 1 run folders"):
        write_report([tmp_path / "empty"], tmp_path / "out", names=["a", "b"])
