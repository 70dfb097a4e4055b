"""Generated lab sets: the official schema, the requested observational share through the converter,
answers that come from re-simulating without the removed object, determinism, the CLI and the split."""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from pathlib import Path

import av
import numpy as np
import pytest

from videothinker.cli import main
from videothinker.data.clevrer import (
    COLORS,
    MATERIALS,
    SHAPES,
    convert,
    parse_choice,
    parse_question,
    resolve,
)
from videothinker.data.records import load_records
from videothinker.lab import LabConfig, generate_lab, split_by_scene
from videothinker.lab.physics import simulate

QUESTION_RE = re.compile(
    r"^(Which of the following will (not )?happen if the [a-z ]+ is removed\?|Without the [a-z ]+, what will (not )?happen\?)$"
)
CHOICE_RE = re.compile(r"^The [a-z ]+ (collides with the [a-z ]+|and the [a-z ]+ collide)$")
OBJECT_KEYS = {"object_id", "location", "orientation", "velocity", "angular_velocity", "inside_camera_view"}


def _touch_videos(out: Path, scenes) -> None:
    """Empty stand-ins for the videos of a set generated without them (the converter checks they exist)."""
    for index in scenes:
        (out / "videos").mkdir(exist_ok=True)
        (out / "videos" / f"video_{index:05d}.mp4").write_bytes(b"")


def _check_annotation(a: dict, frames: int, radius: float) -> None:
    assert set(a) == {"scene_index", "video_filename", "object_property", "motion_trajectory", "collision"}
    assert a["video_filename"] == f"video_{a['scene_index']:05d}.mp4"
    props = a["object_property"]
    assert 3 <= len(props) <= 6 and [p["object_id"] for p in props] == list(range(len(props)))
    for p in props:
        assert set(p) == {"object_id", "color", "material", "shape"}
        assert p["color"] in COLORS and p["material"] in MATERIALS and p["shape"] in SHAPES
    assert len({(p["color"], p["material"], p["shape"]) for p in props}) == len(props)  # unique descriptions
    assert [f["frame_id"] for f in a["motion_trajectory"]] == list(range(frames))
    for f in a["motion_trajectory"]:
        assert [o["object_id"] for o in f["objects"]] == list(range(len(props)))
        for o in f["objects"]:
            assert set(o) == OBJECT_KEYS and isinstance(o["inside_camera_view"], bool)
            assert all(len(o[k]) == 3 for k in ("location", "orientation", "velocity", "angular_velocity"))
    for c in a["collision"]:
        assert set(c) == {"object_ids", "frame_id", "location"} and len(c["location"]) == 3
        i, j = c["object_ids"]
        assert 0 <= i < j < len(props) and 0 <= c["frame_id"] < frames
        # The two objects touch at the collision (within the motion of half a frame each).
        objs = a["motion_trajectory"][c["frame_id"]]["objects"]
        gap = np.linalg.norm(np.subtract(objs[i]["location"], objs[j]["location"]))
        assert abs(gap - 2 * radius) < 0.25


def _check_questions(entries: list, indices: list[int]) -> int:
    assert [e["scene_index"] for e in entries] == indices
    count = 0
    for e in entries:
        assert set(e) == {"scene_index", "video_filename", "questions"}
        assert [q["question_id"] for q in e["questions"]] == list(range(len(e["questions"])))
        for q in e["questions"]:
            assert set(q) == {"question_id", "question", "question_type", "program", "choices"}
            assert q["question_type"] == "counterfactual" and QUESTION_RE.match(q["question"]), q["question"]
            assert q["program"][-1] == ("negate" if " not " in q["question"] else "belong_to")
            assert 3 <= len(q["choices"]) <= 4
            for k, c in enumerate(q["choices"]):
                assert set(c) == {"choice_id", "choice", "program", "answer"} and c["choice_id"] == k
                assert CHOICE_RE.match(c["choice"]) and c["answer"] in ("correct", "wrong"), c
                assert c["program"][0] == "all_events" and c["program"][-1] == "unique"
            assert any(c["answer"] == "correct" for c in q["choices"])
            count += 1
    return count


