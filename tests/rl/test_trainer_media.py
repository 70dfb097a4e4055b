"""Training on media of the wild: the up-front check stops a run (one line, before any model loads)
or leaves bad media out (``data.skip_invalid``, counted in log.jsonl's start row); media that break
only when loaded are skipped and replaced during training, and too many in a row stop it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_trainer import COMMON, _rows, _train_args

from videothinker.cli import main

WILD = ["good", "good2", "good", "corrupt", "good2", "missing", "good", "truncated", "good2", "good"]
"""Ten records as a new user's first training file has them: one corrupt, one missing, one truncated."""


def write_records(folder: Path, media_set: dict[str, Path], names: list[str]) -> Path:
    records = [
        {
            "problem_id": i,
            "problem": f"Which of the following will happen if the cube number {i} is removed?",
            "options": ["A. The sphere moves", "B. The cube moves", "C. Nothing"],
            "solution": "<answer>B</answer>",
            "video": str(media_set[name]),
            "question_kind": "observational" if i % 2 else "inferential",
        }
        for i, name in enumerate(names)
    ]
    path = folder / "train.json"
    path.write_text(json.dumps(records))
    return path


def strict_run(tmp_path, data: Path, *extra: str) -> int:
    """A run whose model folder does not exist: a check that stops it must do so before any model loads."""
    args = _train_args(tmp_path / "no-model-here", data, max_steps=1)
    return main(["train", "--stage", "grpo", "--out", str(tmp_path / "run"), *args, *extra])


def test_bad_media_stop_the_run_with_one_line_before_any_model_loads(media_set, tmp_path, capsys):
    data = write_records(tmp_path, media_set, WILD)
    assert strict_run(tmp_path, data) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "3 of 10 training records have bad media: 1 missing and 2 undecodable media" in lines[0]
    assert f"{media_set['corrupt']} (undecodable), {media_set['missing']} (missing)" in lines[0]
    assert "data.skip_invalid=true" in lines[0]
    assert not (tmp_path / "run" / "log.jsonl").exists()


@pytest.mark.parametrize("skip", [False, True])
def test_an_all_bad_set_stops_the_run(media_set, tmp_path, capsys, skip):
    data = write_records(tmp_path, media_set, ["corrupt", "missing", "truncated", "damaged"])
    assert strict_run(tmp_path, data, "--set", f"data.skip_invalid={str(skip).lower()}") == 1
    err = capsys.readouterr().err
    assert "4 of 4 training records have bad media: 1 missing and 3 undecodable" in err
    assert ("no training record is left" in err) == skip


@pytest.mark.slow
def test_skip_invalid_leaves_bad_media_out_and_says_so(tiny_qwen2_5_vl_dir, media_set, tmp_path, capsys):
    data = write_records(tmp_path, media_set, WILD)
    out = tmp_path / "run"
    args = _train_args(tiny_qwen2_5_vl_dir, data, max_steps=2)
    assert (
        main(["train", "--stage", "grpo", "--out", str(out), *args, "--set", "data.skip_invalid=true"]) == 0
    )
    start = json.loads((out / "log.jsonl").read_text().splitlines()[0])
    assert start["skipped_media"] == {
        "records": 3,
        "missing": 1,
        "undecodable": 2,
        "first": [str(media_set[n]) for n in ("corrupt", "missing", "truncated")],
    }
    first_line = next(line for line in capsys.readouterr().err.splitlines() if line.startswith("stage grpo"))
    assert "3 records left out for bad media: 1 missing and 2 undecodable" in first_line
    assert [r["step"] for r in _rows(out)] == [1, 2] and (out / "media_check.json").is_file()


@pytest.mark.slow
def test_media_that_break_when_loaded_are_replaced(tiny_qwen2_5_vl_dir, media_set, tmp_path):
    """``cut`` passes the check (its index and first frame are there) and fails when loaded: the next
    prompt takes its place, the batch keeps B prompts, the data position counts the replacement."""
    from videothinker.config import load_train_config
    from videothinker.rl.trainer import Trainer

    data = write_records(tmp_path, media_set, ["good", "cut", "good2", "good", "good2"])
    overrides = [
        *(a for a in COMMON[2:] if a != "--set"),
        "data.shuffle=false",
        "stage=grpo",
        f"model.path={tiny_qwen2_5_vl_dir}",
        f"data.path={data}",
        f"output_dir={tmp_path / 'run'}",
    ]
    trainer = Trainer(load_train_config("tiny_cpu", overrides), resume=None)
    assert len(trainer.records) == 5  # the check passed every record
    first, second = trainer._micro_batch(), trainer._micro_batch()
    assert [r.index for r in first.records] == [0, 2] and [r.index for r in second.records] == [3, 4]
    assert first.rollout.completion_ids.shape[0] == 2 * trainer.config.grpo.num_generations
    assert trainer.sampler.consumed == 5 and trainer.prompts.failures == 1
    trainer.prompts.close()


@pytest.mark.slow
def test_too_many_failed_loads_in_a_row_stop_the_run(tiny_qwen2_5_vl_dir, media_set, tmp_path, capsys):
    data = write_records(tmp_path, media_set, ["cut"] * 4)
    args = _train_args(tiny_qwen2_5_vl_dir, data, max_steps=1)
    code = main(
        [
            "train",
            "--stage",
            "grpo",
            "--out",
            str(tmp_path / "run"),
            *args,
            "--set",
            "data.max_decode_failures=3",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert "3 prompts in a row failed to decode (last: " in err and "truncated: " in err
