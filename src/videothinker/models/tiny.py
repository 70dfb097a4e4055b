"""Tiny random-init models of the real Qwen VL architectures, built locally with no hub access.

A tiny model is the family's real model class (Qwen2-VL, Qwen2.5-VL or Qwen3-VL) at a width of about
64, saved with the family's real processor (image + video processor with the real patch sizes), a
byte-level BPE tokenizer trained on the fly on prompt-like English, the family's special tokens and
its chat template. Tests, the demo and benchmarks use it wherever a real checkpoint would be too big
or unreachable: every code path (chat template, video tokens, M-RoPE position ids, ``generate``) is
the real one. The weights are random: a tiny model knows nothing until something trains it.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
from dataclasses import asdict, dataclass, fields
from pathlib import Path

ARCHS = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")

# Qwen's special tokens in the order of their ids in the real vocabularies (Qwen2.5-VL and Qwen3-VL
# add the tool / fim tokens after the vision ones; Qwen2-VL stops at <|video_pad|>).
_SPECIAL_TOKENS = {
    "qwen2_vl": [
        "<|endoftext|>",
        "<|im_start|>",
        "<|im_end|>",
        "<|object_ref_start|>",
        "<|object_ref_end|>",
        "<|box_start|>",
        "<|box_end|>",
        "<|quad_start|>",
        "<|quad_end|>",
        "<|vision_start|>",
        "<|vision_end|>",
        "<|vision_pad|>",
        "<|image_pad|>",
        "<|video_pad|>",
    ]
}
_SPECIAL_TOKENS["qwen2_5_vl"] = _SPECIAL_TOKENS["qwen2_vl"] + (
    ["<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>"]
)
_SPECIAL_TOKENS["qwen3_vl"] = _SPECIAL_TOKENS["qwen2_5_vl"]
# Plain added tokens: single tokens the model can emit, kept by decode(skip_special_tokens=True), so
# the answer parser sees them. (Qwen3 has <think> and </think> as added tokens too.)
REASONING_TOKENS = ["<think>", "</think>", "<answer>", "</answer>"]

# Qwen's pre-tokenizer: digits split one by one, letters grouped, punctuation runs, whitespace.
_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|"""
    r"""\s+(?!\S)|\s+"""
)

# The Qwen2-VL / Qwen2.5-VL chat template (Qwen2-VL-7B-Instruct's chat_template.json): a default
# system turn, then <|vision_start|><|video_pad|><|vision_end|> for each video content part.
_QWEN2_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# The Qwen3-VL-Instruct chat template without its tool-calling branches: no default system turn.
_QWEN3_VL_CHAT_TEMPLATE = (
    "{%- set image_count = namespace(value=0) %}{%- set video_count = namespace(value=0) %}"
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string %}{{- message['content'] }}{%- else %}"
    "{%- for content in message['content'] %}"
    "{%- if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{%- set image_count.value = image_count.value + 1 %}"
    "{%- if add_vision_id %}Picture {{ image_count.value }}: {% endif -%}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{%- elif content['type'] == 'video' or 'video' in content %}"
    "{%- set video_count.value = video_count.value + 1 %}"
    "{%- if add_vision_id %}Video {{ video_count.value }}: {% endif -%}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{%- elif 'text' in content %}{{- content['text'] }}{%- endif %}"
    "{%- endfor %}{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


