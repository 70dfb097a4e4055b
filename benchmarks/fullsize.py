"""What the GPU benchmarks share: the full-size Qwen2.5-VL architectures, random-init models built on
the device, the DESIGN.md §4 video prompt, and timing with peak memory."""

from __future__ import annotations

import time

import torch


def qwen2_5_vl_3b_config(tiny: bool = False, size: str = "3b"):
    """The Qwen2.5-VL-3B-Instruct architecture (its published config.json values), or with
    ``size="7b"`` Qwen2.5-VL-7B-Instruct's; ``tiny`` shrinks it to a few layers for a CPU smoke run."""
    from transformers import Qwen2_5_VLConfig

    text = dict(
        vocab_size=151936,
        hidden_size=2048,
        intermediate_size=11008,
        num_hidden_layers=36,
        num_attention_heads=16,
        num_key_value_heads=2,
        max_position_embeddings=128000,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        hidden_act="silu",
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
    )
    vision = dict(
        depth=32,
        hidden_size=1280,
        intermediate_size=3420,
        num_heads=16,
        out_hidden_size=2048,
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
        window_size=112,
        fullatt_block_indexes=[7, 15, 23, 31],
        in_chans=3,
        hidden_act="silu",
    )
    if size == "7b":  # Qwen2.5-VL-7B-Instruct's config.json
        text.update(
            vocab_size=152064,
            hidden_size=3584,
            intermediate_size=18944,
            num_hidden_layers=28,
            num_attention_heads=28,
            num_key_value_heads=4,
            tie_word_embeddings=False,
        )
        vision.update(out_hidden_size=3584)
    elif size != "3b":
        raise ValueError(f"size must be 3b or 7b, got {size!r}")
    if tiny:
        text.update(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4)
        text["rope_parameters"]["mrope_section"] = [4, 6, 6]
        vision.update(
            depth=2,
            hidden_size=64,
            intermediate_size=128,
            num_heads=2,
            out_hidden_size=128,
            fullatt_block_indexes=[1],
        )
    config = Qwen2_5_VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=151655,
        video_token_id=151656,
        vision_start_token_id=151652,
        vision_end_token_id=151653,
        tie_word_embeddings=text["tie_word_embeddings"],
    )
    config._attn_implementation = "sdpa"
    return config


def build_model(config, seed: int, device: str, dtype: torch.dtype = torch.bfloat16):
    """A random-init model of ``config`` built directly on ``device`` (weights do not change speed)."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(seed)
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=dtype)
    return model


def video_prompt(config, device, frames=16, height=308, width=448, prompt_tokens=1500):
    """A B=1 prompt: text, <vision_start>, 1408 video tokens, <vision_end>, text; random patches."""
    grid = (frames // 2, height // 14, width // 14)  # (8, 22, 32) patches
    video_tokens = grid[0] * grid[1] * grid[2] // 4  # 1408 after the 2x2 merge
    text = prompt_tokens - video_tokens - 2
    g = torch.Generator().manual_seed(0)
    head = torch.randint(1000, 100000, (text // 2,), generator=g)
    tail = torch.randint(1000, 100000, (text - text // 2,), generator=g)
    ids = torch.cat(
        [
            head,
            torch.tensor([config.vision_start_token_id]),
            torch.full((video_tokens,), config.video_token_id),
            torch.tensor([config.vision_end_token_id]),
            tail,
        ]
    ).unsqueeze(0)
    patches = grid[0] * grid[1] * grid[2]
    return {
        "input_ids": ids.to(device),
        "attention_mask": torch.ones_like(ids).to(device),
        "pixel_values_videos": torch.randn(patches, 3 * 2 * 14 * 14, generator=g).to(device, torch.bfloat16),
        "video_grid_thw": torch.tensor([grid]).to(device),
        "second_per_grid_ts": torch.tensor([1.0]).to(device),
    }


def timed(fn):
    """(result, seconds, peak GiB allocated during fn); on CPU the peak is reported as 0."""
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    out = fn()
    if cuda:
        torch.cuda.synchronize()
    return out, time.perf_counter() - start, torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0


def allocated() -> float:
    return torch.cuda.memory_allocated() / 2**30 if torch.cuda.is_available() else 0.0
