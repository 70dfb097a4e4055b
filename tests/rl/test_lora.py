"""LoRA on a tiny real-architecture VLM: a LoRA bias model as an adapter, a LoRA CDPO run that keeps
its reference adapter on the policy's own base (one base in memory), exact resume, a fully fine-tuned
policy with an adapter reference, and GRPO whose reference is the base with the adapter disabled."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sys
from pathlib import Path

import pytest
import test_trainer
import torch
from safetensors.torch import load_file

from videothinker import adapters
from videothinker.cli import main
from videothinker.config import ModelConfig, load_train_config
from videothinker.models import lora
from videothinker.models.loading import load_merged_adapter
from videothinker.rl import trainer as trainer_module
from videothinker.rl.checkpoint import list_checkpoints

pytestmark = pytest.mark.slow

COMMON = test_trainer.COMMON

# One prompt (G = 3 completions) per step keeps these runs short.
LORA = [
    "--set",
    "model.lora_r=4",
    "--set",
    "grpo.learning_rate=1e-2",
    "--set",
    "grpo.per_device_train_batch_size=1",
]
ADAPTER_FILES = {"adapter_config.json", "adapter_model.safetensors"}


def _rows(out: Path) -> list[dict]:
    return [r for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if "step" in r]


def _first_line(out: Path) -> str:
    return json.loads((out / "log.jsonl").read_text().splitlines()[0])["reference"]


def _train(argv: list[str]):
    """Run ``videothinker train`` and return (exit code, the Trainer it built)."""
    seen = {}
    original = trainer_module.Trainer.save_final

    def keep(self):
        seen["trainer"] = self
        return original(self)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(trainer_module.Trainer, "save_final", keep)
        code = main(["train", *argv])
    return code, seen.get("trainer")


def _digest(folder: Path) -> str:
    return hashlib.sha256((folder / "adapter_model.safetensors").read_bytes()).hexdigest()


def _args(model: Path, data: Path, *extra: str) -> list[str]:
    return ["--model", str(model), "--data", str(data), *COMMON, *LORA, *extra]


@pytest.fixture(scope="module")
def lora_bias(tiny_qwen2_5_vl_dir, lab_records, tmp_path_factory) -> Path:
    """A LoRA bias model: the output folder of two bias-stage steps with lora_r = 4."""
    out = tmp_path_factory.mktemp("lora") / "bias"
    args = _args(tiny_qwen2_5_vl_dir, lab_records, "--set", "grpo.max_steps=2")
    code, _ = _train(["--stage", "bias", "--out", str(out), *args])
    assert code == 0
    return out


def _cdpo_args(model: Path, data: Path, reference: Path) -> list[str]:
    # Dropout on the adapters draws random numbers in every training pass: resume must restore them too.
    extra = ["--set", "model.lora_dropout=0.1", "--set", "grpo.max_steps=4", "--set", "grpo.save_steps=2"]
    return ["--stage", "cdpo", "--reference", str(reference), *_args(model, data, *extra)]


@pytest.fixture(scope="module")
def lora_cdpo(tiny_qwen2_5_vl_dir, lab_records, lora_bias, tmp_path_factory):
    """A LoRA CDPO run of four steps whose reference is the LoRA bias adapter: (folder, trainer,
    digest of the reference adapter's file before the run)."""
    reference = lora_bias / "final"
    before = _digest(reference)
    out = tmp_path_factory.mktemp("lora") / "cdpo"
    code, trainer = _train([*_cdpo_args(tiny_qwen2_5_vl_dir, lab_records, reference), "--out", str(out)])
    assert code == 0
    return out, trainer, before


def test_lora_bias_run_writes_an_adapter(lora_bias, tiny_qwen2_5_vl_dir):
    final = lora_bias / "final"
    assert {p.name for p in final.iterdir()} >= ADAPTER_FILES
    assert not (final / "model.safetensors").exists()
    assert (final / "tokenizer.json").is_file()  # the processor travels with the adapter
    config = lora.adapter_config(final)
    assert config["r"] == 4 and Path(config["base_model_name_or_path"]) == tiny_qwen2_5_vl_dir.resolve()
    weights = load_file(str(final / "adapter_model.safetensors"))
    # The language model's attention and MLP projections of both layers; the vision tower has none.
    assert len(weights) == 2 * 7 * 2 and all(".language_model." in k for k in weights), sorted(weights)
    trained = [k for k, v in weights.items() if "lora_B" in k and v.abs().sum() > 0]
    assert len(trained) == len(weights) // 2  # B starts at 0: every B moved
    assert all(r["kl"] == 0.0 for r in _rows(lora_bias))
    assert {p.name for p in list_checkpoints(lora_bias)} == {"checkpoint-2"}
    assert {p.name for p in (lora_bias / "checkpoint-2").iterdir()} >= ADAPTER_FILES


def test_lora_cdpo_keeps_its_reference_adapter_on_the_policy_base(lora_bias, lora_cdpo, tiny_qwen2_5_vl_dir):
    from peft import get_peft_model_state_dict

    out, trainer, before = lora_cdpo
    reference = lora_bias / "final"
    assert f"reference model = {reference} (LoRA adapter 'reference' on the policy's base)" in _first_line(
        out
    )
    assert "repels" in _first_line(out)
    rows = _rows(out)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert all(torch.isfinite(torch.tensor(r["loss"])) and r["kl"] > 0 for r in rows)

    # One base: no second model; the reference is an adapter of the policy's peft model, frozen.
    assert trainer.reference is None and trainer.lora.get_base_model() is trainer.policy
    assert set(trainer.lora.peft_config) == {"default", "reference"}
    assert trainer.lora.active_adapter == "default"
    policy_adapter = {
        id(p) for n, p in trainer.policy.named_parameters() if ".lora_" in n and ".default." in n
    }
    optimized = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    trainable = {id(p) for p in trainer.policy.parameters() if p.requires_grad}
    assert optimized == trainable == policy_adapter

    # The reference adapter is what its folder holds, in memory and on disk, after four steps.
    saved = load_file(str(reference / "adapter_model.safetensors"))
    in_memory = get_peft_model_state_dict(trainer.lora, adapter_name="reference")
    assert saved.keys() == in_memory.keys() and all(torch.equal(saved[k], in_memory[k]) for k in saved)
    assert _digest(reference) == before
    # The saved policy adapter holds the policy's adapter only.
    final = load_file(str(out / "final" / "adapter_model.safetensors"))
    assert not any("reference" in k for k in final) and not (out / "final" / "reference").exists()

    # Reference log-probs are the bias model's: the adapter merged into a separate copy of the base.
    # Policy log-probs (sampling and loss) are those of the policy's own adapter, merged the same way.
    batch = trainer._micro_batch()
    r = batch.rollout
    assert trainer.lora.active_adapter == "default"
    kwargs = {"dtype": "float32", "device": "cpu"}
    bias_model = load_merged_adapter(reference, tiny_qwen2_5_vl_dir, **kwargs)
    policy_model = load_merged_adapter(out / "final", tiny_qwen2_5_vl_dir, **kwargs)
    policy = trainer._logprobs(trainer.policy, r, grad=False)
    mask = r.completion_mask.bool()
    torch.testing.assert_close(
        r.ref_logprobs[mask], trainer._logprobs(bias_model, r, grad=False)[mask], atol=1e-5, rtol=0
    )
    torch.testing.assert_close(
        policy[mask], trainer._logprobs(policy_model, r, grad=False)[mask], atol=1e-5, rtol=0
    )
    assert (policy - r.ref_logprobs)[mask].abs().max() > 1e-3  # the two really differ


def test_lora_resume_continues_exactly(lora_bias, lora_cdpo, tiny_qwen2_5_vl_dir, lab_records, tmp_path):
    straight, _, _ = lora_cdpo
    args = _cdpo_args(tiny_qwen2_5_vl_dir, lab_records, lora_bias / "final")
    killed = tmp_path / "killed"
    original = trainer_module.Trainer.save

    def save_then_die(self):
        path = original(self)
        if self.state.step == 2:
            raise KeyboardInterrupt
        return path

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(trainer_module.Trainer, "save", save_then_die)
        assert main(["train", *args, "--out", str(killed)]) == 130
    assert [p.name for p in list_checkpoints(killed)] == ["checkpoint-2"]
    code, trainer = _train([*args, "--out", str(killed)])  # resumes from checkpoint-2
    assert code == 0
    assert set(trainer.lora.peft_config) == {"default", "reference"}

    a, b = _rows(straight), _rows(killed)
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    for ra, rb in zip(a[2:], b[2:]):
        assert rb["loss"] == pytest.approx(ra["loss"], abs=1e-6)
        assert rb["kl"] == pytest.approx(ra["kl"], abs=1e-6)
        assert rb["reward"] == ra["reward"] and rb["completion_length"] == ra["completion_length"]
    wa = load_file(str(straight / "final" / "adapter_model.safetensors"))
    wb = load_file(str(killed / "final" / "adapter_model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)


def test_full_policy_with_a_lora_reference(lora_bias, tiny_qwen2_5_vl_dir, lab_records, tmp_path):
    out = tmp_path / "cdpo_full"
    args = [
        "--model",
        str(tiny_qwen2_5_vl_dir),
        "--data",
        str(lab_records),
        *COMMON,
        "--set",
        "grpo.max_steps=1",
    ]
    code, trainer = _train(
        ["--stage", "cdpo", "--reference", str(lora_bias / "final"), "--out", str(out), *args]
    )
    assert code == 0
    assert "LoRA adapter merged into its base" in _first_line(out) and "two bases in memory" in _first_line(
        out
    )
    assert trainer.lora is None and trainer.reference is not None and trainer.reference is not trainer.policy
    assert not any("lora_" in n for n, _ in trainer.reference.named_parameters())  # merged, plain weights
    assert not any(p.requires_grad for p in trainer.reference.parameters())
    rows = _rows(out)
    assert rows[0]["kl"] > 0 and torch.isfinite(torch.tensor(rows[0]["loss"]))
    assert (out / "final" / "model.safetensors").is_file()


def test_lora_grpo_reference_is_the_base_with_the_adapter_disabled(
    tiny_qwen2_5_vl_dir, lab_records, tmp_path
):
    from videothinker.models.loading import load_model

    out = tmp_path / "grpo"
    args = _args(tiny_qwen2_5_vl_dir, lab_records, "--set", "grpo.max_steps=2")
    code, trainer = _train(["--stage", "grpo", "--out", str(out), *args])
    assert code == 0
    assert "the policy's base with its LoRA adapter disabled" in _first_line(out)
    assert trainer.reference is None and set(trainer.lora.peft_config) == {"default"}
    rows = _rows(out)
    # Step 1: the adapter's B is 0, the policy is its base: KL 0. Step 2: the adapter moved the policy
    # away from the base (a reference pass with the adapter on would give 0 again).
    assert abs(rows[0]["kl"]) < 1e-7 and rows[1]["kl"] > 0

    batch = trainer._micro_batch()
    r, mask = batch.rollout, batch.rollout.completion_mask.bool()
    base = load_model(tiny_qwen2_5_vl_dir, dtype="float32")
    torch.testing.assert_close(
        r.ref_logprobs[mask], trainer._logprobs(base, r, grad=False)[mask], atol=1e-5, rtol=0
    )
    assert trainer.lora.active_adapter == "default"
    assert all(p.requires_grad for group in trainer.optimizer.param_groups for p in group["params"])


# ------------------------------------------------------------------------- plan, config, targets (fast)


def test_reference_plan_compares_resolved_bases(
    lora_bias, tiny_qwen2_5_vl_dir, lab_records, tmp_path, monkeypatch
):
    moved = tmp_path / "moved_adapter"
    shutil.copytree(lora_bias / "final", moved)
    config = lora.adapter_config(moved)
    config["base_model_name_or_path"] = "/somewhere/else/the-base"
    (moved / "adapter_config.json").write_text(json.dumps(config))

    def plan(reference: Path, *extra: str) -> lora.ReferencePlan:
        overrides = [
            "stage=cdpo",
            f"model.path={tiny_qwen2_5_vl_dir}",
            f"data.path={lab_records}",
            f"reference={reference}",
            *extra,
        ]
        return lora.plan_reference(load_train_config("tiny_cpu", overrides))

    assert plan(lora_bias / "final", "model.lora_r=4").kind == "policy_adapter"
    # The same base named by a relative path is the same base.
    monkeypatch.chdir(tiny_qwen2_5_vl_dir.parent)
    relative = f"model.path={Path('.') / tiny_qwen2_5_vl_dir.name}"
    assert plan(lora_bias / "final", "model.lora_r=4", relative).kind == "policy_adapter"
    assert plan(lora_bias / "final").kind == "merged_adapter"  # a fully fine-tuned policy
    assert plan(moved, "model.lora_r=4").kind == "merged_adapter"  # another base: a second model
    shared = plan(moved, "model.lora_r=4", f"reference_base={tiny_qwen2_5_vl_dir}")
    assert shared.kind == "policy_adapter" and shared.base == tiny_qwen2_5_vl_dir.resolve()
    assert plan(tiny_qwen2_5_vl_dir, "model.lora_r=4").kind == "model"  # a full checkpoint


def test_lora_config_rules(lora_bias, monkeypatch, capsys, tiny_qwen2_5_vl_dir, lab_records, tmp_path):
    assert ModelConfig(path="m", lora_r=4).problems() == []
    assert any("lora_r must be >= 0" in p for p in ModelConfig(path="m", lora_r=-1).problems())
    assert any("lora_dropout" in p for p in ModelConfig(path="m", lora_r=4, lora_dropout=1.0).problems())
    assert any("lora_vision" in p for p in ModelConfig(path="m", lora_vision=True).problems())
    both = ModelConfig(path="m", lora_r=4, lora_vision=True, freeze_vision=True)
    assert any("freeze_vision" in p for p in both.problems())

    # Without peft, asking for LoRA stops before anything loads, saying how to install it.
    monkeypatch.setattr(adapters, "peft_available", lambda: False)
    with pytest.raises(ValueError, match=re.escape("need peft: pip install 'videothinker[lora]'")):
        load_train_config("tiny_cpu", ["stage=bias", "model.path=m", "data.path=d", "model.lora_r=4"])
    reference = ["stage=cdpo", "model.path=m", "data.path=d", f"reference={lora_bias / 'final'}"]
    with pytest.raises(ValueError, match="is a LoRA adapter, which needs peft"):
        load_train_config("tiny_cpu", reference)
    code = main(
        ["train", "--stage", "bias", "--out", str(tmp_path / "x"), *_args(tiny_qwen2_5_vl_dir, lab_records)]
    )
    assert code == 1 and "need peft" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "peft", None)
    with pytest.raises(ImportError, match=re.escape("videothinker[lora]")):
        lora.require_peft()


def test_target_modules_leave_the_vision_tower_out_unless_asked(tiny_qwen2_5_vl_dir):
    from videothinker.models.loading import load_model

    model = load_model(tiny_qwen2_5_vl_dir, dtype="float32")

    def matched(config: ModelConfig) -> list[str]:
        pattern = lora.target_pattern(model, config)
        return [n for n, _ in model.named_modules() if re.fullmatch(pattern, n)]

    language = matched(ModelConfig(lora_r=4))
    assert len(language) == 2 * 7 and all(n.startswith("model.language_model.layers.") for n in language)
    both = matched(ModelConfig(lora_r=4, lora_vision=True, lora_target_modules=["q_proj", "qkv"]))
    assert {n for n in both if ".visual." in n} == {
        "model.visual.blocks.0.attn.qkv",
        "model.visual.blocks.1.attn.qkv",
    }
    assert len(both) == 2 + 2


def test_a_lora_output_loads_as_a_model_for_evaluation(lora_bias, tiny_qwen2_5_vl_dir):
    """`eval --model OUT/final` of a LoRA run: load_model merges the adapter into its recorded base."""
    from videothinker.models.loading import load_model, load_processor

    final = lora_bias / "final"
    model = load_model(final, dtype="float32")
    merged = load_merged_adapter(final, tiny_qwen2_5_vl_dir, dtype="float32")
    base = load_model(tiny_qwen2_5_vl_dir, dtype="float32")
    ours, theirs, plain = model.state_dict(), merged.state_dict(), base.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert any(not torch.equal(ours[k], plain[k]) for k in ours)  # the adapter is really merged in
    assert load_processor(final).tokenizer.pad_token_id is not None


def test_lora_cdpo_with_the_shared_prompt_equals_the_per_sequence_run(
    tiny_qwen2_5_vl_dir, lab_records, lora_bias, tmp_path
):
    """grpo.share_prompt on a LoRA policy whose reference is an adapter on the same base: two CDPO
    steps give the same losses and KLs as without it."""
    runs = {}
    for share in ("false", "true"):
        out = tmp_path / share
        args = ["--stage", "cdpo", "--reference", str(lora_bias / "final")]
        args += _args(tiny_qwen2_5_vl_dir, lab_records, "--set", "grpo.max_steps=2")
        code, _ = _train([*args, "--set", f"grpo.share_prompt={share}", "--out", str(out)])
        assert code == 0
        runs[share] = _rows(out)
    assert len(runs["true"]) == len(runs["false"]) == 2
    for a, b in zip(runs["false"], runs["true"]):
        assert b["reward"] == a["reward"]
        assert b["loss"] == pytest.approx(a["loss"], abs=1e-5)
        assert b["kl"] == pytest.approx(a["kl"], abs=1e-5)
    assert runs["false"][0]["kl"] > 0  # the reference adapter differs: its pass matters from step 1