@dataclass
class TinySizes:
    """Widths and depths of a tiny model (the real models are 30-100x wider).

    Attributes:
        vocab_size: target size of the trained BPE vocabulary (bytes + merges, before special tokens);
            a small corpus may stop short of it.
        hidden_size: language model width; head_dim = hidden_size / num_attention_heads.
        intermediate_size: language model MLP width.
        num_hidden_layers: language model depth.
        num_attention_heads: language model query heads.
        num_key_value_heads: language model key/value heads (grouped-query attention).
        vision_hidden_size: vision tower width.
        vision_intermediate_size: vision tower MLP width (Qwen2.5-VL and Qwen3-VL).
        vision_depth: vision tower blocks.
        vision_num_heads: vision tower attention heads.
    """

    vocab_size: int = 1024
    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    vision_hidden_size: int = 32
    vision_intermediate_size: int = 64
    vision_depth: int = 2
    vision_num_heads: int = 2

    def __post_init__(self) -> None:
        for f in fields(self):
            if int(getattr(self, f.name)) < 1:
                raise ValueError(f"tiny model size {f.name} must be positive, got {getattr(self, f.name)}")
        if self.vocab_size < 300:
            raise ValueError(f"vocab_size must be at least 300 (256 bytes + merges), got {self.vocab_size}")
        for width, heads, what in (
            (self.hidden_size, self.num_attention_heads, ""),
            (self.vision_hidden_size, self.vision_num_heads, "vision_"),
        ):
            if width % heads or (width // heads) % 4:
                raise ValueError(
                    f"{what}hidden_size ({width}) must be {what}num_heads ({heads}) times a multiple of 4 "
                    "(rotary embeddings split the head dimension)"
                )
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                f"num_key_value_heads ({self.num_key_value_heads})"
            )


def builtin_corpus() -> list[str]:
    """Prompt-like English for the tokenizer: the project's prompt templates, CLEVRER-style questions
    and options, reasoning phrases and answers in the <think>/<answer> format."""
    from videothinker.data.prompts import (
        EVAL_MULTI_ANSWER_SUFFIX,
        EVAL_TEMPLATE,
        EVAL_TYPE_SUFFIX,
        TRAIN_TEMPLATES,
    )

    colors = ["gray", "red", "blue", "green", "brown", "cyan", "purple", "yellow"]
    shapes = ["cube", "sphere", "cylinder"]
    materials = ["metal", "rubber"]
    lines = [t.format(Question="Which of the following will happen?") for t in TRAIN_TEMPLATES.values()]
    lines += [EVAL_TEMPLATE.format(Question="What is shown?") + s for s in EVAL_TYPE_SUFFIX.values()]
    lines.append(EVAL_MULTI_ANSWER_SUFFIX)
    for (color, other), shape, material in itertools.product(
        itertools.permutations(colors, 2), shapes, materials
    ):
        obj, obj2 = f"the {color} {material} {shape}", f"the {other} {shape}"
        lines += [
            f"Which of the following will happen if {obj} is removed?",
            f"Which of the following will not happen if {obj2} is removed?",
            f"A. {obj.capitalize()} collides with {obj2}. B. {obj2.capitalize()} enters the scene.",
            f"C. {obj.capitalize()} exits the scene. D. {obj2.capitalize()} and {obj} collide.",
            f"What will happen next? Which object moves? How many {shape}s are moving? Is {obj} stationary?",
            f"<think>Let me think. {obj.capitalize()} hits {obj2} first, so without it nothing collides. "
            f"Wait, I see {obj2} still enters.</think><answer>A,C</answer>",
        ]
    # Chat roles and general video-QA words (benchmarks of the Video-R1 family), each seen often
    # enough (min_frequency) to become whole tokens.
    subjects = ["person", "man", "woman", "car", "ball", "dog", "cat", "hand", "camera", "object"]
    for subject in subjects:
        lines += [
            "system\nYou are a helpful assistant.\nuser\nQuestion?\nOptions:\nA. yes\nassistant\n",
            f"What is the {subject} doing in the video? Where does the {subject} go after it turns left "
            f"or right? Why did the {subject} stop? When does the {subject} appear for the first time?",
            f"How many times does the {subject} jump, run, walk, open or close the door, pick up or put "
            f"down the box? What color is the {subject}? Is the {subject} moving up, down, faster or slower?",
        ]
    lines += [
        "Hmm, let me think about it. Wait, oh, I see. Let's break it down step by step.",
        "First, second, then, after that, finally: the answer is B. The answer is D, E or F.",
        "Options: A B C D E F. Answer: A, C. 0 1 2 3 4 5 6 7 8 9 10 42 3.14 frames seconds video image",
        "<think>The video shows the objects moving and colliding.</think><answer>B</answer>",
        "Please provide the numerical value within the tags. yes no true false before after during",
    ]
    return lines


