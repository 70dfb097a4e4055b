"""Records of the Video-R1 family: every member loads into one shape; bad input gets a clear error."""

import json
from pathlib import Path

import pytest

from videothinker.data.prompts import eval_prompt, question_text, train_prompt
from videothinker.data.records import (
    Record,
    RecordError,
    load_records,
    load_records_report,
    parse_record,
    save_records,
    split_embedded_options,
)

FIXTURES = Path(__file__).parents[1] / "fixtures"
FAMILY = FIXTURES / "records" / "family.jsonl"
SHARED = Path(__file__).parents[3] / "shared" / "fixtures" / "benchmarks"


@pytest.fixture(scope="module")
def family() -> dict[str, Record]:
    return {r.id: r for r in load_records(FAMILY, video_root="/data")}


def test_lettered_options_and_tagged_solution(family):
    r = family["1"]
    assert r.options == ["A. The cube moves", "B. The sphere moves"]
    assert r.letters == ["A", "B"]
    assert r.solution == "B" and r.tagged_solution == "<answer>B</answer>"
    assert r.problem_type == "multiple choice" and r.data_type == "video"


def test_options_embedded_in_problem_with_no_list(family):
    r = family["2"]
    assert r.problem == "Which of the following will happen if the red cube is removed?"
    assert [o[0] for o in r.options] == ["A", "B", "C"]
    assert r.options[1] == "B. The cyan sphere collides with the metal cube"
    assert r.solution == "A,C"
    assert r.question_kind == "inferential"


def test_embedded_options_with_bare_list_and_answer_letter(family):
    r = family["3"]
    # problem_type missing means multiple choice; the bare list gets letters; "answer" stands in for solution.
    assert r.problem_type == "multiple choice"
    assert r.problem == "Which color is the moving object?"
    assert r.options == ["A. red", "B. blue", "C. green"]
    assert r.solution == "C"


def test_multi_answer_solution_is_normalised(family):
    assert family["4"].solution == "A,C"
    assert family["4"].data_type == "frame"
    assert family["4"].extra["fps"] == 3


def test_answer_given_as_option_text(family):
    assert family["9"].solution == "B"


@pytest.mark.parametrize(
    ("rid", "ptype", "solution"),
    [
        ("5", "numerical", "3"),
        ("6", "regression", "2.5"),
        ("7", "OCR", "STOP"),
        ("8", "free-form", "The cube slides left."),
    ],
)
def test_other_problem_types(family, rid, ptype, solution):
    r = family[rid]
    assert (r.problem_type, r.solution, r.options) == (ptype, solution, [])


def test_video_paths_resolve_against_root(family, tmp_path):
    assert family["1"].video == "/data/lab/video_00001.mp4"  # a leading "/" is relative to the root
    assert family["2"].video == "/data/videos/video_00002.mp4"
    assert family["7"].video == "/data/img7.png" and family["7"].data_type == "image"
    # Without a root, relative paths resolve against the data file's folder.
    r = load_records(FAMILY)[1]
    assert r.video == str(FAMILY.parent / "videos/video_00002.mp4")


def test_round_trip_through_save(family, tmp_path):
    out = tmp_path / "out.jsonl"
    save_records(family.values(), out)
    again = {r.id: r for r in load_records(out, video_root="/")}
    for rid, r in family.items():
        assert again[rid].problem == r.problem and again[rid].options == r.options
        assert again[rid].solution == r.solution and again[rid].question_kind == r.question_kind
    json_out = tmp_path / "out.json"
    save_records(family.values(), json_out)
    assert len(json.loads(json_out.read_text())) == len(family)


def test_question_kind_filter():
    kinds = [r.question_kind for r in load_records(FAMILY, question_kind="inferential")]
    assert kinds == ["inferential"]


def test_split_embedded_options_needs_consecutive_letters():
    assert split_embedded_options("Q?\nA. x\nC. y") == ("Q?\nA. x\nC. y", [])
    assert split_embedded_options("Q?\nA. only one") == ("Q?\nA. only one", [])


@pytest.mark.parametrize(
    ("raw", "field", "fragment"),
    [
        (
            {"problem": "Q", "options": ["A. x", "B. y"], "solution": "<answer>D</answer>"},
            "solution",
            "not among",
        ),
        (
            {"problem": "Q", "options": ["A. x"], "solution": "<answer>maybe</answer>"},
            "solution",
            "option letters",
        ),
        ({"problem": "Q", "solution": "A"}, "options", "needs options"),
        ({"problem": "", "options": ["A. x"], "solution": "A"}, "problem", "missing"),
        (
            {"problem": "Q", "options": ["A. x"], "solution": "A", "problem_type": "essay"},
            "problem_type",
            "unknown",
        ),
        ({"problem": "Q", "problem_type": "numerical", "solution": "many"}, "solution", "not a number"),
        (
            {"problem": "Q", "options": ["A. x"], "solution": "A", "data_type": "audio"},
            "data_type",
            "unknown",
        ),
        (
            {"problem": "Q", "options": ["A. x"], "solution": "A", "question_kind": "causal"},
            "question_kind",
            "expected",
        ),
        ({"problem": "Q", "options": "A. x", "solution": "A"}, "options", "expected a list"),
        ({"problem": "Q", "options": ["A. x", "B. y"]}, "solution", "no correct choice"),
    ],
)
def test_bad_records_name_file_index_and_field(raw, field, fragment):
    with pytest.raises(RecordError) as info:
        parse_record(raw, source="bench.json", index=7)
    message = str(info.value)
    assert "bench.json, record 7" in message and f"field '{field}'" in message and fragment in message
    assert info.value.field_name == field


