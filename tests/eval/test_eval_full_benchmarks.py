"""The full shipped benchmark files: every record loads, every prompt builds, synthetic predictions
score as constructed. Skipped where the files are absent."""

from __future__ import annotations

from pathlib import Path

import pytest

from videothinker.data.prompts import eval_prompt
from videothinker.eval.benchmarks import load_benchmarks, record_task
from videothinker.eval.metrics import compute_metrics
from videothinker.eval.predictions import SCORED, Prediction, latest

FULL = Path("/work/shared/fixtures/benchmarks")
FILES = [FULL / "eval_mvbench.json", FULL / "eval_mmvu.json"]

pytestmark = pytest.mark.skipif(not all(f.is_file() for f in FILES), reason="full benchmark files absent")


def _output(record, i: int) -> str:
    """Right for every third record, in rotating answer styles; a wrong letter otherwise."""
    letters = record.letters
    if i % 3 == 0:
        option = next(o for o in record.options if o.startswith(record.solution + "."))
        styles = [f"<think>so</think><answer>{record.solution}</answer>", record.solution, option]
        return styles[i % len(styles)]
    wrong = [letter for letter in letters if letter != record.solution]
    return f"<answer>{wrong[0]}</answer>" if wrong else "<answer>none</answer>"


def test_full_files_load_prompt_and_score(tmp_path):
    benchmarks = load_benchmarks(FILES, tmp_path)
    assert {b.name: len(b.records) for b in benchmarks} == {"mvbench": 4000, "mmvu": 625}
    predictions, right = [], 0
    for bench in benchmarks:
        for i, record in enumerate(bench.records):
            prompt = eval_prompt(record)
            assert record.problem in prompt and all(option in prompt for option in record.options)
            assert record_task(record, bench.name) is not None
            output = _output(record, i)
            right += i % 3 == 0
            predictions.append(Prediction(bench.name, record.id, SCORED, output=output))
    metrics = compute_metrics(benchmarks, latest(predictions))
    assert metrics["counts"]["scored"] == 4625
    assert metrics["overall"]["accuracy"] == pytest.approx(right / 4625)
    mvbench = metrics["benchmarks"]["mvbench"]
    assert sorted(mvbench["tasks"]) == sorted(
        {
            "clevrer",
            "perception",
            "star",
            "ssv2_video",
            "sta",
            "vlnqa",
            "tvqa",
            "Moments_in_Time_Raw",
            "nturgbd",
            "scene_qa",
            "FunQA_test",
        }
    )
    assert sum(t["scored"] for t in mvbench["tasks"].values()) == 4000
    assert mvbench["tasks"]["clevrer"]["scored"] == 1000
    assert len(metrics["benchmarks"]["mmvu"]["tasks"]) == 27  # MMVU's disciplines