def build_tiny_model(
    arch: str,
    out_dir: str | Path,
    *,
    corpus: str | Path | None = None,
    seed: int = 0,
    overwrite: bool = False,
    **sizes: int,
) -> Path:
    """Build a tiny random-init model of a real Qwen VL architecture and save it in HF format.

    Args:
        arch: one of ``qwen2_vl``, ``qwen2_5_vl``, ``qwen3_vl``.
        out_dir: where to write config.json, model.safetensors, generation_config.json, the tokenizer
            and the processor configs (reloadable with ``AutoModelForImageTextToText`` /
            ``AutoProcessor.from_pretrained``). Written to a temporary folder, then renamed.
        corpus: a UTF-8 text file (one sample per line) to train the tokenizer on, added to the
            built-in prompt-like corpus.
        seed: seed of the random weights (the tokenizer is deterministic).
        overwrite: replace an existing model in ``out_dir`` instead of refusing to.
        **sizes: fields of `TinySizes` (hidden_size, vision_depth, vocab_size, ...).

    Returns:
        ``out_dir`` as a Path.
    """
    import torch

    if arch not in ARCHS:
        raise ValueError(f"unknown tiny model architecture {arch!r}; expected one of {', '.join(ARCHS)}")
    known = {f.name for f in fields(TinySizes)}
    if unknown := sorted(set(sizes) - known):
        raise ValueError(
            f"unknown tiny model size(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    dims = TinySizes(**sizes)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{out_dir} is a file; give a folder to write the tiny model to")
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise ValueError(f"{out_dir} is not empty; choose another output folder or overwrite it")
    lines = builtin_corpus()
    if corpus is not None:
        corpus = Path(corpus)
        if not corpus.is_file():
            raise FileNotFoundError(f"tokenizer corpus {corpus} does not exist")
        lines += [line for line in corpus.read_text(encoding="utf-8").splitlines() if line.strip()]

    processor = _build_processor(arch, _train_tokenizer(arch, lines, dims.vocab_size))
    tokenizer = processor.tokenizer
    config = _model_config(arch, dims, tokenizer)
    model_class = _model_class(arch)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_class(config)
    endoftext, im_end = tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|im_end|>"])
    model.generation_config.bos_token_id = endoftext
    model.generation_config.eos_token_id = [im_end, endoftext]
    model.generation_config.pad_token_id = endoftext

    tmp = out_dir.with_name(f"{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    _save_quietly(model, tmp)
    processor.save_pretrained(tmp)
    (tmp / "tiny_model.json").write_text(json.dumps({"arch": arch, "seed": seed, **asdict(dims)}, indent=2))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(out_dir)
    return out_dir


def _save_quietly(model, path: Path) -> None:
    """save_pretrained without transformers' per-shard progress bar (one tiny shard)."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(path)
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def _train_tokenizer(arch: str, lines: list[str], vocab_size: int):
    """A Qwen2Tokenizer whose BPE merges are trained on ``lines``, with the family's special tokens."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, trainers
    from tokenizers.models import BPE
    from transformers import Qwen2Tokenizer

    bpe = Tokenizer(BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(lines, trainer)
    model = json.loads(bpe.to_str())["model"]
    vocab = dict(model["vocab"])
    specials = _SPECIAL_TOKENS[arch]
    for token in specials + REASONING_TOKENS:
        vocab[token] = len(vocab)
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=[tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]],
        unk_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=[t for t in specials if t not in ("<|im_end|>", "<|endoftext|>")],
        model_max_length=32768,
        errors="replace",
    )
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in REASONING_TOKENS])
    return tokenizer