def test_bad_file_errors(tmp_path):
    with pytest.raises(RecordError, match="file not found"):
        load_records(tmp_path / "missing.json")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"problem": "Q", "options": ["A. x"], "solution": "A"}\n{not json\n')
    with pytest.raises(RecordError, match="line 2 is not valid JSON"):
        load_records(bad)
    mixed = tmp_path / "mixed.json"
    mixed.write_text(json.dumps([{"problem": "Q", "options": ["A. x"], "solution": "A"}, {"problem": "Q"}]))
    with pytest.raises(RecordError, match="record 1"):
        load_records(mixed)
    records, errors = load_records_report(mixed, skip_invalid=True)
    assert len(records) == 1 and len(errors) == 1 and errors[0].index == 1


def test_prompts(family):
    r = family["2"]
    text = question_text(r)
    assert text.endswith(
        "Options:\nA. The sphere and the cylinder collide\nB. The cyan sphere collides with the "
        "metal cube\nC. The cube and the cylinder collide"
    )
    assert "(letters separated by , if multiple)" in train_prompt(r)
    assert "(select letters separated by ,)" in train_prompt(r, "auto")
    assert "(select one letter)" in train_prompt(family["1"], "auto")
    assert eval_prompt(family["1"]).endswith(
        "Please provide only the single option letter (e.g., A, B, C, D, etc.) "
        "within the <answer> </answer> tags."
    )
    assert "all correct option letters" in eval_prompt(r)  # a multi-answer record is not asked for one letter
    assert "numerical value" in eval_prompt(family["5"]) and "Options" not in eval_prompt(family["5"])
    with pytest.raises(ValueError, match="unknown training template"):
        train_prompt(r, "triple")


def _benchmark_files():
    shipped = sorted((FIXTURES / "benchmarks").glob("*.json"))
    full = sorted(SHARED.glob("*.json")) if SHARED.is_dir() else []
    return shipped + full


@pytest.mark.parametrize("path", _benchmark_files(), ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_benchmark_files_load_and_build_prompts(path):
    raw = json.loads(path.read_text())
    records = load_records(path, video_root="/videos")
    assert len(records) == len(raw)
    for record, item in zip(records, raw):
        assert record.solution == item["solution"].removeprefix("<answer>").removesuffix("</answer>")
        assert record.video == "/videos" + item["video"]
        assert item["problem"].strip() in eval_prompt(record) and train_prompt(record)


def test_full_benchmark_files_present_or_skipped():
    if not SHARED.is_dir():
        pytest.skip("../shared is absent (a user's clone); the shipped excerpts cover the loader")
    assert {p.name for p in SHARED.glob("*.json")} >= {"eval_mmvu.json", "eval_mvbench.json"}


def test_shuffle_videos_gives_every_scene_another_scenes_video():
    from videothinker.data.records import Record, shuffle_videos

    videos = [f"v{i % 5}" for i in range(12)] + [None]  # 5 scenes, several questions each, one text-only
    records = [Record(f"q{i}", [], "1", "numerical", v, "video", id=str(i)) for i, v in enumerate(videos)]
    shuffled = shuffle_videos(records, seed=3)
    assert [r.id for r in shuffled] == [r.id for r in records] and shuffled[-1].video is None
    new = {r.video: s.video for r, s in zip(records, shuffled) if r.video is not None}
    # one mapping per scene (questions of a scene stay together), a permutation, no scene keeps its own
    assert all(s.video == new[r.video] for r, s in zip(records, shuffled) if r.video is not None)
    assert sorted(new.values()) == sorted(new) and all(a != b for a, b in new.items())
    assert [r.video for r in shuffle_videos(records, seed=3)] == [r.video for r in shuffled]
    assert [r.video for r in shuffle_videos(records, seed=4)] != [r.video for r in shuffled]
    # media types are not mixed
    mixed = records[:2] + [
        Record("img", [], "1", "numerical", "i0", "image"),
        Record("i", [], "1", "numerical", "i1", "image"),
    ]
    assert {r.video for r in shuffle_videos(mixed, seed=0) if r.data_type == "image"} == {"i0", "i1"}
