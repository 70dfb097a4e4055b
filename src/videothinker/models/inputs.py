"""Prompts + sampled frames -> model inputs: the one place evaluation and RL build them.

Each prompt becomes a one-turn chat (`videothinker.data.prompts.chat_messages`) rendered with the
processor's own chat template; the processor then expands the visual placeholder into the right
number of vision tokens and patchifies the frames. Frames arrive already sampled and resized to the
patch grid (`videothinker.data.video`), so the processor is told not to sample or resize again, and
is given the sampled fps, from which Qwen2.5-VL derives ``second_per_grid_ts`` (temporal M-RoPE
positions) and Qwen3-VL the ``<t seconds>`` timestamps it writes before each frame.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from videothinker.data.prompts import chat_messages
from videothinker.data.video import SampledVideo
from videothinker.models.loading import processor_size_factor, processor_temporal_patch_size

if TYPE_CHECKING:
    from transformers import BatchFeature


def build_inputs(
    processor,
    prompts: list[str],
    visuals: list[SampledVideo | None],
    *,
    add_generation_prompt: bool = True,
    padding_side: str = "left",
) -> BatchFeature:
    """Tokenise a batch of prompts with their videos / images into padded model inputs.

    Args:
        processor: a Qwen2-VL / Qwen2.5-VL / Qwen3-VL processor (any processor with the same
            ``video_processor`` / ``image_processor`` interface).
        prompts: B prompt texts (the question with its instructions).
        visuals: B entries: a `SampledVideo` (frames uint8 [F, 3, H, W] with F a multiple of the
            temporal patch size and H, W multiples of `processor_size_factor`), one with
            ``is_image=True`` (F = 1), or None for a text-only prompt.
        add_generation_prompt: end each chat with the assistant turn's opening, as for sampling.
        padding_side: ``left`` for generation (completions line up at the end), ``right`` otherwise.

    Returns:
        A BatchFeature of tensors: input_ids and attention_mask [B, P]; for videos
        pixel_values_videos [num_patches, C * t * p * p] and video_grid_thw [num_videos, 3] (plus
        second_per_grid_ts [num_videos] for Qwen2.5-VL); for images pixel_values and image_grid_thw;
        and whatever else the processor returns for the model (e.g. mm_token_type_ids [B, P]).
    """
    if len(prompts) != len(visuals):
        raise ValueError(f"build_inputs got {len(prompts)} prompts but {len(visuals)} visuals")
    if not prompts:
        raise ValueError("build_inputs needs at least one prompt")
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")

    texts, videos, images, metadata = [], [], [], []
    for prompt, visual in zip(prompts, visuals):
        data_type = "text" if visual is None else "image" if visual.is_image else "video"
        texts.append(
            processor.apply_chat_template(
                chat_messages(prompt, data_type), tokenize=False, add_generation_prompt=add_generation_prompt
            )
        )
        if visual is None:
            continue
        _check_frames(processor, visual)
        if visual.is_image:
            images.append(visual.frames[0])
            continue
        num_frames, _, height, width = visual.frames.shape
        videos.append(visual.frames)
        metadata.append(
            {
                "total_num_frames": num_frames,
                "fps": float(visual.fps),
                "frames_indices": list(range(num_frames)),
                "duration": num_frames / visual.fps,
                "height": height,
                "width": width,
            }
        )

    kwargs: dict = {"text_kwargs": {"padding": True, "padding_side": padding_side}}
    if videos:
        videos_kwargs = {"do_sample_frames": False, "do_resize": False, "video_metadata": metadata}
        valid = getattr(getattr(processor, "video_processor", None), "valid_kwargs", None)
        if "cap_pixels_per_frame" in getattr(valid, "__annotations__", {}):
            # Only consulted when resizing (which is off); set to silence transformers' warning about
            # its coming default change.
            videos_kwargs["cap_pixels_per_frame"] = True
        kwargs["videos_kwargs"] = videos_kwargs
    if images:
        kwargs["images_kwargs"] = {"do_resize": False}
    return processor(text=texts, videos=videos or None, images=images or None, return_tensors="pt", **kwargs)


def _check_frames(processor, visual: SampledVideo) -> None:
    """Reject frames the processor would silently pad or mis-patchify, naming the source."""
    import torch

    frames = visual.frames
    if (
        not isinstance(frames, torch.Tensor)
        or frames.dtype != torch.uint8
        or frames.ndim != 4
        or frames.shape[1] != 3
    ):
        shape = tuple(frames.shape) if hasattr(frames, "shape") else type(frames).__name__
        raise ValueError(f"{visual.path}: frames must be a uint8 tensor [F, 3, H, W], got {shape}")
    factor = processor_size_factor(processor, image=visual.is_image)
    temporal = processor_temporal_patch_size(processor)
    num_frames, _, height, width = frames.shape
    if height % factor or width % factor:
        raise ValueError(
            f"{visual.path}: frame size {height}x{width} is not a multiple of the processor's {factor}-pixel "
            "grid; sample it with the processor's size factor"
        )
    if visual.is_image:
        if num_frames != 1:
            raise ValueError(f"{visual.path}: an image must have exactly one frame, got {num_frames}")
    elif num_frames % temporal:
        raise ValueError(
            f"{visual.path}: {num_frames} frames is not a multiple of the temporal patch size {temporal}"
        )
    elif visual.fps <= 0:
        raise ValueError(f"{visual.path}: fps must be positive, got {visual.fps}")
