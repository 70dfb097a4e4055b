"""The predictions store: append-only lines, last line per key wins, truncated lines cut off."""

from __future__ import annotations

import json

import pytest

from videothinker.eval.predictions import (
    FAILED,
    SCORED,
    SKIPPED,
    Prediction,
    PredictionStore,
    read_predictions,
)


def _pred(bench: str, rid: str, status: str = SCORED, output: str = "<answer>A</answer>") -> Prediction:
    return Prediction(benchmark=bench, id=rid, status=status, output=output if status == SCORED else "")


def test_lines_round_trip_and_reopen(tmp_path):
    path = tmp_path / "run" / "predictions.jsonl"
    store = PredictionStore(path)
    store.append(_pred("mvbench", "1"))
    store.append(_pred("mmvu", "1", FAILED))  # same id, other benchmark: another key
    reopened = PredictionStore(path)
    assert set(reopened.latest) == {("mvbench", "1"), ("mmvu", "1")}
    assert reopened.latest[("mvbench", "1")] == _pred("mvbench", "1")
    assert [json.loads(line)["benchmark"] for line in path.read_text().splitlines()] == ["mvbench", "mmvu"]


def test_last_line_per_key_wins(tmp_path):
    store = PredictionStore(tmp_path / "p.jsonl")
    store.append(_pred("b", "3", SKIPPED))
    store.append(_pred("b", "3", output="<answer>C</answer>"))
    assert PredictionStore(tmp_path / "p.jsonl").latest[("b", "3")].output == "<answer>C</answer>"
    assert len(read_predictions(tmp_path / "p.jsonl")) == 2


def test_done_means_scored_or_failed_unless_failures_are_retried(tmp_path):
    store = PredictionStore(tmp_path / "p.jsonl")
    store.append(_pred("b", "1"))
    store.append(_pred("b", "2", FAILED))
    store.append(_pred("b", "3", SKIPPED))
    assert [store.is_done(("b", i)) for i in "1234"] == [True, True, False, False]
    assert [store.is_done(("b", i), retry_failed=True) for i in "123"] == [True, False, False]


def test_truncated_last_line_is_cut_off_and_appending_continues_cleanly(tmp_path):
    path = tmp_path / "p.jsonl"
    store = PredictionStore(path)
    store.append(_pred("b", "1"))
    with path.open("a") as f:  # a write killed halfway
        f.write(_pred("b", "2").to_json()[:25])
    store = PredictionStore(path)
    assert set(store.latest) == {("b", "1")}
    store.append(_pred("b", "2"))
    assert [p.id for p in read_predictions(path)] == ["1", "2"]


def test_complete_last_line_without_newline_is_kept(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(_pred("b", "1").to_json())
    store = PredictionStore(path)
    store.append(_pred("b", "2"))
    assert [p.id for p in read_predictions(path)] == ["1", "2"]


def test_bad_line_inside_the_file_is_an_error_naming_the_line(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(_pred("b", "1").to_json() + "\n{oops\n" + _pred("b", "2").to_json() + "\n")
    with pytest.raises(ValueError, match=r"p.jsonl, line 2: not valid JSON"):
        PredictionStore(path)
    path.write_text(json.dumps({"benchmark": "b", "id": 1}) + "\n")
    with pytest.raises(ValueError, match=r"line 1: missing field\(s\) status"):
        read_predictions(path)
    path.write_text(json.dumps({"benchmark": "b", "id": 1, "status": "done"}) + "\n")
    with pytest.raises(ValueError, match="field 'status' must be one of"):
        read_predictions(path)


def test_missing_predictions_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="predictions file not found"):
        read_predictions(tmp_path / "nope.jsonl")
