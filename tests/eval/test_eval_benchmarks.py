"""Benchmark names, tasks per record, and id checks, on the shipped excerpts and small handmade files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from videothinker.data.records import RecordError, parse_record
from videothinker.eval.benchmarks import benchmark_name, load_benchmark, load_benchmarks, record_task

FIXTURES = Path(__file__).parents[1] / "fixtures" / "benchmarks"


def test_benchmark_name_strips_a_leading_eval_only():
    assert benchmark_name("x/eval_mvbench.json") == "mvbench"
    assert benchmark_name("VideoMME.jsonl") == "VideoMME"
    assert benchmark_name("my_eval_set.json") == "my_eval_set"
    assert benchmark_name("eval_.json") == "eval_"


def test_mvbench_task_is_the_folder_below_the_benchmark_folder():
    bench = load_benchmark(FIXTURES / "eval_mvbench.json", "/videos")
    tasks = {record_task(r, bench.name) for r in bench.records}
    folders = {json_path.split("/")[2] for json_path in (r.extra["video"] for r in bench.records)}
    assert tasks == folders  # every source folder of the excerpt, nothing else
    by_id = {r.id: r for r in bench.records}
    assert record_task(by_id["1201"], "mvbench") == "clevrer"
    assert record_task(by_id["1601"], "mvbench") == "tvqa"  # a frame record


def test_mmvu_task_is_the_discipline_folder():
    bench = load_benchmark(FIXTURES / "eval_mmvu.json")
    for record in bench.records:
        # "/yale-nlp/MMVU/videos/<Discipline>/<n>.mp4": the generic "videos" folder is passed over.
        assert record_task(record, "mmvu") == record.extra["video"].split("/")[4]


def test_explicit_task_field_wins_over_the_path():
    record = parse_record(
        {
            "problem": "?",
            "options": ["A. x", "B. y"],
            "solution": "A",
            "task_type": "Temporal Reasoning",
            "question_type": "ignored: task_type comes first",
            "video": "/videomme/long/v.mp4",
        }
    )
    assert record_task(record, "videomme") == "Temporal Reasoning"
    record = parse_record(
        {"problem": "?", "options": ["A. x", "B. y"], "solution": "A", "question_type": "SR"}
    )
    assert record_task(record, "holmes") == "SR"


def test_no_task_when_neither_field_nor_benchmark_folder():
    record = parse_record(
        {"problem": "?", "options": ["A. x", "B. y"], "solution": "A", "video": "clips/v.mp4"}
    )
    assert record_task(record, "mvbench") is None
    assert (
        record_task(parse_record({"problem": "?", "options": ["A. x", "B. y"], "solution": "A"}), "b") is None
    )


def test_duplicate_ids_in_one_file_are_an_error_naming_the_record(tmp_path):
    path = tmp_path / "eval_dup.json"
    raw = {"problem": "?", "options": ["A. x", "B. y"], "solution": "A"}
    path.write_text(
        json.dumps([{**raw, "problem_id": 7}, {**raw, "problem_id": 8}, {**raw, "problem_id": 7}])
    )
    with pytest.raises(
        RecordError, match=r"eval_dup.json, record 2: duplicate record id '7' \(also record 0\)"
    ):
        load_benchmark(path)


def test_two_files_with_one_benchmark_name_are_refused(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    raw = [{"problem": "?", "options": ["A. x", "B. y"], "solution": "A"}]
    for folder in ("a", "b"):
        (tmp_path / folder / "eval_x.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="same benchmark name 'x'"):
        load_benchmarks([tmp_path / "a" / "eval_x.json", tmp_path / "b" / "eval_x.json"])


def test_excerpts_are_verbatim_records_of_the_full_files():
    full_dir = Path("/work/shared/fixtures/benchmarks")
    if not full_dir.is_dir():
        pytest.skip("full benchmark files absent")
    for name in ("eval_mvbench.json", "eval_mmvu.json"):
        full = {r["problem_id"]: r for r in json.loads((full_dir / name).read_text())}
        excerpt = json.loads((FIXTURES / name).read_text())
        assert len(excerpt) >= 20
        assert all(full[r["problem_id"]] == r for r in excerpt)
