"""The CLEVRER converter on small files in the official schema (tests/fixtures/clevrer).

The fixture's validation.json holds three scenes with questions of all four types. Its counterfactual
questions, with the collisions of their annotations, and the labels each rule must give:

scene 10000: cube(0)-red sphere(1), red sphere(1)-cyan rubber cylinder(2)
  q12 remove the cube: lists red sphere-rubber cylinder (in the video) as "wrong"  -> inferential / inferential
  q13 remove the green object (in no collision), "will not happen"                  -> observational / observational
  q14 remove the cyan rubber cylinder (ends the chain), choices match the video     -> observational / inferential
  q15 no correct choice                                                             -> dropped
scene 10001: blue sphere(1)-purple cube(3), yellow cube(0)-brown cylinder(2)
  q8  remove the blue object, "will not happen", choices match the video            -> observational / inferential
  q9  remove the purple object: blue sphere-yellow cube "correct", not in the video -> inferential / inferential
scene 10002: descriptive only, and no annotation (must not be needed)
(answer rule / object rule)
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from videothinker.cli import main
from videothinker.data.clevrer import (
    ClevrerError,
    convert,
    parse_choice,
    parse_description,
    parse_question,
    resolve,
    write_records,
)
from videothinker.data.records import load_records

FIXTURE = Path(__file__).parent.parent / "fixtures" / "clevrer"
ANSWER_LABELS = {
    "10000_12": "inferential",
    "10000_13": "observational",
    "10000_14": "observational",
    "10001_8": "observational",
    "10001_9": "inferential",
}
OBJECT_LABELS = {
    "10000_12": "inferential",
    "10000_13": "observational",
    "10000_14": "inferential",
    "10001_8": "inferential",
    "10001_9": "inferential",
}


@pytest.fixture
def clevrer(tmp_path) -> dict[str, Path]:
    """A copy of the fixture with (empty) videos in the official nested folders."""
    root = tmp_path / "clevrer"
    shutil.copytree(FIXTURE, root)
    videos = root / "videos" / "video_10000-11000"
    videos.mkdir(parents=True)
    for index in (10000, 10001, 10002):
        (videos / f"video_{index}.mp4").write_bytes(b"")
    return {
        "questions": root / "validation.json",
        "annotations": root / "annotations",
        "videos": root / "videos",
    }


def _edit_questions(path: Path, edit) -> None:
    scenes = json.loads(path.read_text())
    edit(scenes)
    path.write_text(json.dumps(scenes))


def test_parsing_of_descriptions_questions_and_choices():
    assert parse_description("the gray metal sphere") == {
        "color": "gray",
        "material": "metal",
        "shape": "sphere",
    }
    assert parse_description("The rubber object") == {"material": "rubber"}
    assert parse_question("What will not happen without the brown cube?") == ("the brown cube", True)
    assert parse_question("Which of the following will happen if the metal cylinder is removed?") == (
        "the metal cylinder",
        False,
    )
    assert parse_choice("The collision between the cube and the green object happens.") == (
        "the cube",
        "the green object",
    )
    assert parse_choice("the yellow sphere's colliding with the cylinder") == (
        "the yellow sphere",
        "the cylinder",
    )
    for bad in ("the red pyramid", "the red blue cube", "the object"):
        with pytest.raises(ValueError):
            parse_description(bad)
    with pytest.raises(ValueError):
        parse_choice("The cube enters the scene")
    with pytest.raises(ValueError):
        parse_question("What color is the cube?")


def test_resolve_is_unique_and_a_choice_cannot_mean_the_removed_object():
    objects = {
        0: {"color": "cyan", "material": "rubber", "shape": "cylinder"},
        1: {"color": "cyan", "material": "metal", "shape": "cylinder"},
        2: {"color": "red", "material": "metal", "shape": "sphere"},
    }
    assert resolve("the sphere", objects) == 2
    assert resolve("the cyan metal object", objects) == 1
    assert resolve("the cylinder", objects, exclude=0) == 1
    with pytest.raises(ValueError, match="2 objects"):
        resolve("the cylinder", objects)
    with pytest.raises(ValueError, match="no object"):
        resolve("the green object", objects)


@pytest.mark.parametrize(("rule", "labels"), [("answer", ANSWER_LABELS), ("object", OBJECT_LABELS)])
def test_labels_counts_and_records_of_the_fixture(clevrer, tmp_path, rule, labels):
    out = tmp_path / "out" / "records.json"
    records, report = convert(**clevrer, out=out, rule=rule)
    assert {r["problem_id"]: r["question_kind"] for r in records} == labels
    assert report.counterfactual == 6 and report.other_types == 6 and report.no_correct == 1
    assert report.kept["observational"] == list(labels.values()).count("observational")
    q14 = next(r for r in records if r["problem_id"] == "10000_14")
    assert q14["problem"] == (
        "Without the cyan rubber cylinder, what will happen?\nOptions:\n"
        "A. The gray cube collides with the red sphere\n"
        "B. The metal cylinder and the green object collide\n"
        "C. The red metal sphere collides with the green sphere"
    )
    assert q14["options"][0] == "A. The gray cube collides with the red sphere"
    assert q14["solution"] == "<answer>A</answer>"
    assert next(r for r in records if r["problem_id"] == "10001_9")["solution"] == "<answer>A,B</answer>"
    assert all(r["data_type"] == "video" and r["problem_type"] == "multiple choice" for r in records)


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_records_load_with_relative_video_paths_and_keep_question_kind(clevrer, tmp_path, suffix):
    out = tmp_path / "elsewhere" / f"records{suffix}"
    records, _ = convert(**clevrer, out=out)
    write_records(records, out)
    loaded = load_records(out)
    assert [r.question_kind for r in loaded] == [r["question_kind"] for r in records]
    assert all(not Path(r["video"]).is_absolute() for r in records)
    first = loaded[0]
    assert (
        Path(first.video).resolve() == (clevrer["videos"] / "video_10000-11000" / "video_10000.mp4").resolve()
    )
    # The embedded options were moved out of the problem, and agree with the listed ones.
    assert first.problem == "Which of the following will happen if the cube is removed?"
    assert first.options == records[0]["options"] and first.solution == "C"
    assert first.extra["scene_index"] == 10000 and first.extra["question_id"] == 12
    assert len(load_records(out, question_kind="inferential")) == 2


def test_absolute_paths_and_kind_filter(clevrer, tmp_path):
    records, report = convert(**clevrer, out=tmp_path / "r.json", absolute_paths=True, kind="inferential")
    assert [r["problem_id"] for r in records] == ["10000_12", "10001_9"]
    assert report.other_kind == 3
    assert all(Path(r["video"]).is_absolute() and Path(r["video"]).is_file() for r in records)


def test_flat_layout_gives_the_same_records(clevrer, tmp_path):
    flat = tmp_path / "flat"
    for kind in ("annotations", "videos"):
        (flat / kind).mkdir(parents=True)
        for f in clevrer[kind].rglob("*.*"):
            shutil.copy(f, flat / kind / f.name)
    nested, _ = convert(**clevrer, out=tmp_path / "a.json")
    flat_records, _ = convert(
        clevrer["questions"], flat / "annotations", flat / "videos", tmp_path / "b.json"
    )
    strip = [{k: v for k, v in r.items() if k != "video"} for r in nested]
    assert strip == [{k: v for k, v in r.items() if k != "video"} for r in flat_records]


@pytest.mark.parametrize(
    ("edit", "match", "reason"),
    [
        # "the sphere" matches the red and the green sphere.
        (
            lambda s: s[0]["questions"][4].update(
                question="Which of the following will happen if the sphere is removed?"
            ),
            r"validation\.json, scene 10000, question 12: removed object: .*'the sphere' matches 2 objects",
            "unresolved description",
        ),
        (
            lambda s: s[0]["questions"][5].update(
                question="Which of the following will happen if the purple cube is removed?"
            ),
            r"question 13: .*no object",
            "unresolved description",
        ),
        (
            lambda s: s[1]["questions"][1]["choices"][2].update(choice="The cylinder enters the scene"),
            r"scene 10001, question 8: choice 2: cannot read",
            "unreadable choice",
        ),
        (
            lambda s: s[1]["questions"][2]["choices"][0].update(
                choice="The gray sphere collides with the cylinder"
            ),
            r"scene 10001, question 9: choice 0: description 'the gray sphere' matches no object",
            "unresolved description",
        ),
        (
            lambda s: s[0]["questions"][6].update(question="What if the cube vanished?"),
            r"question 14: cannot find the removed object",
            "unreadable question",
        ),
        (
            lambda s: s[1].update(scene_index=10007, video_filename="video_10001.mp4"),
            r"scene 10007: annotation_10007.json not found",
            "missing annotation",
        ),
    ],
)
def test_bad_input_raises_or_is_skipped_and_counted(clevrer, tmp_path, edit, match, reason):
    _edit_questions(clevrer["questions"], edit)
    with pytest.raises(ClevrerError, match=match):
        convert(**clevrer, out=tmp_path / "r.json")
    records, report = convert(**clevrer, out=tmp_path / "r.json", skip_invalid=True)
    skipped = 2 if reason == "missing annotation" else 1  # a missing annotation loses the whole scene
    assert report.skipped == {reason: skipped}
    assert len(records) == 5 - skipped


def test_missing_video_and_corrupt_annotation(clevrer, tmp_path):
    (clevrer["videos"] / "video_10000-11000" / "video_10001.mp4").unlink()
    with pytest.raises(ClevrerError, match="scene 10001: video_10001.mp4 not found"):
        convert(**clevrer, out=tmp_path / "r.json")
    (clevrer["annotations"] / "annotation_10000-11000" / "annotation_10000.json").write_text("{}")
    _, report = convert(**clevrer, out=tmp_path / "r.json", skip_invalid=True)
    assert report.skipped == {"missing video": 2, "bad annotation": 4}


def test_cli_writes_records_and_prints_the_summary(clevrer, tmp_path, capsys):
    out = tmp_path / "records.jsonl"
    argv = [
        "data",
        "clevrer",
        "--questions",
        str(clevrer["questions"]),
        "--annotations",
        str(clevrer["annotations"]),
        "--videos",
        str(clevrer["videos"]),
        "--out",
        str(out),
        "--rule",
        "object",
    ]
    assert main(argv) == 0
    assert [r.question_kind for r in load_records(out)].count("observational") == 1
    printed = capsys.readouterr().err
    assert "observational: 1 (20.0%)" in printed and "dropped, no correct choice: 1" in printed
    _edit_questions(
        clevrer["questions"], lambda s: s[0]["questions"][4].update(question="Without the sphere?")
    )
    assert main(argv) == 1  # bad input: one clear line, no traceback
    assert "question 12" in capsys.readouterr().err
