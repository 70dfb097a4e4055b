"""The study of RL variants (`videothinker study`): variants files, a toy run of the gpu path on a CPU
(shared bias model, a curve, the report), and where lost answers go, on hand-made predictions."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from videothinker.cli import main
from videothinker.demo.study import (
    Variant,
    _workers_stopped_on_exit,
    load_variants,
    running_after,
    stop_workers,
)

pytestmark = pytest.mark.slow


def test_bias_models_are_trained_only_for_cdpo_variants(tmp_path):
    from videothinker.demo.study import bias_models_needed

    path = tmp_path / "variants.yaml"
    path.write_text("grpo: {stage: grpo}\nfix: {stage: grpo, data: balanced}\n")
    assert bias_models_needed(load_variants(path)) == []
    path.write_text(
        "grpo: {stage: grpo}\na: {stage: cdpo, bias: bias_shuffle}\nb: {stage: cdpo}\nc: {stage: cdpo}\n"
    )
    assert bias_models_needed(load_variants(path)) == ["bias", "bias_shuffle"]


def test_variants_file_and_its_errors(tmp_path):
    path = tmp_path / "v.yaml"
    path.write_text(
        "grpo: {stage: grpo, curve: true}\n"
        "capped: {stage: cdpo, bias: bias_shuffle, set: {grpo.beta: -0.3, cdpo.kl_cap: 0.2}}\n"
        "fix: {stage: grpo, data: balanced}\n"
    )
    grpo, capped, fix = load_variants(path)
    assert grpo == Variant("grpo", "grpo", curve=True)
    assert capped.settings == {"grpo.beta": -0.3, "cdpo.kl_cap": 0.2} and capped.bias == "bias_shuffle"
    assert fix.data == "balanced"
    path.write_text("x: {stage: bias}\n")
    with pytest.raises(ValueError, match="stage must be grpo or cdpo"):
        load_variants(path)
    path.write_text("x: {stage: cdpo, beta: -1}\n")
    with pytest.raises(ValueError, match="takes set, bias, data, curve"):
        load_variants(path)


@pytest.fixture(scope="module")
def study_run(tmp_path_factory) -> Path:
    """Two variants of the gpu preset at toy size on one validation seed: GRPO with a curve, and a
    bounded CDPO that shares the seed's bias model."""
    root = tmp_path_factory.mktemp("study")
    variants = root / "variants.yaml"
    variants.write_text(
        "grpo: {stage: grpo, curve: true}\n"
        "capped: {stage: cdpo, set: {grpo.beta: -0.3, cdpo.kl_cap: 0.2, cdpo.one_sided: true}}\n"
    )
    out = root / "out"
    args = [
        "study",
        "--preset",
        "gpu",
        "--smoke",
        "--set",
        "base_model=packaged",
        "--variants",
        str(variants),
    ]
    args += ["--seeds", "3", "--split", "val", "--jobs", "2", "--curve-every", "1", "--out", str(out)]
    assert main(args) == 0
    return out


def test_study_trains_each_variant_from_one_bias_model_and_reports(study_run):
    seed = study_run / "seed-3"
    assert sorted(p.name for p in (seed / "train").iterdir()) == ["bias", "capped", "grpo"]
    capped = (seed / "train" / "capped" / "config.yaml").read_text()
    assert str(seed / "train" / "bias" / "final") in capped and "kl_cap: 0.2" in capped
    report = json.loads((study_run / "study.json").read_text())
    rows = report["rows"]["3"]
    for name in ("base", "bias", "grpo", "capped"):
        assert 0 <= rows[name]["inferential"] <= 100 and 0 <= rows[name]["shortcut"] <= 100, name
    assert "capped" in report["paired_to_grpo"]
    # the curve: a checkpoint every step (2 steps at toy size), each evaluated
    assert [r["step"] for r in report["curves"]["3"]["grpo"]] == [1, 2]
    assert (study_run / "curves_seed3.png").is_file()
    md = (study_run / "study.md").read_text()
    assert "| capped |" in md and "Where the lost inferential answers go" in md
    assert "(one seed: no interval)" in md and "nan" not in md  # one seed: a difference, no interval


def test_report_only_rewrites_the_report_without_training(study_run, capsys):
    args = ["study", "--report-only", "--preset", "gpu", "--smoke", "--seeds", "3", "--split", "val"]
    variants = study_run.parent / "variants.yaml"
    assert main([*args, "--variants", str(variants), "--out", str(study_run)]) == 0
    assert "| grpo |" in capsys.readouterr().out


def test_lost_answers_on_hand_made_predictions(study_run, tmp_path):
    """A base that answers every question right and a model that answers every inferential question
    with what the video shows: every lost answer is counted as the video's."""
    from videothinker.answers import extract_answer
    from videothinker.demo.lost_answers import lost_answers
    from videothinker.demo.pipeline import DemoPaths
    from videothinker.eval.benchmarks import load_benchmarks
    from videothinker.eval.predictions import Prediction
    from videothinker.lab.targets import choice_facts, load_annotations

    paths = DemoPaths(study_run / "seed-3")
    (bench,) = load_benchmarks([paths.records("val")])
    inferential = [r for r in bench.records if r.question_kind == "inferential"]
    annotations = load_annotations(inferential, paths.lab("val") / "annotations")
    video = {r.id: choice_facts(r, a).shortcut_answer for r, a in zip(inferential, annotations)}
    for name, answer in (("base", lambda r: extract_answer(r.solution)), ("model", lambda r: video[r.id])):
        folder = tmp_path / name
        folder.mkdir()
        lines = [Prediction(bench.name, r.id, "scored", answer=answer(r)).to_json() for r in inferential]
        (folder / "predictions.jsonl").write_text("\n".join(lines) + "\n")
    got = lost_answers(
        paths.records("val"), paths.lab("val") / "annotations", paths.records("train"),
        tmp_path / "base", tmp_path / "model",
    )  # fmt: skip
    with_video_answer = sum(1 for r in inferential if video[r.id])
    assert got["lost"] == got["video"] + got["format"] and got["video"] == with_video_answer > 0
    assert got["gained"] == 0 and got["other"] == got["between"] == 0


def _started_workers(pool, timeout: float = 60.0) -> list:
    """The pool's worker processes once one has started (the pool starts them on submit)."""
    deadline = time.monotonic() + timeout
    while not getattr(pool, "_processes", None) and time.monotonic() < deadline:
        time.sleep(0.05)
    return list(pool._processes.values())


def test_stop_workers_ends_a_running_task():
    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    pool.submit(time.sleep, 60)
    workers = _started_workers(pool)
    assert workers and running_after(workers, 0.2) == workers  # still sleeping
    stop_workers(pool)
    assert running_after(workers, 20) == []


def test_sigterm_to_a_study_ends_its_workers_and_restores_the_handler():
    """SIGTERM to the study's process raises SystemExit there and terminates the pool's workers, so a
    killed study leaves no training running as an orphan."""
    before = signal.getsignal(signal.SIGTERM)
    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    workers = []
    with pytest.raises(SystemExit) as stopped, pool, _workers_stopped_on_exit(pool):
        pool.submit(time.sleep, 60)
        workers = _started_workers(pool)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)  # the handler raises during this sleep
    assert stopped.value.code == 128 + signal.SIGTERM
    assert workers and running_after(workers, 20) == []
    assert signal.getsignal(signal.SIGTERM) is before