@pytest.fixture(scope="module")
def big_sets(tmp_path_factory) -> dict[float, Path]:
    """Two sets without videos, large enough for 500+ questions each."""
    sets = {}
    for ratio, seed in ((0.74, 3), (0.3, 4)):
        out = tmp_path_factory.mktemp(f"lab{ratio}")
        generate_lab(out, LabConfig(scenes=360, observational_ratio=ratio, seed=seed, videos=False))
        _touch_videos(out, range(360))
        sets[ratio] = out
    return sets


@pytest.mark.parametrize("ratio", [0.74, 0.3])
def test_converter_share_matches_the_requested_ratio_under_both_rules(big_sets, ratio):
    out = big_sets[ratio]
    args = (out / "questions.json", out / "annotations", out / "videos", out / "records.json")
    records, report = convert(*args)
    assert report.total >= 500 and report.no_correct == 0 and not report.skipped
    assert abs(report.kept["observational"] / report.total - ratio) <= 0.02
    # In the lab an observational question always removes an object that takes part in no collision.
    by_object, _ = convert(*args, rule="object")
    assert [r["question_kind"] for r in by_object] == [r["question_kind"] for r in records]


def test_schema_and_answers_from_resimulation(big_sets):
    out, config = big_sets[0.74], LabConfig()
    entries = json.loads((out / "questions.json").read_text())
    assert _check_questions(entries, list(range(360))) >= 500
    lost = new = 0
    for entry in entries:
        a = json.loads((out / "annotations" / f"annotation_{entry['scene_index']:05d}.json").read_text())
        _check_annotation(a, config.frames, config.world.radius)
        objects = {p["object_id"]: p for p in a["object_property"]}
        factual = {frozenset(c["object_ids"]) for c in a["collision"]}
        start = a["motion_trajectory"][0]["objects"]
        for q in entry["questions"]:
            removed_text, negated = parse_question(q["question"])
            removed = resolve(removed_text, objects)
            keep = [o for o in start if o["object_id"] != removed]
            replay = simulate(
                np.array([o["location"][:2] for o in keep]),
                np.array([o["velocity"][:2] for o in keep]),
                [o["object_id"] for o in keep],
                radius=config.world.radius,
                n_frames=config.frames,
                fps=config.fps,
            ).collision_pairs()
            observational = True
            for c in q["choices"]:
                pair = frozenset(resolve(d, objects, exclude=removed) for d in parse_choice(c["choice"]))
                assert (c["answer"] == "correct") == ((pair in replay) != negated)
                observational &= (pair in factual) == (pair in replay)
                lost += pair in factual and pair not in replay
                new += pair in replay and pair not in factual
            if observational:
                # The video answers it: correct = the video's collisions (or, negated, the others).
                assert all(
                    (c["answer"] == "correct") == ((p in factual) != negated)
                    for c, p in zip(
                        q["choices"],
                        (
                            frozenset(resolve(d, objects, exclude=removed) for d in parse_choice(c["choice"]))
                            for c in q["choices"]
                        ),
                    )
                )
                assert not any(removed in p for p in factual)
    # Inferential choices include collisions the removal cancels and collisions it causes.
    assert lost >= 20 and new >= 20


def test_same_seed_same_files_and_workers_do_not_change_them(tmp_path):
    runs = {}
    for name, seed, workers in (("a", 11, 1), ("b", 11, 2), ("c", 12, 1)):
        generate_lab(tmp_path / name, LabConfig(scenes=24, seed=seed, videos=False, workers=workers))
        files = sorted((tmp_path / name).rglob("*.json"))
        runs[name] = {f.relative_to(tmp_path / name): f.read_bytes() for f in files if f.name != "lab.json"}
    assert runs["a"] == runs["b"]
    assert runs["a"][Path("questions.json")] != runs["c"][Path("questions.json")]


