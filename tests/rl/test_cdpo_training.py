"""Training with a bounded repulsion, through the CLI on a tiny real-architecture VLM: the collapse
guard stops a run driven into collapse (one clear line, last good checkpoint kept), the anchor and
the controller run and log what they do, and metrics reach W&B (offline). Behaviour, not timing."""

from __future__ import annotations

from pathlib import Path

import pytest

from videothinker.cli import main

pytestmark = pytest.mark.slow

# The shared settings and log reader of tests/rl/test_trainer.py (lab_records: tests/rl/conftest.py).
from test_trainer import COMMON, _rows  # noqa: E402


def _args(model: Path, data: Path, steps: int, *sets: str) -> list[str]:
    extra = [x for s in sets for x in ("--set", s)]
    return ["--model", str(model), "--data", str(data), *COMMON, "--set", f"grpo.max_steps={steps}", *extra]


@pytest.fixture(scope="module")
def bias_model(tiny_qwen2_5_vl_dir, lab_records, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bias")
    assert (
        main(["train", "--stage", "bias", "--out", str(out), *_args(tiny_qwen2_5_vl_dir, lab_records, 2)])
        == 0
    )
    return out / "final"


def test_a_collapsing_run_stops_with_one_clear_line(
    tiny_qwen2_5_vl_dir, lab_records, bias_model, tmp_path, capsys
):
    """A repulsion far too strong (beta -200 at lr 0.02) sharpens the tiny policy onto a few tokens:
    its token entropy falls, the guard (entropy below half its start, windows of 2 steps) stops the
    run, names the step, the cause and the last good checkpoint, and saves nothing after it."""
    out = tmp_path / "cdpo"
    args = _args(
        tiny_qwen2_5_vl_dir, lab_records, 40,
        "grpo.beta=-200", "grpo.learning_rate=0.02", "grpo.save_steps=2",
        "collapse.window=2", "collapse.min_entropy_ratio=0.5",
    )  # fmt: skip
    code = main(["train", "--stage", "cdpo", "--reference", str(bias_model), "--out", str(out), *args])
    err = capsys.readouterr().err
    assert code == 1
    assert "Traceback" not in err
    assert (
        "training collapsed (token entropy fell" in err
        and "repulsion from the bias model is too strong" in err
    )
    assert "smaller |grpo.beta|" in err
    rows = _rows(out)
    event = [r for r in rows if r.get("event") == "collapse"][0]
    stopped = event["step"]
    assert stopped < 40 and not (out / "final").exists()
    steps = [r["step"] for r in rows if "event" not in r]
    assert steps == list(range(1, stopped + 1))
    entropy = [r["entropy"] for r in rows if "event" not in r]
    assert sum(entropy[-2:]) < 0.5 * sum(entropy[:2])  # the state it stopped in
    kept = sorted(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*"))
    assert kept and event["checkpoint"].endswith(f"checkpoint-{max(s for s in kept if s <= stopped - 2)}")
    assert f"checkpoint-{max(s for s in kept if s <= stopped - 2)} is kept" in err


def test_a_bounded_repulsion_with_anchor_and_controller_logs_what_it_does(
    tiny_qwen2_5_vl_dir, lab_records, bias_model, tmp_path, monkeypatch
):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "cdpo"
    args = _args(
        tiny_qwen2_5_vl_dir, lab_records, 4,
        "grpo.beta=-0.1", "cdpo.kl_cap=0.2", "cdpo.one_sided=true", "cdpo.anchor_beta=0.04",
        "cdpo.kl_target=2.0", "cdpo.kl_target_warmup=2", "cdpo.beta_max=0.3", "grpo.report_to=[jsonl, wandb]",
    )  # fmt: skip
    assert main(["train", "--stage", "cdpo", "--reference", str(bias_model), "--out", str(out), *args]) == 0
    rows = [r for r in _rows(out) if "event" not in r]
    assert len(rows) == 4
    for row in rows:
        for key in (
            "kl",
            "kl_bias",
            "kl_init",
            "kl_anchor",
            "entropy",
            "repulsion",
            "repel_share",
            "degenerate",
            "beta",
        ):
            assert key in row, key
        assert row["repulsion"] <= 0.2 + 1e-6 and 0 <= row["repel_share"] <= 1
        assert row["kl_init"] == pytest.approx(
            row["kl_anchor"], rel=1e-4, abs=1e-7
        )  # one quantity, two names
        assert 0.0 < -row["beta"] <= 0.3
    assert rows[0]["beta"] == rows[1]["beta"] == -0.1  # warmup: beta as given
    # W&B wrote an offline run with the step metrics under OUT/wandb
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))


def test_paper_settings_log_the_paper_loss(tiny_qwen2_5_vl_dir, lab_records, bias_model, tmp_path):
    """No cdpo option set: the loss is the paper's (no repulsion bound, no initial model loaded)."""
    out = tmp_path / "cdpo"
    args = _args(tiny_qwen2_5_vl_dir, lab_records, 2)
    assert main(["train", "--stage", "cdpo", "--reference", str(bias_model), "--out", str(out), *args]) == 0
    rows = [r for r in _rows(out) if "event" not in r]
    assert all(r["repulsion"] == pytest.approx(r["kl"]) for r in rows)  # the uncapped k3 term
    assert all("kl_init" not in r and "kl_anchor" not in r and "beta" not in r for r in rows)


def test_cdpo_options_outside_cdpo_are_refused(tiny_qwen2_5_vl_dir, lab_records, tmp_path, capsys):
    args = _args(tiny_qwen2_5_vl_dir, lab_records, 1, "cdpo.kl_cap=0.2")
    assert main(["train", "--stage", "grpo", "--out", str(tmp_path / "g"), *args]) == 1
    assert "need stage cdpo" in capsys.readouterr().err
