"""The base model kept in the package: it is the default preset's base, it is copied in as a run's base
without a warm start, and it reads the collisions of lab clips it has never seen (the clips of a
seed and scene range of their own), far above what a model blind to the video could do."""

from __future__ import annotations

import dataclasses
import json
import statistics

import pytest

from videothinker.demo.basemodel import described_share
from videothinker.demo.pipeline import DemoPaths, copy_base, evaluate_model, make_base, make_data
from videothinker.demo.presets import PACKAGED_BASE, get_preset
from videothinker.demo.report import base_sentence
from videothinker.lab.targets import collision_names, load_annotations


def test_packaged_base_is_small_and_complete():
    weights = PACKAGED_BASE / "model.safetensors"
    assert weights.is_file() and weights.stat().st_size <= 16 * 10**6
    for name in ("config.json", "tokenizer.json", "README.md", "warm_start_log.jsonl", "made_by_demo.json"):
        assert (PACKAGED_BASE / name).is_file(), name
    # the default preset's lab world is the one it was trained in
    made = json.loads((PACKAGED_BASE / "made_by_demo.json").read_text())["preset"]
    default = get_preset("default")
    assert default.base_model_path == PACKAGED_BASE
    for field in ("lab_size", "frames", "fps", "world", "contact_marks", "mark_radius", "video"):
        assert json.loads(json.dumps(getattr(default, field))) == made[field], field


def test_copy_base_refuses_a_folder_without_a_model(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="not a model folder"):
        copy_base(tmp_path / "empty", tmp_path / "final")
    assert not (tmp_path / "final").exists()


def test_base_sentence_says_whether_the_base_was_given():
    assert "given" in base_sentence({"base_model": "packaged"}) and "package" in base_sentence(
        {"base_model": "packaged"}
    )
    built = base_sentence({"model": {"hidden_size": 96, "num_hidden_layers": 3}, "warm_steps": 7})
    assert "random-init" in built and "width 96, 3 layers" in built and "7 steps" in built


@pytest.mark.slow
def test_packaged_base_reads_collisions_of_new_clips(tmp_path):
    # 12 test scenes of the default preset's world (seed 1000 + 41, scenes 10000+), PNG frames.
    preset = dataclasses.replace(get_preset("default"), test_scenes=12, lab_workers=1)
    paths = DemoPaths(tmp_path / "run")
    make_data(paths, preset, seed=41, splits=("test",))
    make_base(paths, preset, seed=41, device="cpu")  # copies the packaged model: no warm start
    assert not paths.tiny.exists()
    assert (paths.model("base") / "model.safetensors").read_bytes() == (
        PACKAGED_BASE / "model.safetensors"
    ).read_bytes()
    evaluate_model(paths, preset, "base", "cpu")
    files = [paths.records("test"), paths.seen_records("test")]
    share = described_share(
        paths.eval("base") / "predictions.jsonl", files, paths.lab("test") / "annotations"
    )
    # A description of another clip of the same set would be exact this often: the model's share must
    # be far above it (84% on the validation split).
    from videothinker.data.records import load_records

    records = load_records(paths.records("test"))
    names = [
        frozenset(collision_names(a)) for a in load_annotations(records, paths.lab("test") / "annotations")
    ]
    chance = statistics.mean(a == b for i, a in enumerate(names) for j, b in enumerate(names) if i != j)
    assert share is not None and share >= 0.5 and share > chance + 0.3, (share, chance)


@pytest.mark.slow
def test_seeds_from_a_given_base_share_it_and_the_report_says_so(tmp_path):
    from videothinker.cli import main

    out = tmp_path / "seeds"
    argv = ["demo", "--preset", "gpu", "--smoke", "--device", "cpu", "--threads", "1", "--seeds", "0", "1"]
    argv += ["--jobs", "2", "--out", str(out), "--set", "base_model=packaged", "--set", "test_scenes=4"]
    argv += ["--set", "train_scenes=6", "--set", "rl.grpo.max_steps=1", "--set", "max_new_tokens=16"]
    assert main(argv) == 0
    weights = (PACKAGED_BASE / "model.safetensors").read_bytes()
    for seed in (0, 1):
        final = out / f"seed-{seed}" / "models" / "warm-start" / "final"
        assert (final / "model.safetensors").read_bytes() == weights
        assert not (out / f"seed-{seed}" / "models" / "tiny").exists()  # nothing was built
        assert "The base model is given" in (out / f"seed-{seed}" / "report.md").read_text()
    report = (out / "report.md").read_text()
    assert (
        "replicate of the RL stages from one given base model" in report and "random-init Qwen" not in report
    )
