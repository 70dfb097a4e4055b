"""Loading a vision-language checkpoint and its processor from a local folder, safely.

Real checkpoints (Qwen2-VL, Qwen2.5-VL, Qwen3-VL, any ``AutoModelForImageTextToText``) and tiny
models (`videothinker.models.tiny`) load the same way: by local path only (no hub), weights from
safetensors only (a pickled ``.bin`` is never unpickled), remote code off unless asked for. The small
helpers here answer the questions other modules ask of a model: its family, its end-of-sequence
tokens, and the pixel grid its video frames must be resized to.
"""

from __future__ import annotations

from pathlib import Path

from videothinker.adapters import adapter_config, is_adapter, require_peft

DTYPES = ("auto", "bfloat16", "float16", "float32")

# model_type -> family; a family shares a processor layout and M-RoPE scheme.
FAMILIES = {
    "qwen2_vl": "qwen2_vl",
    "qwen2_5_vl": "qwen2_5_vl",
    "qwen3_vl": "qwen3_vl",
    "qwen3_vl_moe": "qwen3_vl",
}


def _checkpoint_dir(path: str | Path) -> Path:
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"model path {path} does not exist (models load from local folders only)")
    if not path.is_dir():
        raise ValueError(f"model path {path} is not a folder; give the checkpoint folder holding config.json")
    if not (path / "config.json").is_file():
        raise ValueError(f"{path} has no config.json: not a Hugging Face checkpoint folder")
    return path


def load_model(
    path: str | Path,
    *,
    dtype: str = "auto",
    attn_implementation: str = "sdpa",
    trust_remote_code: bool = False,
    device: str | None = None,
):
    """Load an image/video-text-to-text model from a local checkpoint folder.

    Args:
        path: folder with config.json and ``*.safetensors`` weights, or a LoRA adapter folder
            (adapter_config.json naming its base), which loads as the base with the adapter merged.
        dtype: ``auto`` (the checkpoint's own), ``bfloat16``, ``float16`` or ``float32``.
        attn_implementation: ``sdpa``, ``eager``, ``flash_attention_2``, ... as transformers takes it.
        trust_remote_code: allow the checkpoint's own Python code to run (off by default).
        device: load the weights onto it (``cpu``, ``cuda``, ``cuda:1``); None: CPU. Leave it None
            under DeepSpeed ZeRO-3, which places the weights itself.

    Returns:
        The model (an ``AutoModelForImageTextToText`` class) in eval mode.
    """
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; expected one of {', '.join(DTYPES)}")
    adapter = Path(path).expanduser()
    if is_adapter(adapter) and not (adapter / "config.json").is_file():
        # A LoRA run's output: its base, with the adapter merged in.
        base = adapter_config(adapter).get("base_model_name_or_path")
        if not base:
            raise ValueError(f"{adapter}/adapter_config.json names no base_model_name_or_path")
        kwargs = dict(dtype=dtype, attn_implementation=attn_implementation, device=device)
        return load_merged_adapter(adapter, base, trust_remote_code=trust_remote_code, **kwargs)
    path = _checkpoint_dir(path)
    if not any(path.glob("*.safetensors")):
        raise ValueError(
            f"{path} has no *.safetensors weights; pickled weights (.bin, .pt) are not loaded "
            "(convert them to safetensors in a trusted environment)"
        )
    import torch
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(
        path,
        dtype=dtype if dtype == "auto" else getattr(torch, dtype),
        attn_implementation=attn_implementation,
        trust_remote_code=trust_remote_code,
        use_safetensors=True,
        local_files_only=True,
        device_map=device,  # weights land on the device directly, not via a CPU copy
    )
    return model.eval()


def load_merged_adapter(path: str | Path, base: str | Path, **load_kwargs):
    """A LoRA adapter merged into its base: a plain, frozen model (as a reference: a second base in
    memory; ``save_pretrained`` on it writes a full checkpoint that `load_model` and eval take).

    Args:
        path: the adapter folder.
        base: its base model's folder.
        load_kwargs: dtype, attn_implementation, trust_remote_code, device, as `load_model` takes them.
    """
    peft = require_peft()
    model = load_model(base, **load_kwargs)
    device = load_kwargs.get("device")
    merged = peft.PeftModel.from_pretrained(
        model, str(path), is_trainable=False, torch_device=str(device) if device is not None else None
    ).merge_and_unload()
    return merged.eval().requires_grad_(False)


