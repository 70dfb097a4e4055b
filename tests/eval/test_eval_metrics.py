"""metrics.json contents, worked by hand on two tiny benchmarks."""

from __future__ import annotations

import json

import pytest

from videothinker.data.records import parse_record
from videothinker.eval.benchmarks import Benchmark
from videothinker.eval.metrics import compute_metrics, read_metrics, write_metrics
from videothinker.eval.predictions import FAILED, SCORED, SKIPPED, Prediction, latest


def _mc(rid: int, solution: str, task: str, kind: str | None = None) -> dict:
    raw = {
        "problem_id": rid,
        "problem": "?",
        "options": ["A. x", "B. y", "C. z"],
        "solution": solution,
        "video": f"/Bench/{task}/{rid}.mp4",
    }
    return {**raw, "question_kind": kind} if kind else raw


def _benchmarks() -> list[Benchmark]:
    a = [_mc(1, "A", "t1"), _mc(2, "B", "t1"), _mc(3, "C", "t2"), _mc(4, "A", "t2"), _mc(5, "A", "t2")]
    b = [
        _mc(1, "A", "t1", "observational"),
        _mc(2, "A,C", "t1", "observational"),
        _mc(3, "B", "t1", "inferential"),
        _mc(4, "B", "t1", "inferential"),
        {"problem_id": 5, "problem": "how far?", "problem_type": "regression", "solution": "10"},
    ]
    return [
        Benchmark("bench", "a.json", [parse_record(r, index=i) for i, r in enumerate(a)]),
        Benchmark("other", "b.json", [parse_record(r, index=i) for i, r in enumerate(b)]),
    ]


def _predictions() -> dict:
    def p(bench, rid, output="", status=SCORED, error=""):
        return Prediction(bench, str(rid), status, output=output, video=f"v{rid}", error=error)

    return latest(
        [
            p("bench", 1, "<answer>A</answer>"),  # right
            p("bench", 2, "B. y"),  # right (untagged "B. text")
            p("bench", 3, "<answer>A</answer>"),  # wrong
            p("bench", 4, status=SKIPPED, error="video not found: v4"),
            p("bench", 5, status=FAILED, error="v5: cannot decode"),
            p("other", 1, "<answer>A</answer>"),  # right, observational
            p("other", 2, "<answer>A</answer>"),  # 0 (partial 1/2), observational
            p("other", 3, "<answer>B</answer>"),  # right, inferential
            # other 4: no prediction (pending)
            p("other", 5, "<answer>12</answer>"),  # regression: MRA 0.6
            p("gone", 1, "<answer>A</answer>"),  # a benchmark not given: ignored
        ]
    )


def test_metrics_by_hand():
    m = compute_metrics(_benchmarks(), _predictions())
    # bench: scores 1, 1, 0 -> 2/3; other: 1, 0, 1, 0.6 -> 2.6/4; overall (1+1+0+1+0+1+0.6)/7 = 4.6/7
    assert m["overall"]["accuracy"] == pytest.approx(4.6 / 7)
    assert m["overall"]["partial"] == pytest.approx(5.1 / 7)  # other 2 earns 1/2 partial
    assert m["overall"]["scored"] == 7
    assert m["counts"] == {"records": 10, "scored": 7, "skipped": 1, "failed": 1, "pending": 1}
    bench, other = m["benchmarks"]["bench"], m["benchmarks"]["other"]
    assert bench["accuracy"] == pytest.approx(2 / 3)
    assert bench["counts"] == {"records": 5, "scored": 3, "skipped": 1, "failed": 1, "pending": 0}
    assert bench["tasks"] == {
        "t1": {"accuracy": 1.0, "partial": 1.0, "scored": 2},
        "t2": {"accuracy": 0.0, "partial": 0.0, "scored": 1},
    }
    assert other["accuracy"] == pytest.approx(2.6 / 4)
    assert other["counts"]["pending"] == 1
    assert set(other["problem_types"]) == {"multiple choice", "regression"}
    assert other["problem_types"]["regression"]["accuracy"] == pytest.approx(0.6)
    assert m["question_kinds"] == {
        "inferential": {"accuracy": 1.0, "partial": 1.0, "scored": 1},
        "observational": {"accuracy": 0.5, "partial": 0.75, "scored": 2},
    }
    assert other["question_kinds"] == m["question_kinds"]
    assert bench["question_kinds"] == {}
    assert m["skipped"] == [{"benchmark": "bench", "id": "4", "video": "v4", "reason": "video not found: v4"}]
    assert m["failed"] == [{"benchmark": "bench", "id": "5", "video": "v5", "reason": "v5: cannot decode"}]


def test_metrics_rescore_raw_outputs_not_stored_scores():
    predictions = _predictions()
    predictions[("bench", "3")].score = 1.0  # a stale stored score is ignored
    assert compute_metrics(_benchmarks(), predictions)["benchmarks"]["bench"]["accuracy"] == pytest.approx(
        2 / 3
    )


def test_nothing_scored_gives_null_accuracy():
    m = compute_metrics(_benchmarks(), {})
    assert m["overall"] == {"accuracy": None, "partial": None, "scored": 0}
    assert m["counts"]["pending"] == 10


def test_write_and_read_round_trip(tmp_path):
    m = compute_metrics(_benchmarks(), _predictions())
    path = write_metrics(m, tmp_path / "run")
    assert json.loads(path.read_text()) == m
    assert read_metrics(tmp_path / "run") == m
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="not a metrics file"):
        read_metrics(tmp_path / "bad.json")
