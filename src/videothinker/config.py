"""Typed configuration: dataclasses, one per concern, loaded from YAML with ``--set key=value``
(videothinker/yaml_config.py: which keys a file and ``--set`` may name, and how values are coerced).
Every field carries help text in ``metadata["help"]``; unknown keys are an error, never ignored.

Training (`TrainConfig`) resolves in this order, later wins: dataclass defaults, the stage's defaults
(`stage_defaults`), the YAML file (a path or a preset name, `resolve_config_path`), ``--set``; then
`TrainConfig.validate` checks the stage's rules. `load_train_config` does all of it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from videothinker.cdpo_config import CDPOConfig, CollapseConfig
from videothinker.distributed_config import DistributedConfig
from videothinker.yaml_config import choice_problems as _choice
from videothinker.yaml_config import help_field as _field
from videothinker.yaml_config import load_config, parse_set, read_yaml, resolve_config_path


@dataclasses.dataclass
class VideoConfig:
    """Frame sampling and resizing, with the semantics of Qwen's reference preprocessing
    (qwen-vl-utils ``smart_nframes`` / ``smart_resize``). Defaults are the VideoThinker evaluation
    settings (16 frames at most, 256 * 28 * 28 pixels per frame)."""

    fps: float = _field(2.0, "frames sampled per second of video (qwen-vl-utils FPS)")
    nframes: int | None = _field(
        None, "a fixed frame count instead of fps sampling (rounded to frame_factor)"
    )
    min_frames: int = _field(4, "fewest frames sampled (qwen-vl-utils FPS_MIN_FRAMES)")
    max_frames: int = _field(16, "most frames sampled (VideoThinker sets FPS_MAX_FRAMES=16)")
    frame_factor: int = _field(2, "frame count is rounded to a multiple of this (the temporal patch size)")
    min_pixels: int = _field(128 * 28 * 28, "fewest pixels per frame (qwen-vl-utils VIDEO_MIN_PIXELS)")
    max_pixels: int = _field(
        256 * 28 * 28, "most pixels per frame (VideoThinker sets VIDEO_MAX_PIXELS=256*28*28)"
    )
    total_pixels: int = _field(
        int(128000 * 28 * 28 * 0.9), "pixel budget over all frames (qwen-vl-utils VIDEO_TOTAL_PIXELS)"
    )
    size_factor: int | None = _field(
        None,
        "height and width are rounded to multiples of this; None takes patch_size * merge_size from the "
        "processor (28 for Qwen2/2.5-VL, 32 for Qwen3-VL)",
    )
    cache_dir: str | None = _field(
        None, "folder of an on-disk cache of decoded, sampled frames (None: no cache)"
    )


# ------------------------------------------------------------------------------------------ training

STAGES = ("bias", "cdpo", "grpo")
DTYPES = ("bfloat16", "float16", "float32", "auto")
PROMPT_TRUNCATION = ("error", "text")
LOSS_TYPES = ("grpo", "dapo", "dr_grpo")  # == videothinker.rl.losses.LOSS_TYPES (a test holds them equal)
LR_SCHEDULERS = ("linear", "cosine", "constant", "constant_with_warmup")  # transformers.get_scheduler names
REPORTERS = ("jsonl", "tensorboard", "wandb")


@dataclasses.dataclass
class ModelConfig:
    """The policy model: what is loaded and how it is trained (VideoThinker trains Qwen2.5-VL-3B-Instruct
    in full, vision tower included)."""

    path: str = _field(
        "",
        "local folder of the policy model in Hugging Face format (Qwen2-VL, Qwen2.5-VL, Qwen3-VL or any "
        "AutoModelForImageTextToText); the paper trains Qwen2.5-VL-3B-Instruct",
    )
    dtype: str = _field(
        "bfloat16",
        "weight dtype: bfloat16 | float16 | float32 | auto (reference scripts: --torch_dtype bfloat16)",
    )
    attn_implementation: str = _field(
        "sdpa",
        "attention kernel given to from_pretrained: sdpa | eager | flash_attention_2 (the reference "
        "scripts use flash_attention_2; sdpa needs no extra package)",
    )
    gradient_checkpointing: bool = _field(
        True,
        "recompute activations in backward to save memory (reference scripts: --gradient_checkpointing true)",
    )
    checkpoint_layers: int | None = _field(
        None,
        "with gradient_checkpointing: how many of the language model's decoder layers (the first ones) "
        "recompute their activations; the rest keep them, spending memory to skip their recompute "
        "(None: all layers recompute)",
    )
    freeze_vision: bool = _field(
        False, "keep the vision tower fixed (reference scripts: --freeze_vision_modules false, so it trains)"
    )
    trust_remote_code: bool = _field(
        False, "run Python code shipped in the model folder (off by default: never run untrusted code)"
    )
    # LoRA (videothinker.models.lora; needs peft: pip install 'videothinker[lora]')
    lora_r: int = _field(
        0,
        "LoRA rank: 0 trains every weight (full fine-tuning, as the paper does); > 0 trains only low-rank "
        "adapters (peft) on a frozen base, so checkpoints and OUT/final hold an adapter of a few MB and a "
        "LoRA bias model serves as the CDPO reference on the policy's own base (one base in memory)",
    )
    lora_alpha: int | None = _field(
        None, "LoRA scaling numerator: adapters are scaled by lora_alpha / lora_r (None: 2 * lora_r)"
    )
    lora_dropout: float = _field(
        0.0,
        "dropout on the LoRA adapters' input while training; 0 keeps the trained log-probs those of the "
        "distribution sampled from (sampling runs in eval mode)",
    )
    lora_target_modules: list[str] = _field(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        "last names of the linear layers that get adapters: by default the language model's attention "
        "and MLP projections (the Qwen VL families' names); matched outside the vision tower unless "
        "lora_vision",
    )
    lora_vision: bool = _field(
        False,
        "also put adapters on the vision tower's layers named in lora_target_modules (add its names, e.g. "
        "qkv, proj for Qwen2.5-VL); off: the tower stays frozen in LoRA runs",
    )

    def problems(self) -> list[str]:
        out = [] if self.path else ["model.path is required: the local folder of the policy model"]
        out += _choice("model.dtype", self.dtype, DTYPES)
        if self.checkpoint_layers is not None and self.checkpoint_layers < 0:
            out.append(
                f"model.checkpoint_layers must be >= 0 (None: all layers), got {self.checkpoint_layers}"
            )
        if self.lora_r < 0:
            out.append(f"model.lora_r must be >= 0 (0: full fine-tuning), got {self.lora_r}")
        if self.lora_r <= 0:
            return out + (
                ["model.lora_vision applies to LoRA runs: set model.lora_r > 0"] if self.lora_vision else []
            )
        from videothinker import adapters

        if not adapters.peft_available():
            out.append(
                f"model.lora_r = {self.lora_r} trains LoRA adapters, which need peft: {adapters.INSTALL_HINT}"
            )
        if self.lora_alpha is not None and self.lora_alpha <= 0:
            out.append(f"model.lora_alpha must be > 0, got {self.lora_alpha}")
        if not 0 <= self.lora_dropout < 1:
            out.append(f"model.lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if not self.lora_target_modules:
            out.append("model.lora_target_modules is empty: name the layers that get adapters (e.g. q_proj)")
        if self.lora_vision and self.freeze_vision:
            out.append("model.lora_vision puts adapters on the vision tower that model.freeze_vision freezes")
        return out


@dataclasses.dataclass
class DataConfig:
    """Training records (Video-R1 JSON family, labelled with question_kind) and how prompts are built
    from them. The prompt length limit is `GRPOConfig.max_prompt_length`."""

    path: str = _field("", "training records: a JSON or JSONL file of the Video-R1 family")
    video_root: str | None = _field(
        None, "folder the records' video paths are relative to (None: the records file's folder)"
    )
    question_kind: str | None = _field(
        None,
        "train only on questions of this kind: observational | inferential | None (all). Stage bias "
        "sets observational: the bias model learns the shortcut from them (VideoThinker, bias-aware training)",
    )
    template: str = _field(
        "mixed",
        "training prompt template: single | multiple | mixed | auto (reference scripts: "
        "--question_type mixed; auto picks single or multiple per record from its solution)",
    )
    prompt_truncation: str = _field(
        "error",
        "a prompt over grpo.max_prompt_length: error (stop, naming the record) | text (cut the "
        "question text only, never through video tokens; stop if that is not enough)",
    )
    skip_invalid: bool = _field(
        False,
        "leave out malformed records and records whose media is missing or undecodable (and report how "
        "many) instead of stopping: at the first malformed record, or after the media check with its report",
    )
    shuffle: bool = _field(True, "visit the records in a seeded random order (seed: grpo.seed)")
    video_shuffle: bool = _field(
        False,
        "give every record another scene's video (a seeded derangement of the videos, seed grpo.seed): "
        "what the stage learns then cannot come from the clip. Stage bias may then take all questions "
        "(data.question_kind null): a bias model without causal labels, from the text alone",
    )
    check_media: bool = _field(
        True,
        "before the first step (and before any model loads), check that every record's media exists and "
        "opens (container and first frame; in parallel, cached by path, size and mtime in media_check.json "
        "of video.cache_dir or the output folder); bad media stop the run, or with skip_invalid are left out",
    )
    decode_workers: int = _field(
        2,
        "threads that decode the next prompts' videos while the current step trains; 0: decode in the "
        "loop (the same batches either way)",
    )
    max_decode_failures: int = _field(
        8,
        "stop the run when this many prompts in a row fail to decode (media that passed the check and "
        "break further in); each failure is skipped with a warning and the next prompt takes its place",
    )

    def problems(self) -> list[str]:
        from videothinker.data.prompts import TRAIN_TEMPLATE_MODES
        from videothinker.data.records import QUESTION_KINDS

        out = [] if self.path else ["data.path is required: the training records file"]
        if self.decode_workers < 0:
            out.append(f"data.decode_workers must be >= 0 (0: decode in the loop), got {self.decode_workers}")
        if self.max_decode_failures < 1:
            out.append(f"data.max_decode_failures must be >= 1, got {self.max_decode_failures}")
        if self.question_kind is not None:
            out += _choice("data.question_kind", self.question_kind, QUESTION_KINDS)
        return (
            out
            + _choice("data.template", self.template, TRAIN_TEMPLATE_MODES)
            + _choice("data.prompt_truncation", self.prompt_truncation, PROMPT_TRUNCATION)
        )


@dataclasses.dataclass
class GRPOConfig:
    """The RL objective and the optimisation, with TRL ``GRPOConfig`` / ``TrainingArguments`` names where
    the concept is the same. Defaults are the public VideoThinker settings (DESIGN.md §2, docs/LOSS.md);
    ``beta`` is set per stage by `stage_defaults`."""

    # sampling
    num_generations: int = _field(8, "G: completions sampled per prompt (TRL num_generations; paper: 8)")
    max_prompt_length: int | None = _field(
        4096, "most prompt tokens, video tokens included; None: no limit (reference scripts: 4096)"
    )
    max_completion_length: int = _field(768, "most completion tokens sampled (reference scripts: 768)")
    temperature: float = _field(1.0, "sampling temperature (TRL temperature; reference: 1.0)")
    top_p: float = _field(1.0, "nucleus sampling mass (TRL top_p; 1.0: off)")
    # objective (docs/LOSS.md)
    beta: float = _field(
        0.04,
        "KL coefficient, signed: > 0 attracts to the reference (GRPO), < 0 repels from it (CDPO, paper: "
        "-0.01), 0 loads no reference. 0.04 is the original TRL GRPOConfig default, which the reference code "
        "builds on (recent TRL: 0.0); the stage sets it (bias 0, cdpo -0.01, grpo 0.04)",
    )
    epsilon: float = _field(
        0.2, "lower clip: the ratio is clipped below at 1 - epsilon (TRL epsilon; paper: 0.2)"
    )
    epsilon_high: float = _field(
        0.28,
        "upper clip: the ratio is clipped above at 1 + epsilon_high (TRL epsilon_high, DAPO's clip-higher; "
        "paper: 0.28)",
    )
    kl_clamp: float = _field(
        11.0,
        "bound on |ref_logprobs - logprobs| inside the k3 KL estimator; keeps a repulsive term finite "
        "(public VideoThinker code: 11)",
    )
    loss_type: str = _field(
        "grpo",
        "aggregation of token losses: grpo (per-sequence mean, then mean; reference code) | dapo "
        "(token-level mean) | dr_grpo (sum / (sequences * max_completion_length)) (TRL loss_type)",
    )
    scale_rewards: bool = _field(
        True, "divide group-centred rewards by the group's std (+1e-4); False: Dr. GRPO (TRL scale_rewards)"
    )
    num_iterations: int = _field(
        1,
        "optimizer steps per batch of samples (TRL num_iterations, mu); 1: old_logprobs = logprobs.detach()",
    )
    share_prompt: bool = _field(
        True,
        "log-prob passes (policy, reference, anchor, old policy) run each prompt once for its G completions, "
        "not once per completion: one sequence [prompt | completion 1 | ... | completion G], each completion "
        "attending to the prompt and its own tokens (rl/shared_prompt.py); the same log-probs and gradients, "
        "(G-1) x prompt tokens fewer through every layer; needs model.attn_implementation sdpa or eager "
        "(others fall back with a warning); with model.lora_dropout > 0 the prompt's dropout is drawn once "
        "for its G completions, not once per completion; on by default since 2026-12-05 (on an H200 the "
        "update is faster at no more memory, docs/PERFORMANCE.md); false: one sequence per completion",
    )
    reward_funcs: list[str] = _field(
        ["accuracy", "format"],
        "rewards by registry name or import path pkg.mod:fn, summed (reference: accuracy format)",
    )
    reward_weights: list[float] | None = _field(
        None, "weight of each reward in reward_funcs' order (TRL reward_weights); None: all 1"
    )
    # optimisation (transformers TrainingArguments names)
    optim: str = _field(
        "adamw_torch_fused",
        "optimizer (TrainingArguments optim): adamw_torch_fused (torch AdamW, fused on CUDA; the default) | "
        "adamw_torch | adamw_torch_bf16_sr (bf16 stochastic rounding) | adamw_torch_8bit | adamw_torch_4bit "
        "(8- / 4-bit moments, bf16 stochastic rounding). The torchao ones (pip install "
        "'videothinker[lowmem]') keep lr 1e-6 updates on bf16 weights: model.dtype=bfloat16 with "
        "adamw_torch_8bit needs 6 bytes per parameter instead of the fp32 master path's 16 (rl/optim.py)",
    )
    learning_rate: float = _field(1e-6, "AdamW learning rate (TRL GRPOConfig default; paper: 1e-6)")
    weight_decay: float = _field(0.0, "AdamW weight decay (TrainingArguments default)")
    adam_beta1: float = _field(0.9, "AdamW beta1 (TrainingArguments default)")
    adam_beta2: float = _field(0.999, "AdamW beta2 (TrainingArguments default)")
    lr_scheduler_type: str = _field(
        "linear",
        "learning-rate schedule: linear | cosine | constant | constant_with_warmup. The reference "
        "scripts set none, so TrainingArguments' linear decay to 0 applied",
    )
    warmup_ratio: float = _field(0.0, "fraction of max_steps spent warming the learning rate up from 0")
    max_grad_norm: float = _field(20.0, "gradient-norm clipping threshold (reference scripts: 20)")
    per_device_train_batch_size: int = _field(
        1, "prompts per micro-batch per device, each with num_generations completions (reference: 1)"
    )
    gradient_accumulation_steps: int = _field(1, "micro-batches per optimizer step (reference: 1)")
    bf16: bool = _field(True, "bfloat16 mixed precision (reference scripts: --bf16)")
    max_steps: int = _field(500, "optimizer steps to train (paper: 500 per stage)")
    save_steps: int = _field(500, "save a checkpoint every this many steps (reference scripts: 500)")
    save_total_limit: int | None = _field(None, "keep at most this many checkpoints (None: all)")
    logging_steps: int = _field(1, "log metrics every this many steps (reference scripts: 1)")
    seed: int = _field(
        42, "seed of sampling, data order and initialisation (reference scripts: data_seed 42)"
    )
    report_to: list[str] = _field(
        ["jsonl"],
        "metric sinks: jsonl (log.jsonl in output_dir, always written), tensorboard, wandb (pip install "
        "wandb; its WANDB_* variables apply, e.g. WANDB_MODE=offline, WANDB_PROJECT)",
    )
    max_nonfinite_steps: int = _field(
        3, "a non-finite loss or gradient skips the step; this many such steps in a row stop the run"
    )

    def problems(self) -> list[str]:
        from videothinker.rl.rewards import REWARDS

        positive = {
            "num_iterations": self.num_iterations, "max_completion_length": self.max_completion_length,
            "temperature": self.temperature, "epsilon": self.epsilon, "epsilon_high": self.epsilon_high,
            "kl_clamp": self.kl_clamp, "learning_rate": self.learning_rate, "max_grad_norm": self.max_grad_norm,
            "per_device_train_batch_size": self.per_device_train_batch_size,
            "gradient_accumulation_steps": self.gradient_accumulation_steps, "max_steps": self.max_steps,
            "save_steps": self.save_steps, "logging_steps": self.logging_steps,
            "max_nonfinite_steps": self.max_nonfinite_steps, "max_prompt_length": self.max_prompt_length or 1,
            "save_total_limit": self.save_total_limit or 1,
        }  # fmt: skip
        out = [f"grpo.{name} must be > 0, got {value}" for name, value in positive.items() if not value > 0]
        if self.num_generations < 2:
            out.append(
                f"grpo.num_generations must be >= 2 (advantages compare completions of one prompt), got "
                f"{self.num_generations}"
            )
        if not 0 < self.top_p <= 1:
            out.append(f"grpo.top_p must be in (0, 1], got {self.top_p}")
        for name in ("weight_decay", "warmup_ratio", "adam_beta1", "adam_beta2"):
            low, high = (0.0, float("inf")) if name == "weight_decay" else (0.0, 1.0)
            if not low <= getattr(self, name) < high:
                out.append(f"grpo.{name} must be in [{low:g}, {high:g}), got {getattr(self, name)}")
        if not self.reward_funcs:
            out.append("grpo.reward_funcs is empty: name at least one reward (e.g. accuracy, format)")
        for name in self.reward_funcs:
            if name not in REWARDS and ":" not in name and "." not in name:
                out.append(
                    f"grpo.reward_funcs: unknown reward {name!r}; known: {', '.join(REWARDS)} or pkg.mod:fn"
                )
        if self.reward_weights is not None and len(self.reward_weights) != len(self.reward_funcs):
            out.append(
                f"grpo.reward_weights has {len(self.reward_weights)} weights for {len(self.reward_funcs)} "
                "reward_funcs"
            )
        for item in self.report_to:
            out += _choice("grpo.report_to", item, REPORTERS)
        from videothinker.rl.optim import optim_problems

        out += optim_problems(self.optim)
        return (
            out
            + _choice("grpo.loss_type", self.loss_type, LOSS_TYPES)
            + _choice("grpo.lr_scheduler_type", self.lr_scheduler_type, LR_SCHEDULERS)
        )


ENGINES = ("graph", "generate")
DECODE_ATTENTION = ("sdpa", "matmul", "flex")  # rollout.decode_attention (`models/decode_fused.py`)


@dataclasses.dataclass
class RolloutConfig:
    """How completions are decoded, by `train` (sampling) and `eval` (greedy): docs/PERFORMANCE.md."""

    engine: str = _field(
        "graph",
        "graph: videothinker's decode engine (one prefill, a static KV cache, the decode step captured "
        "once in a CUDA graph and replayed on a GPU, run eagerly on a CPU) | generate: plain transformers "
        "generate, the reference. A model the engine cannot serve (quantised layers, another architecture) "
        "falls back to generate with a warning",
    )
    prompt_bucket: int = _field(
        256,
        "graph engine: prompt lengths are padded up to a multiple of this, so cache shapes and graphs repeat",
    )
    check_every: int = _field(
        16,
        "graph engine: decode steps between checks that every completion has ended (each check waits for the GPU)",
    )
    cuda_graphs: bool = _field(
        True, "graph engine: capture the decode step in a CUDA graph on a GPU (false: eager, for debugging)"
    )
    compile: bool = _field(
        False,
        "graph engine: torch.compile the decode layer (fused norms, rotary, residuals); with the fused step "
        "the whole fused layer, cache write and attention included; with the simple step its parts around "
        "attention; the first step compiles",
    )
    fused_step: bool | None = _field(
        None,
        "graph engine: decode with the fused step (models/decode_fused.py): q/k/v and gate/up weights "
        "held fused, one matrix product instead of three and two; norms as F.rms_norm; rotary on q and k "
        "at once; one cache write a layer; about a third of the kernels a layer (3B on an H200: 4.76 ms a "
        "decode step instead of 7.06, the paper preset's step 6.81 s instead of 8.25). null (default): "
        "fused where the engine copies the weights anyway (fp32 masters under bf16, LoRA, FSDP), at no "
        "extra memory; true: also for weights decoded in their own dtype (the fused buffers are then a "
        "copy, refreshed each step); false: the simple step",
    )

    decode_attention: str = _field(
        "matmul",
        "graph engine, fused step: the attention over the KV cache: matmul (two batched products around a "
        "softmax, spread over the cache length; 4.04 ms a decode step against SDPA's 4.78 on an H200) | "
        "sdpa (one SDPA call, torch picks the kernel) | flex (torch's flex attention, compiled: its "
        "split-KV decoding kernel reads only the written blocks; 4.74 ms a decode step against matmul's "
        "4.52 on an H100 over a 736-token rollout, compiled 4.05 against 3.78, and the first step "
        "compiles it); the simple "
        "step always calls SDPA",
    )

    def problems(self) -> list[str]:
        out = _choice("rollout.engine", self.engine, ENGINES)
        out += _choice("rollout.decode_attention", self.decode_attention, DECODE_ATTENTION)
        return out + [
            f"rollout.{name} must be >= 1, got {getattr(self, name)}"
            for name in ("prompt_bucket", "check_every")
            if getattr(self, name) < 1
        ]


@dataclasses.dataclass
class TrainConfig:
    """One training run: a stage of VideoThinker (bias, cdpo) or the GRPO baseline.

    ``bias``: GRPO with beta = 0 on observational questions -> the bias model.
    ``cdpo``: GRPO on all questions with a KL term to the bias model (``reference``) and beta < 0.
    ``grpo``: plain GRPO; the KL term (beta >= 0) measures against ``reference`` or, when None, the
    initial policy.
    """

    model: ModelConfig = dataclasses.field(default_factory=ModelConfig, metadata={"help": "the policy model"})
    data: DataConfig = dataclasses.field(default_factory=DataConfig, metadata={"help": "training records"})
    video: VideoConfig = dataclasses.field(default_factory=VideoConfig, metadata={"help": "frame sampling"})
    grpo: GRPOConfig = dataclasses.field(
        default_factory=GRPOConfig, metadata={"help": "objective, optimiser"}
    )
    rollout: RolloutConfig = dataclasses.field(
        default_factory=RolloutConfig, metadata={"help": "decoding engine"}
    )
    distributed: DistributedConfig = dataclasses.field(
        default_factory=DistributedConfig, metadata={"help": "several processes: replicate or shard"}
    )
    cdpo: CDPOConfig = dataclasses.field(
        default_factory=CDPOConfig, metadata={"help": "bounds on CDPO's repulsion (off by default)"}
    )
    collapse: CollapseConfig = dataclasses.field(
        default_factory=CollapseConfig, metadata={"help": "when a collapsing run stops"}
    )
    stage: str = _field("grpo", "bias | cdpo | grpo; sets stage_defaults() under the YAML and --set")
    reference: str | None = _field(
        None,
        "local folder of the reference model the KL term measures against (a full model or a LoRA "
        "adapter). cdpo: the bias model, required. grpo: None = the initial policy (model.path; for a LoRA "
        "policy, its base with the adapter disabled). bias: none. A LoRA adapter on the policy's own base "
        "with a LoRA policy is loaded into the policy as adapter 'reference': one base in memory",
    )
    reference_base: str | None = _field(
        None,
        "the base model of a LoRA reference adapter, when its adapter_config.json's base_model_name_or_path "
        "is not where the base is now (moved, another machine). Equal to model.path (after resolving) "
        "with a LoRA policy: the adapter shares the policy's base. None: the adapter's own record",
    )
    output_dir: str = _field("outputs/run", "folder of checkpoints, log.jsonl and the resolved config")

    def problems(self) -> list[str]:
        out = self.model.problems() + self.data.problems() + self.grpo.problems() + self.rollout.problems()
        out += self.distributed.problems(self.model.lora_r, self.grpo.optim)
        out += self.cdpo.problems(self.stage, self.grpo.beta) + self.collapse.problems()
        if self.stage not in STAGES:
            return out + _choice("stage", self.stage, STAGES)
        beta, kind = self.grpo.beta, self.data.question_kind
        if self.stage == "bias":
            if beta != 0:
                out.append(f"stage bias trains without a KL term: grpo.beta must be 0, got {beta:g}")
            if kind != "observational" and not (kind is None and self.data.video_shuffle):
                out.append(
                    f"stage bias learns the shortcut from observational questions: data.question_kind must be "
                    f"observational (or null with data.video_shuffle: a bias model without causal labels), got {kind}"
                )
        elif self.stage == "cdpo":
            if beta >= 0:
                out.append(
                    f"stage cdpo repels the policy from the bias model: grpo.beta must be < 0 (paper: -0.01), got "
                    f"{beta:g}; for an attracting KL term use stage grpo"
                )
            if not self.reference:
                out.append(
                    "stage cdpo needs reference: the bias model's folder (the output of stage bias), e.g. "
                    "--set reference=outputs/bias/final"
                )
        elif beta < 0:
            out.append(
                f"stage grpo needs grpo.beta >= 0, got {beta:g}; a negative beta repels from the reference: that is "
                "stage cdpo (with reference = the bias model)"
            )
        if beta == 0 and self.reference:
            out.append(
                f"reference {self.reference} is given but grpo.beta = 0 loads no reference model; remove it or "
                "set a non-zero beta"
            )
        if self.reference_base and not self.reference:
            out.append("reference_base names the base of a LoRA reference adapter: set reference too")
        if beta != 0 and self.reference and self.model.lora_r == 0:
            from videothinker import adapters

            if adapters.is_adapter(self.reference) and not adapters.peft_available():
                out.append(
                    f"reference {self.reference} is a LoRA adapter, which needs peft: {adapters.INSTALL_HINT}"
                )
        return out

    def validate(self) -> None:
        """Raise ValueError listing every problem (field ranges, choices, the stage's rules)."""
        problems = self.problems()
        if problems:
            raise ValueError("invalid training config:\n  - " + "\n  - ".join(problems))


def stage_defaults(stage: str) -> dict[str, Any]:
    """Field values a stage sets before the YAML file and ``--set`` (which may still override them;
    `TrainConfig.validate` then says if the stage's rule is broken)."""
    defaults = {
        "bias": {"grpo.beta": 0.0, "data.question_kind": "observational"},
        "cdpo": {"grpo.beta": -0.01},
        "grpo": {"grpo.beta": 0.04},
    }
    if stage not in defaults:
        raise ValueError(f"unknown stage {stage!r}; expected one of {', '.join(STAGES)}")
    return dict(defaults[stage])


def load_train_config(config: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """The resolved, validated `TrainConfig`: defaults < stage_defaults(stage) < YAML (a path or a preset
    name) < ``--set``. The stage is read from ``--set``, else the YAML, else the default."""
    path = resolve_config_path(config) if config is not None else None
    stage = parse_set(overrides).get("stage", read_yaml(path).get("stage") if path else None)
    stage = TrainConfig().stage if stage is None else stage
    return load_config(TrainConfig, path, overrides, defaults=stage_defaults(stage))
