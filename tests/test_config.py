"""Tests of the typed configuration: YAML + --set precedence, key resolution, coercion, the stage
rules of TrainConfig.validate, and the shipped presets."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from videothinker.config import (
    DataConfig,
    GRPOConfig,
    ModelConfig,
    TrainConfig,
    VideoConfig,
    load_config,
    load_train_config,
    resolve_config_path,
    stage_defaults,
)
from videothinker.distributed_config import DistributedConfig
from videothinker.yaml_config import describe, preset_names, to_dict

PATHS = ["model.path=models/m", "data.path=data/train.json"]


def _yaml(tmp_path, data, name="run.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


# ---------------------------------------------------------------- precedence and keys


def test_precedence_defaults_stage_yaml_set(tmp_path):
    path = _yaml(tmp_path, {"stage": "cdpo", "reference": "bias", "grpo": {"temperature": 0.7, "top_p": 0.9}})
    config = load_train_config(path, [*PATHS, "temperature=0.5"])
    assert config.grpo.beta == -0.01  # the stage's default (the YAML sets no beta)
    assert config.grpo.top_p == 0.9  # the YAML over the dataclass default 1.0
    assert config.grpo.temperature == 0.5  # --set over the YAML
    assert config.grpo.learning_rate == GRPOConfig().learning_rate  # untouched default

    path = _yaml(tmp_path, {"stage": "cdpo", "reference": "bias", "beta": -0.05})
    assert load_train_config(path, PATHS).grpo.beta == -0.05  # YAML over the stage default
    assert load_train_config(path, [*PATHS, "grpo.beta=-0.02"]).grpo.beta == -0.02  # --set over YAML


def test_stage_read_from_set_before_yaml(tmp_path):
    path = _yaml(tmp_path, {"stage": "grpo"})
    config = load_train_config(path, [*PATHS, "stage=bias"])
    assert (config.stage, config.grpo.beta, config.data.question_kind) == ("bias", 0.0, "observational")
    assert load_train_config(None, PATHS).grpo.beta == stage_defaults(TrainConfig().stage)["grpo.beta"]


def test_nested_dotted_and_flat_keys(tmp_path):
    path = _yaml(
        tmp_path,
        {"grpo": {"epsilon": 0.1}, "grpo.epsilon_high": 0.3, "kl_clamp": 5, "video": {"max_frames": 8}},
    )
    config = load_train_config(path, [*PATHS, "fps=1.0", "data.template=single"])
    g = config.grpo
    assert (g.epsilon, g.epsilon_high, g.kl_clamp) == (0.1, 0.3, 5.0)
    assert (config.video.max_frames, config.video.fps, config.data.template) == (8, 1.0, "single")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("path=x", r"'path' is ambiguous; write it as one of model.path, data.path"),
        ("nope=1", "unknown config key 'nope'"),
        ("grpo.nope=1", "unknown config key 'nope'"),
        ("grpo=3", "'grpo' is a config section"),
        ("beta", "--set expects key=value"),
    ],
)
def test_bad_keys_are_errors(override, message):
    with pytest.raises(ValueError, match=message):
        load_train_config(None, [*PATHS, override])


def test_unknown_key_in_yaml_names_the_file(tmp_path):
    path = _yaml(tmp_path, {"grpo": {"betta": 0.1}})
    with pytest.raises(ValueError, match=rf"{path.name}: unknown config key 'betta'"):
        load_train_config(path, PATHS)
    with pytest.raises(ValueError, match="expected a mapping"):
        load_train_config(_yaml(tmp_path, "- a\n- b\n"), PATHS)


# ---------------------------------------------------------------- coercion


def test_type_coercion(tmp_path):
    # YAML 1.1 reads 2e-6 as a string: it must still become a float
    path = _yaml(tmp_path, "grpo:\n  learning_rate: 2e-6\n  kl_clamp: 4\n")
    config = load_train_config(
        path,
        [
            *PATHS,
            "max_steps=1e3",  # a numeric string with an integral value -> int
            "bf16=false",
            "reward_funcs=accuracy",  # a scalar for a list -> a one-item list
            "reward_weights=[1]",  # list items -> float
            "output_dir=2024",  # an int where a string is wanted -> "2024"
            "max_prompt_length=null",
        ],
    )
    g = config.grpo
    assert g.learning_rate == 2e-6 and type(g.learning_rate) is float
    assert g.kl_clamp == 4.0 and type(g.kl_clamp) is float
    assert g.max_steps == 1000 and type(g.max_steps) is int
    assert g.bf16 is False and g.reward_funcs == ["accuracy"] and g.max_prompt_length is None
    assert g.reward_weights == [1.0] and type(g.reward_weights[0]) is float
    assert config.output_dir == "2024"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("max_steps=2.5", "'max_steps': expected int"),
        ("bf16=maybe", "'bf16': expected bool"),
        ("beta=true", "'beta': expected float"),
        ("learning_rate=fast", "'learning_rate': expected float"),
    ],
)
def test_bad_values_are_errors(override, message):
    with pytest.raises(ValueError, match=message):
        load_train_config(None, [*PATHS, override])


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["stage=bias", "beta=0.01"], "stage bias trains without a KL term: grpo.beta must be 0, got 0.01"),
        (
            ["stage=bias", "question_kind=inferential"],
            r"data.question_kind must be observational \(or null with data.video_shuffle.*\), got inferential",
        ),
        (["stage=bias", "question_kind=null"], r"must be observational \(.*\), got None"),
        # shuffled videos allow all questions, but not a kind other than observational
        (["stage=bias", "question_kind=inferential", "video_shuffle=true"], "got inferential"),
        (["stage=bias", "reference=r"], "reference r is given but grpo.beta = 0 loads no reference"),
        (["stage=cdpo"], "stage cdpo needs reference: the bias model's folder"),
        (["stage=cdpo", "reference=r", "beta=0.01"], r"grpo.beta must be < 0 \(paper: -0.01\), got 0.01"),
        (["stage=cdpo", "reference=r", "beta=0"], "grpo.beta must be < 0"),
        (["stage=grpo", "beta=-0.01"], "stage grpo needs grpo.beta >= 0, got -0.01.*stage cdpo"),
        (["stage=grpo", "beta=0", "reference=r"], "loads no reference model"),
        (["stage=debias"], "unknown stage 'debias'; expected one of bias, cdpo, grpo"),
        (["num_generations=1"], "grpo.num_generations must be >= 2"),
        (["epsilon=0"], "grpo.epsilon must be > 0, got 0.0"),
        (["epsilon_high=-0.1"], "grpo.epsilon_high must be > 0"),
        (["kl_clamp=0"], "grpo.kl_clamp must be > 0"),
        (["top_p=0"], r"grpo.top_p must be in \(0, 1\]"),
        (["loss_type=ppo"], "grpo.loss_type must be one of grpo, dapo, dr_grpo"),
        (["lr_scheduler_type=step"], "grpo.lr_scheduler_type must be one of"),
        (["reward_funcs=[accuracy, lenght]"], "unknown reward 'lenght'"),
        (["reward_weights=[1.0]"], "1 weights for 2 reward_funcs"),
        (["reward_weights=[1, 0.5, 2]"], "3 weights for 2 reward_funcs"),
        (["report_to=[mlflow]"], "grpo.report_to must be one of jsonl, tensorboard, wandb"),
        (["template=fancy"], "data.template must be one of single, multiple, mixed, auto"),
        (["prompt_truncation=video"], "data.prompt_truncation must be one of error, text"),
        (["dtype=fp8"], "model.dtype must be one of"),
        (["warmup_ratio=1.0"], r"grpo.warmup_ratio must be in \[0, 1\)"),
        (["optim=adamw_bnb_8bit"], "grpo.optim must be one of adamw_torch_fused, adamw_torch, "),
    ],
)
def test_validation_messages(overrides, message):
    with pytest.raises(ValueError, match=message):
        load_train_config(None, [*PATHS, *overrides])


def test_bias_stage_without_causal_labels_takes_all_questions_with_shuffled_videos():
    config = load_train_config(None, [*PATHS, "stage=bias", "question_kind=null", "video_shuffle=true"])
    assert config.data.question_kind is None and config.data.video_shuffle and config.grpo.beta == 0


def test_optim_that_needs_a_missing_package_says_how_to_install_it(monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name: None if name == "torchao" else find_spec(name)
    )
    with pytest.raises(
        ValueError, match=r"grpo.optim = adamw_torch_8bit needs torchao: pip install 'videothinker\[lowmem\]'"
    ):
        load_train_config(None, [*PATHS, "optim=adamw_torch_8bit"])
    assert load_train_config(None, PATHS).grpo.optim == "adamw_torch_fused"  # the default needs torch only


def test_all_problems_reported_at_once():
    with pytest.raises(ValueError) as info:
        load_train_config(None, ["stage=cdpo", "beta=0.1", "num_generations=1"])
    text = str(info.value)
    for part in ("model.path is required", "data.path is required", "needs reference", "beta must be < 0",
                 "num_generations must be >= 2"):  # fmt: skip
        assert part in text


def test_distributed_settings():
    config = load_train_config(None, [*PATHS, "distributed.strategy=fsdp", "distributed.reference=replicate"])
    assert (config.distributed.strategy, config.distributed.reference) == ("fsdp", "replicate")
    assert load_train_config(None, PATHS).distributed.strategy == "replicate"  # today's path by default
    with pytest.raises(ValueError, match="distributed.strategy must be one of replicate, fsdp, got 'zero3'"):
        load_train_config(None, [*PATHS, "distributed.strategy=zero3"])
    problems = TrainConfig(
        distributed=DistributedConfig(strategy="fsdp"), model=ModelConfig(lora_r=8)
    ).problems()
    assert any("fsdp does not train LoRA adapters" in p for p in problems)
    with pytest.raises(ValueError, match="fsdp cannot step grpo.optim = adamw_torch_8bit"):
        load_train_config(None, [*PATHS, "distributed.strategy=fsdp", "optim=adamw_torch_8bit"])


def test_stage_defaults():
    assert stage_defaults("bias") == {"grpo.beta": 0.0, "data.question_kind": "observational"}
    assert stage_defaults("cdpo")["grpo.beta"] < 0 < stage_defaults("grpo")["grpo.beta"]
    with pytest.raises(ValueError, match="unknown stage 'x'"):
        stage_defaults("x")
    # a stage set after loading is still checked
    assert "stage must be one of bias, cdpo, grpo, got 'x'" in TrainConfig(stage="x").problems()


# ---------------------------------------------------------------- presets


def test_resolve_config_path(tmp_path):
    preset = resolve_config_path("paper_qwen2_5_vl_3b_cdpo")
    assert preset.is_file() and preset == resolve_config_path("paper_qwen2_5_vl_3b_cdpo.yaml")
    own = _yaml(tmp_path, {"stage": "grpo"})
    assert resolve_config_path(str(own)) == own
    with pytest.raises(FileNotFoundError, match="presets: .*tiny_cpu"):
        resolve_config_path("paper_qwen9")
    with pytest.raises(FileNotFoundError):
        resolve_config_path(tmp_path / "paper_qwen2_5_vl_3b_cdpo.yaml")  # a folder given: no preset lookup


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_loads_and_validates(name, tmp_path):
    config = load_train_config(name)
    assert config.model.path and config.data.path
    # the resolved config written out (as the trainer logs it) loads back to the same config
    again = load_train_config(_yaml(tmp_path, to_dict(config)))
    assert again == config


def test_presets_present():
    expected = {f"paper_qwen2_5_vl_3b_{s}" for s in ("bias", "cdpo", "grpo")} | {"tiny_cpu"}
    assert expected <= set(preset_names())


@pytest.mark.parametrize(("stage", "beta"), [("bias", 0.0), ("cdpo", -0.01), ("grpo", 0.04)])
def test_paper_presets_carry_the_reference_values(stage, beta):
    config = load_train_config(f"paper_qwen2_5_vl_3b_{stage}")
    g = config.grpo
    assert config.stage == stage and g.beta == beta
    assert (g.kl_clamp, g.epsilon, g.epsilon_high, g.num_generations, g.temperature) == (
        11.0,
        0.2,
        0.28,
        8,
        1.0,
    )
    assert (g.learning_rate, g.max_completion_length, g.max_grad_norm, g.max_steps) == (1e-6, 768, 20.0, 500)
    assert g.loss_type == "grpo" and g.bf16 and config.model.gradient_checkpointing
    assert (config.video.max_frames, config.video.max_pixels) == (16, 256 * 28 * 28)
    assert config.data.question_kind == ("observational" if stage == "bias" else None)
    assert (config.reference is not None) == (stage == "cdpo")


@pytest.mark.parametrize(
    ("preset", "model"),
    [("paper_qwen2_5_vl_3b_cdpo_48gb", "3B"), ("paper_qwen2_5_vl_7b_cdpo", "7B")],
)
def test_low_memory_presets_are_the_paper_recipe_with_bf16_weights_and_8bit_adamw(preset, model):
    """Every setting of the paper's CDPO preset, except the weights' dtype, the optimizer and the paths."""
    paper, low = to_dict(load_train_config("paper_qwen2_5_vl_3b_cdpo")), to_dict(load_train_config(preset))
    assert (low["model"]["dtype"], low["grpo"]["optim"]) == ("bfloat16", "adamw_torch_8bit")
    assert (paper["model"]["dtype"], paper["grpo"]["optim"]) == ("float32", "adamw_torch_fused")
    assert f"Qwen2.5-VL-{model}-Instruct" in low["model"]["path"]
    for config in (paper, low):
        del config["model"]["dtype"], config["model"]["path"], config["grpo"]["optim"]
        del config["output_dir"], config["reference"]
    assert low == paper


@pytest.mark.parametrize(("stage", "beta", "kind"), [("bias", 0.0, "observational"), ("cdpo", -0.01, None)])
def test_tiny_preset_takes_the_stage_from_the_command_line(stage, beta, kind):
    extra = ["reference=outputs/tiny/bias/final"] if stage == "cdpo" else []
    config = load_train_config("tiny_cpu", [f"stage={stage}", *extra])
    assert (config.grpo.beta, config.data.question_kind) == (beta, kind)
    assert config.model.dtype == "float32" and not config.grpo.bf16 and config.grpo.num_generations == 4


# ---------------------------------------------------------------- API


def test_every_field_has_help():
    for cls in (ModelConfig, DataConfig, GRPOConfig, TrainConfig, VideoConfig, DistributedConfig):
        for name, _, help_text in describe(cls):
            assert help_text, f"{cls.__name__}.{name} has no help text"


def test_loss_types_match_the_loss_module():
    from videothinker.config import LOSS_TYPES
    from videothinker.rl.losses import LOSS_TYPES as LOSS_MODULE_TYPES

    assert LOSS_TYPES == LOSS_MODULE_TYPES


def test_load_config_of_a_plain_section(tmp_path):
    path = _yaml(tmp_path, {"fps": 1, "max_frames": 8})
    video = load_config(VideoConfig, path, ["max_frames=4"])
    assert (video.fps, video.max_frames) == (1.0, 4)
    assert dataclasses.asdict(video) == to_dict(video)
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_config(VideoConfig, tmp_path / "missing.yaml")


def test_training_records_with_shuffled_videos_show_other_scenes():
    from pathlib import Path

    from videothinker.rl.run_setup import load_training_records

    family = str(Path(__file__).parent / "fixtures" / "records" / "family.jsonl")
    plain = load_training_records(load_train_config(None, ["model.path=m", f"data.path={family}"]))
    config = load_train_config(None, ["model.path=m", f"data.path={family}", "video_shuffle=true", "seed=5"])
    shuffled = load_training_records(config)
    assert [r.id for r in shuffled] == [r.id for r in plain]
    for kind in {r.data_type for r in plain if r.video is not None}:
        before = [a.video for a in plain if a.video is not None and a.data_type == kind]
        after = [b.video for a, b in zip(plain, shuffled) if a.video is not None and a.data_type == kind]
        assert sorted(set(after)) == sorted(set(before))  # the same videos, redistributed within a type
        if len(set(before)) > 1:  # a type with one video has nowhere else to go
            assert all(x != y for x, y in zip(before, after)), kind
    assert any(a.video != b.video for a, b in zip(plain, shuffled))


def test_bounded_cdpo_preset_is_the_paper_preset_with_a_bounded_repulsion():
    def flat(d, prefix=""):
        out = {}
        for key, value in d.items():
            out.update(
                flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value}
            )
        return out

    paper = flat(to_dict(load_train_config("paper_qwen2_5_vl_3b_cdpo")))
    bounded = flat(to_dict(load_train_config("qwen2_5_vl_3b_cdpo_bounded")))
    changed = {key: bounded[key] for key in paper if paper[key] != bounded[key]}
    assert changed == {
        "grpo.beta": -0.3,
        "cdpo.kl_cap": 0.2,
        "cdpo.one_sided": True,
        "output_dir": "outputs/qwen2_5_vl_3b/cdpo_bounded",
    }
    # the paper presets keep the paper's loss: no cdpo option set
    assert not load_train_config("paper_qwen2_5_vl_3b_cdpo").cdpo.bounded


def test_repulsion_shape_is_checked():
    from videothinker.cdpo_config import REPULSION_SHAPES, CDPOConfig
    from videothinker.rl.losses import SHAPES

    assert REPULSION_SHAPES == SHAPES
    assert CDPOConfig(shape="logsigmoid", one_sided=True).problems("cdpo", -0.3) == []
    assert CDPOConfig(shape="logsigmoid", one_sided=True).bounded
    (problem,) = CDPOConfig(shape="logsigmoid").problems("cdpo", -0.3)
    assert "needs cdpo.one_sided true" in problem
    assert "cdpo.shape must be one of k3, logsigmoid" in CDPOConfig(shape="npo").problems("cdpo", -0.3)[0]
    assert CDPOConfig(shape="logsigmoid", one_sided=True).problems("grpo", 0.04)  # needs a repulsion
