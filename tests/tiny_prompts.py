"""Shared by the sampling and log-prob tests: tiny models made sharp enough that greedy tokens depend
on every position and mask, two left-padded video prompts of different lengths, and a batch of
random completions of two such prompts."""

from __future__ import annotations

import torch

from videothinker.data.video import SampledVideo
from videothinker.models.inputs import build_inputs
from videothinker.models.loading import load_model, load_processor, processor_size_factor
from videothinker.models.vision import vlm_body


def sharp_model(model_dir, dtype: str = "float32"):
    """The tiny model with sharper attention and logits: a random tiny model barely depends on
    positions (logits move by ~0.4% when a token's position shifts by 9), so greedy output would not
    show wrong M-RoPE offsets or masks; scaled queries and keys (x10) and lm_head (x30) make it."""
    model = load_model(model_dir, dtype=dtype)
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(30)
        for name, param in vlm_body(model).language_model.named_parameters():
            if name.endswith(("q_proj.weight", "k_proj.weight")):
                param.mul_(10)
    return model.eval()


def random_video(
    gen, factor: int, frames: int, tokens_hw: tuple[int, int], fps: float, name: str
) -> SampledVideo:
    """Random uint8 frames [frames, 3, h, w], each side a multiple of the merged-token size ``factor``."""
    h, w = tokens_hw
    pixels = torch.randint(0, 256, (frames, 3, h * factor, w * factor), dtype=torch.uint8, generator=gen)
    return SampledVideo(pixels, fps, name)


def prompt_inputs(model_dir, *, videos: bool = True, prompts: list[str] | None = None):
    """(processor, inputs) for two prompts (or ``prompts``) with random videos of different sizes
    (or none), left padded."""
    processor = load_processor(model_dir)
    factor = processor_size_factor(processor)
    gen = torch.Generator().manual_seed(0)
    visuals = [random_video(gen, factor, 4, (2, 3), 2.0, "a"), random_video(gen, factor, 2, (2, 2), 1.0, "b")]
    prompts = prompts or [
        "Which object moves first?",
        "Which of the following will happen if the cyan cylinder is removed? Think step by step.",
    ]
    inputs = build_inputs(processor, prompts, visuals[: len(prompts)] if videos else [None] * len(prompts))
    return processor, inputs


def completion_batch(model_dir, G: int, T: int, *, text_only_second: bool = False):
    """(inputs, completion_ids [2*G, T], completion_mask [2*G, T]): B = 2 prompts of different lengths
    (left padded) with videos of different sizes (or the second text only), G*T random completions,
    and a completion mask that ends one row early (as after an EOS)."""
    processor = load_processor(model_dir)
    factor = processor_size_factor(processor)
    gen = torch.Generator().manual_seed(0)
    videos = [
        random_video(gen, factor, 4, (2, 3), 2.0, "a"),
        None if text_only_second else random_video(gen, factor, 2, (2, 2), 1.0, "b"),
    ]
    prompts = [
        "Which object moves first?",
        "Which of the following will happen if the cyan cylinder is removed? Think.",
    ]
    inputs = build_inputs(processor, prompts, videos)
    assert inputs["attention_mask"][0].sum() != inputs["attention_mask"][1].sum()  # padding is exercised
    # Ordinary tokens only: a sampled <|video_pad|> would break the naive forward's placeholder count.
    first_special = processor.tokenizer.convert_tokens_to_ids("<|endoftext|>")
    completion_ids = torch.randint(0, first_special, (2 * G, T), generator=gen)
    completion_mask = torch.ones_like(completion_ids)
    completion_mask[1, 4:] = 0
    return inputs, completion_ids, completion_mask