def test_cli_generates_nested_videos_that_convert_and_load(tmp_path, capsys):
    out = tmp_path / "lab"
    argv = [
        "lab",
        "generate",
        "--out",
        str(out),
        "--scenes",
        "3",
        "--seed",
        "2",
        "--frames",
        "8",
        "--size",
        "64x48",
        "--nested",
        "--start-index",
        "10000",
    ]
    assert main(argv) == 0
    assert "wrote 3 scenes" in capsys.readouterr().err
    video = out / "videos" / "video_10000-11000" / "video_10001.mp4"
    with av.open(str(video)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 8 and frames[0].shape == (48, 64, 3)
    assert (out / "annotations" / "annotation_10000-11000" / "annotation_10002.json").is_file()
    records_path = out / "records.jsonl"
    assert (
        main(
            [
                "data",
                "clevrer",
                "--questions",
                str(out / "questions.json"),
                "--annotations",
                str(out / "annotations"),
                "--videos",
                str(out / "videos"),
                "--out",
                str(records_path),
            ]
        )
        == 0
    )
    records = load_records(records_path)
    assert records and all(Path(r.video).is_file() and r.question_kind for r in records)
    with pytest.raises(SystemExit):
        main(["lab", "generate", "--out", str(out), "--scenes", "3", "--size", "big"])
    assert main(["lab", "generate", "--out", str(out), "--scenes", "3", "--size", "63x48"]) == 1
    assert "even" in capsys.readouterr().err


def test_split_by_scene(tmp_path):
    entries = [{"scene_index": i, "video_filename": f"video_{i:05d}.mp4", "questions": []} for i in range(10)]
    train, test = split_by_scene(entries, 0.3, seed=0)
    assert len(test) == 3 and len(train) == 7
    assert sorted(e["scene_index"] for e in train + test) == list(range(10))
    assert split_by_scene(entries, 0.3, seed=0) == (train, test)
    assert split_by_scene(entries, 0.3, seed=1)[1] != test
    with pytest.raises(ValueError):
        split_by_scene(entries, 1.0, seed=0)
    questions = tmp_path / "questions.json"
    questions.write_text(json.dumps(entries))
    assert main(["lab", "split", "--questions", str(questions), "--test-fraction", "0.3"]) == 0
    written = json.loads((tmp_path / "questions_test.json").read_text())
    assert written == test and json.loads((tmp_path / "questions_train.json").read_text()) == train


def _files(folder: Path) -> dict[Path, bytes]:
    return {f.relative_to(folder): f.read_bytes() for f in sorted(folder.rglob("*")) if f.is_file()}


def test_generate_from_a_sets_lab_json_keeps_its_world_and_takes_the_options_given(tmp_path, capsys):
    first = tmp_path / "first"
    argv = ["lab", "generate", "--out", str(first), "--scenes", "4", "--seed", "7", "--frames", "12"]
    assert (
        main(
            [
                *argv,
                "--size",
                "56x56",
                "--fps",
                "6",
                "--no-contact-marks",
                "--video-format",
                "png",
                "--observational-ratio",
                "0.5",
            ]
        )
        == 0
    )
    # The same settings again from the file alone: the same bytes (PNG frames included; x264 output is
    # not byte-stable across runs).
    again = tmp_path / "again"
    assert main(["lab", "generate", "--config", str(first / "lab.json"), "--out", str(again)]) == 0
    assert _files(again) == _files(first)
    # Another set of the same world and rendering: seed, scenes and start index overridden.
    other = tmp_path / "other"
    argv = ["lab", "generate", "--config", str(first), "--out", str(other), "--seed", "9", "--scenes", "3"]
    assert main([*argv, "--start-index", "500"]) == 0
    settings, base = (json.loads((d / "lab.json").read_text()) for d in (other, first))
    changed = {k for k in settings if settings[k] != base[k]}
    assert changed <= {"seed", "scenes", "start_index", "questions", "observational", "seen"}
    assert {"seed", "scenes", "start_index"} <= changed
    assert settings["size"] == [56, 56] and settings["fps"] == 6 and settings["contact_marks"] is False
    assert (other / "annotations" / "annotation_00502.json").is_file()
    capsys.readouterr()
    assert main(["lab", "generate", "--out", str(tmp_path / "none")]) == 1  # no --scenes, no --config
    assert "--scenes" in capsys.readouterr().err


def test_a_lab_json_from_before_the_recommended_world_means_the_old_world(tmp_path):
    from videothinker.lab import WorldConfig, load_lab_config

    settings = asdict(LabConfig(scenes=5))
    del settings["contact_marks"], settings["world"]["distinct_colors"]
    settings["world"].update(radius=0.55, min_objects=3, max_objects=6, lanes=[-1.9, 0.0, 1.9])
    (tmp_path / "lab.json").write_text(json.dumps(settings))
    config = load_lab_config(tmp_path, seed=3)
    assert config.seed == 3 and config.contact_marks is False
    assert config.world == WorldConfig(
        radius=0.55, min_objects=3, max_objects=6, lanes=(-1.9, 0.0, 1.9), distinct_colors=False
    )
    (tmp_path / "lab.json").write_text(json.dumps({**settings, "colour": 1}))
    with pytest.raises(ValueError, match="unknown fields colour"):
        load_lab_config(tmp_path)
    # A set of the first recommended world (contact marks, before they had a size): its small marks.
    first_marks = asdict(LabConfig(scenes=5, mark_radius=0.45))
    del first_marks["mark_radius"]
    (tmp_path / "lab.json").write_text(json.dumps(first_marks))
    config = load_lab_config(tmp_path)
    assert config.contact_marks is True and config.mark_radius == 0.3
    with pytest.raises(ValueError, match="mark radius"):
        LabConfig(mark_radius=0.95)


def test_recommended_world_numbers():
    world = LabConfig().world
    scale = 112 / (2 * world.half_extent)  # pixels per unit at the default 112 x 112
    assert 28 <= 2 * world.radius * scale <= 34  # an object a little more than one 28-pixel merged token
    assert world.track_capacity == 3 and len(world.lanes) == 2
    with pytest.raises(ValueError, match="never touch"):
        type(world)(lanes=(-0.8, 0.8))
    with pytest.raises(ValueError, match="distinct colours"):
        type(world)(max_objects=6, colors=("red", "green", "blue", "yellow", "cyan"))


def test_scenes_have_distinct_colours_and_questions_name_objects_by_colour(big_sets):
    entries = json.loads((big_sets[0.74] / "questions.json").read_text())
    for entry in entries[:60]:
        a = json.loads(
            (big_sets[0.74] / "annotations" / f"annotation_{entry['scene_index']:05d}.json").read_text()
        )
        colours = [p["color"] for p in a["object_property"]]
        assert len(set(colours)) == len(colours) and 4 <= len(colours) <= 5
        for q in entry["questions"]:
            assert re.search(r"the (red|green|blue|yellow|cyan|purple) object", q["question"]), q["question"]
            for c in q["choices"]:
                assert all(d.endswith(" object") for d in parse_choice(c["choice"]))


def test_perception_probes_list_every_collision_and_convert_to_kind_seen(big_sets):
    out = big_sets[0.74]
    probes = json.loads((out / "seen.json").read_text())
    assert len(probes) >= 250  # one per scene with a collision
    exact = 0
    for entry in probes:
        (q,) = entry["questions"]
        assert q["question_type"] == "descriptive" and 3 <= len(q["choices"]) <= 4
        a = json.loads((out / "annotations" / f"annotation_{entry['scene_index']:05d}.json").read_text())
        objects = {p["object_id"]: p for p in a["object_property"]}
        factual = {frozenset(c["object_ids"]) for c in a["collision"]}
        listed = [frozenset(resolve(d, objects) for d in parse_choice(c["choice"])) for c in q["choices"]]
        assert [c["answer"] == "correct" for c in q["choices"]] == [p in factual for p in listed]
        exact += factual <= set(listed)  # every collision of the clip is listed
    assert exact / len(probes) >= 0.97
    records, report = convert(out / "seen.json", out / "annotations", out / "videos", out / "seen.jsonl")
    assert report.kept == {"seen": len(probes)} and {r["question_kind"] for r in records} == {"seen"}
    assert load_records_from(records)[0].question_kind == "seen"
    # A probe whose answer disagrees with the annotation is an error, not a silent record.
    bad = json.loads(json.dumps(probes[:1]))
    first = bad[0]["questions"][0]["choices"][0]
    first["answer"] = "wrong" if first["answer"] == "correct" else "correct"
    if any(c["answer"] == "correct" for c in bad[0]["questions"][0]["choices"]):
        (out / "bad_seen.json").write_text(json.dumps(bad))
        with pytest.raises(ValueError, match="disagrees"):
            convert(out / "bad_seen.json", out / "annotations", out / "videos", out / "bad.jsonl")


def load_records_from(raw: list[dict]):
    from videothinker.data.records import parse_record

    return [parse_record(r, source="mem", index=i) for i, r in enumerate(raw)]
