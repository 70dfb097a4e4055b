"""End-to-end training on a tiny real-architecture VLM: every stage through the CLI, exact resume,
crash-safe checkpoints. (Behaviour, not timing.)"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from videothinker.cli import main
from videothinker.rl.checkpoint import list_checkpoints

pytestmark = pytest.mark.slow

COMMON = [
    "--config",
    "tiny_cpu",
    "--set",
    "grpo.max_completion_length=8",
    "--set",
    "grpo.num_generations=3",
    "--set",
    "grpo.per_device_train_batch_size=2",
    "--set",
    "grpo.learning_rate=1e-3",
    "--set",
    "grpo.logging_steps=1",
    # An untrained tiny model earns 0 accuracy and format reward; a reward plugged in by import path
    # varies between its samples, so that advantages (and gradients) are non-zero.
    "--set",
    "grpo.reward_funcs=[accuracy, format, 'toy_rewards:character_variety']",
]


def _train_args(model: Path, data: Path, max_steps: int) -> list[str]:
    """The `train` arguments every test here shares: the tiny model, the records, COMMON, a step count."""
    return ["--model", str(model), "--data", str(data), *COMMON, "--set", f"grpo.max_steps={max_steps}"]


def _rows(out: Path) -> list[dict]:
    return [r for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if "step" in r]


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def test_stages_through_the_cli(tiny_qwen2_5_vl_dir, lab_records, tmp_path):
    args = _train_args(tiny_qwen2_5_vl_dir, lab_records, max_steps=2)
    bias = tmp_path / "bias"
    assert main(["train", "--stage", "bias", "--out", str(bias), *args]) == 0
    log = (bias / "log.jsonl").read_text().splitlines()
    assert "no reference model" in json.loads(log[0])["reference"]
    rows = _rows(bias)
    assert [r["step"] for r in rows] == [1, 2]
    assert all(np.isfinite(r["loss"]) and r["kl"] == 0.0 for r in rows)
    assert "reward/observational" in rows[0] and "reward/inferential" not in rows[0]  # observational only

    # Every trainable parameter changed (the vision tower included: its features are shared, not detached).
    before, after = _weights(tiny_qwen2_5_vl_dir), _weights(bias / "final")
    unchanged = [k for k in before if torch.equal(before[k], after[k])]
    assert not unchanged, unchanged

    # The bias model serves as the CDPO reference; CDPO repels (beta < 0) and logs a non-zero KL.
    cdpo = tmp_path / "cdpo"
    assert (
        main(["train", "--stage", "cdpo", "--reference", str(bias / "final"), "--out", str(cdpo), *args]) == 0
    )
    first = json.loads((cdpo / "log.jsonl").read_text().splitlines()[0])
    assert str(bias / "final") in first["reference"] and "repels" in first["reference"]
    rows = _rows(cdpo)
    assert all(np.isfinite(r["loss"]) for r in rows) and all(r["kl"] > 0 for r in rows)
    assert {"reward/observational", "reward/inferential"} <= set(rows[0])

    grpo = tmp_path / "grpo"
    assert main(["train", "--stage", "grpo", "--out", str(grpo), *args, "--set", "grpo.beta=0.04"]) == 0
    assert "attracts" in json.loads((grpo / "log.jsonl").read_text().splitlines()[0])["reference"]
    rows = _rows(grpo)
    # Step 1 starts at the reference (KL 0 up to rounding); after one update the policy has moved.
    assert rows[-1]["kl"] > 0 and all(np.isfinite(r["loss"]) for r in rows)


def test_cdpo_requires_a_reference(tiny_qwen2_5_vl_dir, lab_records, tmp_path, capsys):
    code = main(
        [
            "train",
            "--stage",
            "cdpo",
            "--model",
            str(tiny_qwen2_5_vl_dir),
            "--data",
            str(lab_records),
            "--out",
            str(tmp_path / "x"),
            *COMMON,
        ]
    )
    assert code == 1 and "reference" in capsys.readouterr().err


@pytest.mark.parametrize(
    "optim",
    [
        [],  # the default: torch AdamW on fp32 weights
        # torchao's 8-bit AdamW on bf16 weights: quantized moments and stochastic rounding (which draws
        # from the RNG the checkpoint restores)
        pytest.param(
            ["--set", "optim=adamw_torch_8bit", "--set", "model.dtype=bfloat16"], id="adamw_torch_8bit"
        ),
    ],
)
def test_resume_continues_exactly(optim, tiny_qwen2_5_vl_dir, lab_records, tmp_path, monkeypatch):
    from videothinker.rl import trainer as trainer_module

    if optim:
        pytest.importorskip("torchao")
    args = [
        "train",
        "--stage",
        "grpo",
        "--model",
        str(tiny_qwen2_5_vl_dir),
        "--data",
        str(lab_records),
        *COMMON,
        "--set",
        "grpo.max_steps=5",
        "--set",
        "grpo.save_steps=2",
        "--set",
        "grpo.save_total_limit=5",
        *optim,
    ]
    straight = tmp_path / "straight"
    assert main([*args, "--out", str(straight)]) == 0

    # Kill the second run right after checkpoint-2 is written (a crash after step k = 2).
    original = trainer_module.Trainer.save

    def save_then_die(self):
        path = original(self)
        if self.state.step == 2:
            raise KeyboardInterrupt
        return path

    killed = tmp_path / "killed"
    monkeypatch.setattr(trainer_module.Trainer, "save", save_then_die)
    assert main([*args, "--out", str(killed)]) == 130
    monkeypatch.setattr(trainer_module.Trainer, "save", original)
    assert [p.name for p in list_checkpoints(killed)] == ["checkpoint-2"]
    assert main([*args, "--out", str(killed)]) == 0  # resumes from checkpoint-2

    a, b = _rows(straight), _rows(killed)
    assert [r["step"] for r in b] == [1, 2, 3, 4, 5]
    for ra, rb in zip(a[2:], b[2:]):
        assert rb["loss"] == pytest.approx(ra["loss"], abs=1e-6)
        assert rb["reward"] == ra["reward"] and rb["completion_length"] == ra["completion_length"]
    wa, wb = _weights(straight / "final"), _weights(killed / "final")
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)


def test_kill_during_checkpoint_write_keeps_the_previous_one(
    tiny_qwen2_5_vl_dir, lab_records, tmp_path, monkeypatch
):
    from videothinker.models.loading import load_model
    from videothinker.rl import checkpoint as checkpoint_module

    out = tmp_path / "run"
    args = [
        "train",
        "--stage",
        "bias",
        "--model",
        str(tiny_qwen2_5_vl_dir),
        "--data",
        str(lab_records),
        *COMMON,
        "--set",
        "grpo.max_steps=4",
        "--set",
        "grpo.save_steps=2",
        "--out",
        str(out),
    ]
    calls = {"n": 0}
    real_save = checkpoint_module.torch.save

    def dying_save(obj, path, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 3:  # optimizer.pt of the second checkpoint: die mid-write
            Path(path).write_bytes(b"partial")
            raise KeyboardInterrupt
        return real_save(obj, path, *a, **kw)

    monkeypatch.setattr(checkpoint_module.torch, "save", dying_save)
    assert main(args) == 130
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-2"]
    assert load_model(out / "checkpoint-2") is not None  # the last good checkpoint loads
    monkeypatch.setattr(checkpoint_module.torch, "save", real_save)
    assert main(args) == 0  # and the run resumes from it to the end
    assert [r["step"] for r in _rows(out)] == [1, 2, 3, 4]


@pytest.mark.parametrize(("stage", "beta", "grows"), [("cdpo", -0.01, True), ("grpo", 0.04, False)])
def test_one_step_moves_the_kl_the_way_beta_says(
    tiny_qwen2_5_vl_dir, lab_records, tmp_path, stage, beta, grows
):
    """With rewards that are all 0 (an untrained model's accuracy), advantages vanish and the KL term
    alone drives the step: CDPO (beta < 0) raises the KL to the bias model, GRPO (beta > 0) lowers it."""
    from videothinker.config import load_train_config
    from videothinker.rl.losses import k3_kl
    from videothinker.rl.trainer import Trainer

    # A "bias model" that differs from the policy: the tiny model after two bias-stage steps.
    bias = tmp_path / "bias"
    args = _train_args(tiny_qwen2_5_vl_dir, lab_records, max_steps=2)
    assert main(["train", "--stage", "bias", "--out", str(bias), *args]) == 0
    overrides = [
        *(a for a in COMMON[2:] if a != "--set"),
        "grpo.reward_funcs=[accuracy]",
        f"grpo.beta={beta}",
        f"stage={stage}",
        f"model.path={tiny_qwen2_5_vl_dir}",
        f"data.path={lab_records}",
        f"reference={bias / 'final'}",
        f"output_dir={tmp_path / stage}",
    ]
    trainer = Trainer(load_train_config("tiny_cpu", overrides), resume=None)
    batch = trainer._micro_batch()
    assert torch.all(batch.advantages == 0)
    r = batch.rollout

    def kl() -> float:
        logprobs = trainer._logprobs(trainer.policy, r, grad=False)
        per_token = k3_kl(logprobs, r.ref_logprobs, trainer.config.grpo.kl_clamp)
        return float((per_token * r.completion_mask).sum() / r.completion_mask.sum())

    before = kl()
    assert before > 0
    result = trainer._optimizer_step([batch])
    assert not result.skipped
    after = kl()
    assert (after > before) if grows else (after < before), (before, after)


def test_peak_memory_in_every_log_row(tiny_qwen2_5_vl_dir, lab_records, tmp_path, monkeypatch):
    """Each step opens a peak window and its row carries the peaks (on CPU torch counts none, so a
    stand-in reports them here; tests/rl/test_memory.py reads the real counters on CUDA)."""
    from videothinker.rl import trainer as trainer_module

    windows = []
    monkeypatch.setattr(trainer_module, "reset_peak_memory", lambda device: windows.append(device.type))
    monkeypatch.setattr(
        trainer_module,
        "peak_memory",
        lambda device: {"peak_allocated_gib": 1.5 * len(windows), "peak_reserved_gib": 2.0 * len(windows)},
    )
    out = tmp_path / "memory"
    assert (
        main(
            ["train", "--stage", "bias", "--out", str(out), *_train_args(tiny_qwen2_5_vl_dir, lab_records, 2)]
        )
        == 0
    )
    rows = _rows(out)
    assert windows == ["cpu", "cpu"]
    assert [(r["peak_allocated_gib"], r["peak_reserved_gib"]) for r in rows] == [(1.5, 2.0), (3.0, 4.0)]
    assert all(isinstance(r["lr"], float) for r in rows)


def test_frozen_vision_tower_stays_put(tiny_qwen2_5_vl_dir, lab_records, tmp_path):
    out = tmp_path / "frozen"
    args = _train_args(tiny_qwen2_5_vl_dir, lab_records, max_steps=1)
    assert (
        main(["train", "--stage", "bias", "--out", str(out), *args, "--set", "model.freeze_vision=true"]) == 0
    )
    before, after = _weights(tiny_qwen2_5_vl_dir), _weights(out / "final")
    vision = [k for k in before if ".visual." in k or k.startswith("visual.")]
    assert vision and all(torch.equal(before[k], after[k]) for k in vision)
    assert all(not torch.equal(before[k], after[k]) for k in before if k not in vision)


def test_prompts_over_max_prompt_length(tiny_qwen2_5_vl_dir, lab_records, tmp_path):
    """Rejected with an error naming the record (default), or cut on the question text only."""
    from videothinker.config import load_train_config
    from videothinker.rl.trainer import Trainer

    def trainer(*extra: str) -> Trainer:
        overrides = [
            "stage=bias",
            f"model.path={tiny_qwen2_5_vl_dir}",
            f"data.path={lab_records}",
            f"output_dir={tmp_path / 'run'}",
            *extra,
        ]
        return Trainer(load_train_config("tiny_cpu", overrides), resume=None)

    t = trainer()
    record = t.records[0]
    full = int(t._prompt_inputs([record])["attention_mask"].sum())
    video_tokens = int((t._prompt_inputs([record])["input_ids"] == t.policy.config.video_token_id).sum())
    assert video_tokens > 0

    t.config.grpo.max_prompt_length = full - 5
    with pytest.raises(ValueError, match=rf"record {record.index}: the prompt has {full} tokens"):
        t._prompt_inputs([record])

    t.config.data.prompt_truncation = "text"
    inputs = t._prompt_inputs([record])
    assert int(inputs["attention_mask"].sum()) <= full - 5
    assert int((inputs["input_ids"] == t.policy.config.video_token_id).sum()) == video_tokens  # video intact

    t.config.grpo.max_prompt_length = video_tokens  # not even the video fits
    with pytest.raises(ValueError, match="even without its question text"):
        t._prompt_inputs([record])


def test_checkpoint_layers_reach_the_policy(tiny_qwen2_5_vl_dir, lab_records, tmp_path):
    """model.checkpoint_layers from the config: the trainer's policy recomputes only its first layers."""
    from videothinker.config import load_train_config
    from videothinker.models.vision import vlm_body
    from videothinker.rl.trainer import Trainer

    overrides = [
        *(a for a in COMMON[2:] if a != "--set"),
        "stage=grpo",
        "grpo.beta=0.0",
        f"model.path={tiny_qwen2_5_vl_dir}",
        f"data.path={lab_records}",
        f"output_dir={tmp_path / 'run'}",
        "model.gradient_checkpointing=true",
        "model.checkpoint_layers=1",
    ]
    trainer = Trainer(load_train_config("tiny_cpu", overrides), resume=None)
    flags = [layer.gradient_checkpointing for layer in vlm_body(trainer.policy).language_model.layers]
    assert flags[0] and not any(flags[1:])


def test_shared_prompt_trains_as_the_per_sequence_path(tiny_qwen2_5_vl_dir, lab_records, tmp_path):
    """grpo.share_prompt changes how the log-probs are computed, not what: with a reference model
    (beta > 0) two steps give the same losses, KLs and weights as the default path."""
    runs = {}
    for share in ("false", "true"):
        out = tmp_path / share
        args = _train_args(tiny_qwen2_5_vl_dir, lab_records, max_steps=2)
        extra = ["--set", "grpo.beta=0.04", "--set", f"grpo.share_prompt={share}"]
        assert main(["train", "--stage", "grpo", "--out", str(out), *args, *extra]) == 0
        runs[share] = (_rows(out), _weights(out / "final"))
    (plain_rows, plain_weights), (shared_rows, shared_weights) = runs["false"], runs["true"]
    assert len(plain_rows) == len(shared_rows) == 2
    for a, b in zip(plain_rows, shared_rows):
        assert b["reward"] == a["reward"] and b["completion_length"] == a["completion_length"]
        assert b["loss"] == pytest.approx(a["loss"], abs=1e-5)
        assert b["kl"] == pytest.approx(a["kl"], abs=1e-5)
    assert all(torch.allclose(plain_weights[k], shared_weights[k], atol=1e-5) for k in plain_weights)


@pytest.fixture
def fresh_accelerator_state():
    """accelerate keeps one mixed-precision setting per process: a bf16 run after the fp32 runs of
    other tests needs its state reset (and the tests after it, again)."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def test_shared_prompt_under_bf16_autocast_with_one_prompt(
    tiny_qwen2_5_vl_dir, lab_records, tmp_path, fresh_accelerator_state
):
    """The paper presets' precision (fp32 weights, bf16 autocast) with one prompt per step, where the
    completions attend through the lower-right causal call: a step runs and matches the default
    path's loss to bf16 rounding."""
    from accelerate.state import AcceleratorState

    losses = {}
    for share in ("false", "true"):
        out = tmp_path / share
        args = _train_args(tiny_qwen2_5_vl_dir, lab_records, max_steps=1)
        extra = ["--set", "grpo.bf16=true", "--set", "grpo.per_device_train_batch_size=1"]
        extra += ["--set", "grpo.beta=0.04", "--set", f"grpo.share_prompt={share}"]
        assert main(["train", "--stage", "grpo", "--out", str(out), *args, *extra]) == 0
        AcceleratorState._reset_state(reset_partial_state=True)
        (row,) = _rows(out)
        losses[share] = row["loss"]
    assert np.isfinite(losses["true"])
    assert losses["true"] == pytest.approx(losses["false"], abs=2e-2)