def enable_activation_checkpointing(model) -> None:
    """Recompute activations in the backward pass (non-reentrant checkpoints): transformers >= 5.24's
    ``activation_checkpointing_enable``, or the older ``gradient_checkpointing_enable`` it deprecates."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def limit_activation_checkpointing(model, layers: int) -> int:
    """After `enable_activation_checkpointing`: keep recomputation on the first ``layers`` decoder
    layers of the language model and turn it off on the others (transformers' per-layer
    ``gradient_checkpointing`` flag), so their activations stay in memory and their forward runs once.
    Returns how many layers no longer recompute. The vision tower keeps its setting."""
    from videothinker.models.vision import vlm_body

    decoder = vlm_body(model).language_model.layers
    if not 0 <= layers <= len(decoder):
        raise ValueError(
            f"model.checkpoint_layers must be between 0 and {len(decoder)} (the decoder layers), got {layers}"
        )
    if not all(hasattr(layer, "gradient_checkpointing") for layer in decoder):
        raise ValueError(f"{type(decoder[0]).__name__} has no per-layer gradient_checkpointing flag")
    for layer in decoder[layers:]:
        layer.gradient_checkpointing = False
    return len(decoder) - layers


def load_processor(path: str | Path, *, trust_remote_code: bool = False):
    """Load the processor (tokenizer + image/video processors + chat template) of a local checkpoint."""
    from transformers import AutoProcessor

    folder = Path(path).expanduser()
    if not (is_adapter(folder) and not (folder / "config.json").is_file()):
        folder = _checkpoint_dir(folder)  # a LoRA adapter folder carries the processor files but no config
    return AutoProcessor.from_pretrained(folder, trust_remote_code=trust_remote_code, local_files_only=True)


def _vision_processor(processor, image: bool = False):
    names = ("image_processor", "video_processor") if image else ("video_processor", "image_processor")
    for name in names:
        if getattr(processor, name, None) is not None:
            return getattr(processor, name)
    raise ValueError(f"{type(processor).__name__} has no image or video processor")


def processor_size_factor(processor, *, image: bool = False) -> int:
    """Pixels per side of one merged vision token (patch_size * merge_size: 28 for Qwen2/2.5-VL, 32
    for Qwen3-VL); frame heights and widths must be multiples of it. ``image`` asks the image
    processor instead of the video processor (the same for the Qwen families)."""
    vision = _vision_processor(processor, image)
    patch_size = getattr(vision, "patch_size", None)
    if not isinstance(patch_size, int):
        raise ValueError(
            f"{type(vision).__name__} has no integer patch_size: cannot derive the pixel grid of its frames"
        )
    return patch_size * int(getattr(vision, "merge_size", None) or 1)


def processor_temporal_patch_size(processor) -> int:
    """Frames per temporal patch (2 for the Qwen VL families); a video's frame count must be a multiple."""
    return int(getattr(_vision_processor(processor), "temporal_patch_size", None) or 1)


def family_of(model_or_config) -> str:
    """The model family (``qwen2_vl``, ``qwen2_5_vl``, ``qwen3_vl``) of a model or config; other
    architectures are returned as their ``model_type``."""
    config = getattr(model_or_config, "config", model_or_config)
    model_type = getattr(config, "model_type", None)
    if not model_type:
        raise ValueError(f"cannot tell the model family of {type(model_or_config).__name__}: no model_type")
    return FAMILIES.get(model_type, model_type)


def eos_token_ids(model, processor) -> list[int]:
    """Token ids that end a completion: the generation config's eos ids, then the tokenizer's eos and
    <|im_end|> (the chat turn end) where the vocabulary has it, without duplicates."""
    tokenizer = getattr(processor, "tokenizer", processor)
    ids: list[int] = []
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if configured is not None:
        ids += [configured] if isinstance(configured, int) else list(configured)
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if im_end is not None and im_end != tokenizer.unk_token_id:
        ids.append(im_end)
    if not ids:
        raise ValueError(
            "neither the model's generation config nor the tokenizer names an end-of-sequence token"
        )
    return list(dict.fromkeys(int(i) for i in ids))