def _build_processor(arch: str, tokenizer):
    """The family's real processor, with the real checkpoints' patch sizes and normalisation."""
    from transformers import (
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
        Qwen3VLProcessor,
        Qwen3VLVideoProcessor,
    )

    if arch == "qwen3_vl":
        half = {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}
        image_processor = Qwen2VLImageProcessor(
            size={"shortest_edge": 65536, "longest_edge": 16777216},
            patch_size=16,
            temporal_patch_size=2,
            merge_size=2,
            **half,
        )
        video_processor = Qwen3VLVideoProcessor(
            size={"shortest_edge": 4096, "longest_edge": 25165824},
            patch_size=16,
            temporal_patch_size=2,
            merge_size=2,
            fps=2,
            **half,
        )
        return Qwen3VLProcessor(
            image_processor, tokenizer, video_processor, chat_template=_QWEN3_VL_CHAT_TEMPLATE
        )
    image_processor = Qwen2VLImageProcessor(
        size={"shortest_edge": 56 * 56, "longest_edge": 28 * 28 * 1280},
        patch_size=14,
        temporal_patch_size=2,
        merge_size=2,
    )
    video_processor = Qwen2VLVideoProcessor(
        size={"shortest_edge": 128 * 28 * 28, "longest_edge": 28 * 28 * 768},
        patch_size=14,
        temporal_patch_size=2,
        merge_size=2,
    )
    processor_class = Qwen2VLProcessor if arch == "qwen2_vl" else Qwen2_5_VLProcessor
    return processor_class(image_processor, tokenizer, video_processor, chat_template=_QWEN2_VL_CHAT_TEMPLATE)


def _mrope_section(arch: str, head_dim: int) -> list[int]:
    """M-RoPE (temporal, height, width) frequency split of head_dim / 2, in the real models' ratios:
    [16, 24, 24] of 64 for Qwen2/2.5-VL, [24, 20, 20] of 64 for Qwen3-VL."""
    half = head_dim // 2
    if arch == "qwen3_vl":
        height = round(half * 20 / 64)
        return [half - 2 * height, height, height]
    temporal = half // 4
    height = (half - temporal) // 2
    return [temporal, height, half - temporal - height]


def _model_config(arch: str, dims: TinySizes, tokenizer):
    from transformers import Qwen2_5_VLConfig, Qwen2VLConfig, Qwen3VLConfig

    vocab_size = -(-len(tokenizer) // 64) * 64  # padded like the real embeddings
    head_dim = dims.hidden_size // dims.num_attention_heads
    endoftext, im_end = tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|im_end|>"])
    text = {
        "vocab_size": vocab_size,
        "hidden_size": dims.hidden_size,
        "intermediate_size": dims.intermediate_size,
        "num_hidden_layers": dims.num_hidden_layers,
        "num_attention_heads": dims.num_attention_heads,
        "num_key_value_heads": dims.num_key_value_heads,
        "max_position_embeddings": 32768,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 1000000.0 if arch != "qwen3_vl" else 5000000.0,
            "mrope_section": _mrope_section(arch, head_dim),
        },
        "bos_token_id": endoftext,
        "eos_token_id": im_end,
        "pad_token_id": endoftext,
    }
    ids = dict(
        zip(
            ["image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id"],
            tokenizer.convert_tokens_to_ids(
                ["<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>"]
            ),
        )
    )
    vision = {
        "depth": dims.vision_depth,
        "num_heads": dims.vision_num_heads,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "in_channels": 3,
    }
    if arch == "qwen2_vl":
        vision |= {
            "embed_dim": dims.vision_hidden_size,
            "hidden_size": dims.hidden_size,
            "mlp_ratio": 2,
            "patch_size": 14,
        }
        return Qwen2VLConfig(text_config=text, vision_config=vision, dtype="float32", **ids)
    vision |= {
        "hidden_size": dims.vision_hidden_size,
        "intermediate_size": dims.vision_intermediate_size,
        "out_hidden_size": dims.hidden_size,
    }
    if arch == "qwen2_5_vl":
        vision |= {
            "patch_size": 14,
            "window_size": 112,
            "fullatt_block_indexes": [dims.vision_depth - 1],
            "tokens_per_second": 2,
        }
        return Qwen2_5_VLConfig(text_config=text, vision_config=vision, dtype="float32", **ids)
    text["head_dim"] = head_dim
    text["rope_parameters"]["mrope_interleaved"] = True  # as in the real configs (always on in the code)
    vision |= {"patch_size": 16, "num_position_embeddings": 576, "deepstack_visual_indexes": [0]}
    return Qwen3VLConfig(text_config=text, vision_config=vision, dtype="float32", **ids)


def _model_class(arch: str):
    import transformers

    return getattr(
        transformers,
        {
            "qwen2_vl": "Qwen2VLForConditionalGeneration",
            "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration",
            "qwen3_vl": "Qwen3VLForConditionalGeneration",
        }[arch],
    )
