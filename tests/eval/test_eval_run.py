"""The evaluation loop end to end: resume after a crash, missing and undecodable videos, --limit, the
run-settings guard, `score` reproducing metrics.json, and a tiny real model through the CLI.

Records are excerpts of the shipped benchmark files (MVBench, including a frame-folder record, and
MMVU); their videos are small generated clips written where the records point.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from videothinker.cli import main
from videothinker.config import VideoConfig
from videothinker.data.video import write_video
from videothinker.eval.benchmarks import load_benchmarks
from videothinker.eval.predictions import SCORED, read_predictions
from videothinker.eval.runner import EvalSettings, evaluate

FIXTURES = Path(__file__).parents[1] / "fixtures" / "benchmarks"
MVBENCH_IDS = [1, 201, 1201, 1202, 1601, 2001]  # ssv2, perception, clevrer x2, tvqa (frame folder), nturgbd
MMVU_COUNT = 3
# 56x56 frames, at most 4 per video: the smallest inputs the Qwen processors take.
VIDEO = VideoConfig(min_pixels=28 * 28, max_pixels=56 * 56, max_frames=4, min_frames=2)
VIDEO_SETS = [
    "--set",
    "video.min_pixels=784",
    "--set",
    "video.max_pixels=3136",
    "--set",
    "video.max_frames=4",
    "--set",
    "video.min_frames=2",
]


def _media_path(root: Path, record: dict) -> Path:
    return root / record["video"].lstrip("/")


def write_media(root: Path, record: dict, seed: int) -> None:
    """A small random clip where the record points (a folder of PNG frames for data_type "frame")."""
    frames = np.random.default_rng(seed).integers(0, 256, (8, 56, 56, 3), dtype=np.uint8)
    path = _media_path(root, record)
    if record["data_type"] == "frame":
        folder = path.with_suffix("")  # "clip.mp4" names the frame folder "clip"
        folder.mkdir(parents=True, exist_ok=True)
        for i, frame in enumerate(frames):
            Image.fromarray(frame).save(folder / f"{i:03d}.png")
    else:
        write_video(path, frames, fps=4)


@pytest.fixture
def bench_files(tmp_path) -> tuple[list[Path], Path]:
    """Excerpt files of both benchmarks with every video present; returns (files, video root)."""
    mvbench = [
        r for r in json.loads((FIXTURES / "eval_mvbench.json").read_text()) if r["problem_id"] in MVBENCH_IDS
    ]
    mmvu = json.loads((FIXTURES / "eval_mmvu.json").read_text())[:MMVU_COUNT]
    assert len(mvbench) == len(MVBENCH_IDS) and any(r["data_type"] == "frame" for r in mvbench)
    root = tmp_path / "videos"
    files = []
    for name, records in (("eval_mvbench.json", mvbench), ("eval_mmvu.json", mmvu)):
        (tmp_path / name).write_text(json.dumps(records))
        files.append(tmp_path / name)
        for i, record in enumerate(records):
            write_media(root, record, seed=i)
    return files, root


class FakeGenerator:
    """Answers "A" to everything; records what it was asked; can crash on a given call."""

    size_factor = 28

    def __init__(self, crash_on_call: int | None = None):
        self.prompts: list[str] = []
        self.calls = 0
        self.crash_on_call = crash_on_call

    def __call__(self, prompts, visuals):
        self.calls += 1
        if self.calls == self.crash_on_call:
            raise RuntimeError("killed")
        for visual in visuals:
            assert visual.frames.ndim == 4 and visual.frames.shape[1] == 3
            assert visual.frames.shape[2] % 28 == 0 and visual.frames.shape[3] % 28 == 0
        self.prompts += prompts
        return ["<think>hmm</think><answer>A</answer>"] * len(prompts)


def _never():
    raise AssertionError("the model must not be loaded")


def _scored_keys(path: Path) -> list[tuple[str, str]]:
    return [p.key for p in read_predictions(path) if p.status == SCORED]


def test_crash_then_resume_redoes_nothing(bench_files, tmp_path):
    files, root = bench_files
    benchmarks = load_benchmarks(files, root)
    total = sum(len(b.records) for b in benchmarks)
    settings = EvalSettings(model="m", batch_size=2, video=VIDEO)
    out = tmp_path / "run"

    crashing = FakeGenerator(crash_on_call=3)  # two batches (4 records) land, then the run dies
    with pytest.raises(RuntimeError, match="killed"):
        evaluate(benchmarks, out, settings, lambda: crashing)
    assert len(_scored_keys(out / "predictions.jsonl")) == 4

    resumed = FakeGenerator()
    metrics = evaluate(benchmarks, out, settings, lambda: resumed)
    assert len(resumed.prompts) == total - 4
    keys = _scored_keys(out / "predictions.jsonl")
    assert len(keys) == len(set(keys)) == total  # every record once, none twice
    assert metrics["counts"] == {"records": total, "scored": total, "skipped": 0, "failed": 0, "pending": 0}
    solutions = [r.solution for b in benchmarks for r in b.records]
    assert metrics["overall"]["accuracy"] == pytest.approx(solutions.count("A") / total)
    assert metrics["benchmarks"]["mvbench"]["tasks"]["clevrer"]["scored"] == 2

    again = evaluate(benchmarks, out, settings, _never)  # finished: the model is not even loaded
    assert again == metrics
    assert len(read_predictions(out / "predictions.jsonl")) == total


def test_missing_videos_stop_before_the_model_loads(bench_files, tmp_path):
    files, root = bench_files
    gone = sorted(root.rglob("*.mp4"))[:7]
    for path in gone:
        path.unlink()
    benchmarks = load_benchmarks(files, root)
    with pytest.raises(
        ValueError, match=r"(?s)7 of 9 records to evaluate have no video:.*and 2 more.*--skip-missing"
    ):
        evaluate(benchmarks, tmp_path / "run", EvalSettings(model="m", video=VIDEO), _never)
    assert not (tmp_path / "run" / "predictions.jsonl").exists()
    # The aborted run left no predictions, so the folder takes other settings (another model) too.
    settings = EvalSettings(model="other", video=VIDEO, skip_missing=True)
    metrics = evaluate(benchmarks, tmp_path / "run", settings, FakeGenerator)
    assert metrics["counts"]["skipped"] == 7
    assert json.loads((tmp_path / "run" / "run.json").read_text())["model"] == str(Path("other").resolve())


def test_skip_missing_scores_the_rest_and_lists_the_skipped(bench_files, tmp_path):
    files, root = bench_files
    mmvu = json.loads(files[1].read_text())
    _media_path(root, mmvu[0]).unlink()
    benchmarks = load_benchmarks(files, root)
    settings = EvalSettings(model="m", video=VIDEO, skip_missing=True)
    metrics = evaluate(benchmarks, tmp_path / "run", settings, FakeGenerator)
    assert metrics["counts"]["skipped"] == 1
    assert metrics["counts"]["scored"] == len(MVBENCH_IDS) + MMVU_COUNT - 1
    assert [(s["benchmark"], s["id"]) for s in metrics["skipped"]] == [("mmvu", str(mmvu[0]["problem_id"]))]
    assert "video not found" in metrics["skipped"][0]["reason"]
    scored = [r for r in benchmarks[1].records if r.id != str(mmvu[0]["problem_id"])]
    assert metrics["benchmarks"]["mmvu"]["accuracy"] == pytest.approx(
        sum(r.solution == "A" for r in scored) / len(scored)
    )  # the skipped record counts neither as right nor as wrong

    write_media(root, mmvu[0], seed=0)  # the video turns up: a rerun evaluates just that record
    generator = FakeGenerator()
    metrics = evaluate(benchmarks, tmp_path / "run", settings, lambda: generator)
    assert len(generator.prompts) == 1
    assert metrics["counts"]["skipped"] == 0 and metrics["skipped"] == []


def test_undecodable_video_fails_and_the_run_goes_on(bench_files, tmp_path):
    files, root = bench_files
    mvbench = json.loads(files[0].read_text())
    broken = mvbench[0]
    _media_path(root, broken).write_bytes(b"not an mp4 at all")
    benchmarks = load_benchmarks(files, root)
    settings = EvalSettings(model="m", batch_size=4, video=VIDEO)
    metrics = evaluate(benchmarks, tmp_path / "run", settings, FakeGenerator)
    assert metrics["counts"]["failed"] == 1
    assert metrics["counts"]["scored"] == len(MVBENCH_IDS) + MMVU_COUNT - 1
    assert metrics["failed"][0]["id"] == str(broken["problem_id"])
    assert metrics["failed"][0]["reason"]

    assert evaluate(benchmarks, tmp_path / "run", settings, _never) == metrics  # failures are final...
    write_media(root, broken, seed=0)
    retry = EvalSettings(model="m", batch_size=4, video=VIDEO, retry_failed=True)
    metrics = evaluate(benchmarks, tmp_path / "run", retry, FakeGenerator)  # ...unless retried
    assert metrics["counts"]["failed"] == 0 and metrics["counts"]["scored"] == len(MVBENCH_IDS) + MMVU_COUNT


def test_limit_takes_the_first_records_of_each_benchmark(bench_files, tmp_path):
    files, root = bench_files
    benchmarks = load_benchmarks(files, root)
    generator = FakeGenerator()
    metrics = evaluate(
        benchmarks, tmp_path / "run", EvalSettings(model="m", limit=2, video=VIDEO), lambda: generator
    )
    assert len(generator.prompts) == 4
    assert {b: m["counts"]["scored"] for b, m in metrics["benchmarks"].items()} == {"mvbench": 2, "mmvu": 2}
    assert metrics["counts"]["pending"] == len(MVBENCH_IDS) + MMVU_COUNT - 4


def test_a_rerun_with_other_settings_is_refused(bench_files, tmp_path):
    files, root = bench_files
    benchmarks = load_benchmarks(files, root)
    evaluate(benchmarks, tmp_path / "run", EvalSettings(model="m", limit=1, video=VIDEO), FakeGenerator)
    other_video = VideoConfig(min_pixels=28 * 28, max_pixels=56 * 56, max_frames=8)
    for settings in (EvalSettings(model="other", video=VIDEO), EvalSettings(model="m", video=other_video)):
        with pytest.raises(ValueError, match="other settings"):
            evaluate(benchmarks, tmp_path / "run", settings, _never)


def test_tiny_model_eval_resumes_and_score_reproduces_metrics(bench_files, tmp_path, tiny_qwen2_5_vl_dir):
    files, root = bench_files
    out = tmp_path / "run"
    common = [
        "eval",
        "--model",
        str(tiny_qwen2_5_vl_dir),
        "--benchmark",
        *map(str, files),
        "--video-root",
        str(root),
        "--out",
        str(out),
        "--max-new-tokens",
        "6",
        "--batch-size",
        "3",
        "--device",
        "cpu",
        *VIDEO_SETS,
    ]
    assert main([*common, "--limit", "2"]) == 0  # stands for a run stopped after 4 records
    first = {p.key: p for p in read_predictions(out / "predictions.jsonl")}
    assert len(first) == 4
    assert main(common) == 0
    predictions = read_predictions(out / "predictions.jsonl")
    total = len(MVBENCH_IDS) + MMVU_COUNT
    assert len(predictions) == len({p.key for p in predictions}) == total  # nothing redone
    assert all(p.status == SCORED and p.output for p in predictions)
    assert all(first[p.key] == p for p in predictions if p.key in first)
    assert any(p.task == "tvqa" for p in predictions)  # the frame-folder record was evaluated
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["counts"]["scored"] == total

    rescored = tmp_path / "rescored"
    assert (
        main(
            [
                "score",
                "--benchmark",
                *map(str, files),
                "--predictions",
                str(out / "predictions.jsonl"),
                "--out",
                str(rescored),
            ]
        )
        == 0
    )
    assert (rescored / "metrics.json").read_bytes() == (out / "metrics.json").read_bytes()


def test_score_rescores_changed_outputs(bench_files, tmp_path):
    """A prediction edited after the fact is scored from its raw output, not its stored score."""
    files, root = bench_files
    benchmarks = load_benchmarks(files, root)
    out = tmp_path / "run"
    evaluate(benchmarks, out, EvalSettings(model="m", video=VIDEO), FakeGenerator)
    lines = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    solutions = {(b.name, r.id): r.solution for b in benchmarks for r in b.records}
    for line in lines:
        line["output"] = f"<answer>{solutions[(line['benchmark'], line['id'])]}</answer>"
    (out / "predictions.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert (
        main(["score", "--benchmark", *map(str, files), "--predictions", str(out / "predictions.jsonl")]) == 0
    )
    assert json.loads((out / "metrics.json").read_text())["overall"]["accuracy"] == 1.0


def test_cli_reports_bad_input_in_one_line(bench_files, tmp_path, capsys):
    files, root = bench_files
    model = tmp_path / "model"
    args = [
        "eval",
        "--benchmark",
        *map(str, files),
        "--video-root",
        str(root),
        "--out",
        str(tmp_path / "run"),
    ]
    assert main([*args, "--model", str(model)]) == 1
    assert "model folder not found" in capsys.readouterr().err
    model.mkdir()  # not a checkpoint, but the videos are checked first
    assert main([*args, "--model", str(model), "--video-root", str(tmp_path / "elsewhere")]) == 1
    err = capsys.readouterr().err
    assert "9 of 9 records to evaluate have no video" in err and "--skip-missing" in err
    assert main([*args, "--model", str(model), "--batch-size", "0"]) == 1
    assert "--batch-size must be at least 1" in capsys.readouterr().err


def test_both_engines_give_the_same_predictions(bench_files, tmp_path, tiny_qwen2_5_vl_dir):
    """`--set rollout.engine=generate` (plain transformers generate) and the default decode engine
    write the same outputs, record for record (batches of 4 with an odd last batch)."""
    files, root = bench_files
    outputs = {}
    for engine in ("graph", "generate"):
        out = tmp_path / engine
        args = ["eval", "--model", str(tiny_qwen2_5_vl_dir), "--benchmark", *map(str, files)]
        args += ["--video-root", str(root), "--out", str(out), "--max-new-tokens", "8", "--batch-size", "4"]
        args += ["--device", "cpu", *VIDEO_SETS, "--set", f"rollout.engine={engine}"]
        assert main(args) == 0
        outputs[engine] = {p.key: p.output for p in read_predictions(out / "predictions.jsonl")}
    assert len(outputs["graph"]) == len(MVBENCH_IDS) + MMVU_COUNT
    assert outputs["graph"] == outputs["generate"]


def test_unknown_engine_is_one_clear_line(bench_files, tmp_path, capsys):
    files, root = bench_files
    (tmp_path / "model").mkdir()
    args = [
        "eval",
        "--model",
        str(tmp_path / "model"),
        "--benchmark",
        *map(str, files),
        "--video-root",
        str(root),
    ]
    assert main([*args, "--out", str(tmp_path / "run"), "--set", "rollout.engine=vllm"]) == 1
    assert "rollout.engine must be one of graph, generate, got 'vllm'" in capsys.readouterr().err
