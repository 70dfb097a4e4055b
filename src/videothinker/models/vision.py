"""Video features computed once and shared by the G completions of a prompt; M-RoPE position ids.

A Qwen VL forward on G copies of a prompt runs the vision tower on G copies of its video (DESIGN.md
§4: 103 ms once, 740 ms eight times, again in backward, again for the reference model). The helpers
here split that forward into its parts so the lean log-prob path can run the tower once per video and
scatter the *same* feature rows into the embeddings of every copy (``repeat_interleave``/``repeat`` on
the feature tensors, so the gradients of the G copies add up in the tower's backward).

They call the model's own helpers (``get_video_features``, ``get_image_features``,
``get_rope_index``), found by name and signature, not by transformers version: the same code runs
on transformers 5.17 and 5.23, for Qwen2-VL, Qwen2.5-VL and Qwen3-VL (whose DeepStack features are
added to the hidden states of the first decoder layers; they are expanded the same way).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch

from videothinker.rl.types import VideoInputs

TEXT, IMAGE, VIDEO = 0, 1, 2  # values of the processors' mm_token_type_ids


def vlm_body(model: torch.nn.Module) -> torch.nn.Module:
    """The VLM body of a ``*ForConditionalGeneration`` (or a PEFT wrapper of one): the module that
    holds ``visual``, ``language_model`` and ``get_rope_index``."""
    if hasattr(model, "get_base_model"):  # PEFT: adapters are injected in place, the body is shared
        model = model.get_base_model()
    return model.model if hasattr(model, "model") else model


def shares_features(model: torch.nn.Module) -> str | None:
    """None when the lean path can drive this model, else why not (for a log line)."""
    body = vlm_body(model)
    for name in ("visual", "language_model", "get_rope_index", "get_video_features", "get_input_embeddings"):
        if not hasattr(body, name):
            return f"{type(body).__name__} has no {name}"
    if "mm_token_type_ids" not in inspect.signature(body.get_rope_index).parameters:
        return f"{type(body).__name__}.get_rope_index takes no mm_token_type_ids (transformers < 5?)"
    if model.get_output_embeddings() is None:
        return f"{type(model).__name__} has no output embeddings"
    return None


def modality_type_ids(input_ids: torch.Tensor, config) -> torch.Tensor:
    """[B, L] int64 ``mm_token_type_ids`` as the processors build them: 1 on image pad tokens, 2 on
    video pad tokens, 0 elsewhere (``config``: the VLM config, with image/video_token_id)."""
    types = torch.zeros_like(input_ids)
    types[input_ids == config.image_token_id] = IMAGE
    types[input_ids == config.video_token_id] = VIDEO
    return types


def _tokens_per_visual(grid_thw: torch.Tensor | None, merge_size: int) -> list[int]:
    return [] if grid_thw is None else (grid_thw.prod(-1) // merge_size**2).tolist()


def visuals_per_prompt(
    body: torch.nn.Module, input_ids: torch.Tensor, video: VideoInputs
) -> tuple[list[int], list[int]]:
    """How many videos and images each of the B prompts holds ([B] each), found by matching the
    prompts' pad-token counts with the visuals' token counts in order."""
    merge = body.config.vision_config.spatial_merge_size
    out = []
    for token_id, grid in (
        (body.config.video_token_id, video.video_grid_thw),
        (body.config.image_token_id, video.image_grid_thw),
    ):
        sizes = _tokens_per_visual(grid, merge)
        counts, k = [], 0
        for n_tokens in (input_ids == token_id).sum(-1).tolist():
            start = k
            while n_tokens > 0 and k < len(sizes):
                n_tokens -= sizes[k]
                k += 1
            if n_tokens != 0:
                raise ValueError("the prompts' visual pad tokens do not match the visual inputs' grids")
            counts.append(k - start)
        if k != len(sizes):
            raise ValueError(f"{len(sizes) - k} visual input(s) have no pad tokens in the prompts")
        out.append(counts)
    return out[0], out[1]


def rope_position_ids(
    body: torch.nn.Module,
    input_ids: torch.Tensor,  # [B, L]
    attention_mask: torch.Tensor,  # [B, L]
    video: VideoInputs | None,
) -> tuple[torch.Tensor, torch.Tensor] | tuple[None, None]:
    """The 3-D (temporal, height, width) M-RoPE position ids [3, B, L] the model's forward computes
    for these sequences, and the offsets [B, 1] of the next text position from the attention-mask
    count that ``generate`` decodes with (``rope_deltas``), both from the model's own
    ``get_rope_index``. (None, None) for text-only sequences: the forward then takes plain positions
    (M-RoPE of text is RoPE, relative, so where they start is immaterial)."""
    if video is None:
        return None, None
    params = inspect.signature(body.get_rope_index).parameters
    kwargs = {
        "mm_token_type_ids": modality_type_ids(input_ids, body.config),
        "image_grid_thw": video.image_grid_thw,
        "video_grid_thw": video.video_grid_thw,
        "attention_mask": attention_mask,
    }
    if video.second_per_grid_ts is not None and "second_per_grid_ts" in params:
        kwargs["second_per_grid_ts"] = video.second_per_grid_ts
    position_ids, rope_deltas = body.get_rope_index(input_ids, **kwargs)
    return position_ids, rope_deltas


def text_position_ids(attention_mask: torch.Tensor) -> torch.Tensor:  # [B, L]
    """Positions counted over attended tokens (0 on left padding), as ``generate`` builds them."""
    positions = attention_mask.long().cumsum(-1) - 1
    return positions.masked_fill(attention_mask == 0, 0)


@dataclass
class VisualFeatures:
    """Vision-tower outputs for the visuals of B prompts, each visual encoded once.

    Attributes:
        video_embeds: [N_video_tokens, D] merged features, rows in the order of the video pad tokens
            of the B prompts (row-major), or None.
        image_embeds: [N_image_tokens, D], likewise for images, or None.
        video_deepstack: per DeepStack layer, [N_video_tokens, D] (Qwen3-VL), else None.
        image_deepstack: per DeepStack layer, [N_image_tokens, D] (Qwen3-VL), else None.
    """

    video_embeds: torch.Tensor | None = None
    image_embeds: torch.Tensor | None = None
    video_deepstack: list[torch.Tensor] | None = None
    image_deepstack: list[torch.Tensor] | None = None

    @property
    def has_deepstack(self) -> bool:
        return self.video_deepstack is not None or self.image_deepstack is not None


def _cat(parts) -> torch.Tensor:
    return parts if isinstance(parts, torch.Tensor) else torch.cat(list(parts), dim=0)


def _run_encoder(
    fn, pixels: torch.Tensor, grid: torch.Tensor
) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
    """One call of ``get_{video,image}_features``, whatever shape of output this version returns:
    an output with ``pooler_output`` (split per visual) and maybe ``deepstack_features``, or a tuple."""
    out = fn(pixels, grid)
    if hasattr(out, "pooler_output"):
        deepstack = getattr(out, "deepstack_features", None)
        return _cat(out.pooler_output), None if deepstack is None else [_cat(f) for f in deepstack]
    if isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], list):  # (embeds, deepstack)
        return _cat(out[0]), [_cat(f) for f in out[1]]
    return _cat(out), None


def encode_visuals(body: torch.nn.Module, video: VideoInputs) -> VisualFeatures:
    """Run the vision tower once on every video (one call) and once on every image (one call)."""
    features = VisualFeatures()
    if video.pixel_values_videos is not None:
        features.video_embeds, features.video_deepstack = _run_encoder(
            body.get_video_features, video.pixel_values_videos, video.video_grid_thw
        )
    if video.pixel_values is not None:
        features.image_embeds, features.image_deepstack = _run_encoder(
            body.get_image_features, video.pixel_values, video.image_grid_thw
        )
    return features


def embed_prompts(
    body: torch.nn.Module,
    input_ids: torch.Tensor,  # [B, P]
    features: VisualFeatures | None,
) -> tuple[torch.Tensor, torch.Tensor | None, list[torch.Tensor] | None]:
    """Token embeddings of the prompts with the visual features scattered into their pad tokens,
    exactly as the model's forward does it.

    Returns:
        inputs_embeds: [B, P, D].
        visual_mask: [B, P] bool, True on image and video pad tokens (None without features).
        deepstack: per DeepStack layer, [N_visual_tokens, D] with image and video rows merged in
            sequence order (what the Qwen3-VL text model adds at ``visual_mask``), or None.
    """
    embeds = body.get_input_embeddings()(input_ids)  # [B, P, D]
    if features is None:
        return embeds, None, None
    image_mask = input_ids == body.config.image_token_id  # [B, P]
    video_mask = input_ids == body.config.video_token_id  # [B, P]
    for mask, rows in ((image_mask, features.image_embeds), (video_mask, features.video_embeds)):
        if rows is None:
            continue
        if int(mask.sum()) != rows.shape[0]:
            raise ValueError(
                f"the prompts hold {int(mask.sum())} visual pad tokens but the tower gave {rows.shape[0]} rows"
            )
        embeds = embeds.masked_scatter(mask.unsqueeze(-1), rows.to(embeds.device, embeds.dtype))
    visual_mask = image_mask | video_mask
    if not features.has_deepstack:
        return embeds, visual_mask, None
    n_layers = len(features.video_deepstack or features.image_deepstack)
    deepstack = []
    for layer in range(n_layers):
        joint = embeds.new_zeros(int(visual_mask.sum()), embeds.shape[-1])  # [N_visual, D]
        for mask, rows in ((image_mask, features.image_deepstack), (video_mask, features.video_deepstack)):
            if rows is not None:
                joint[mask[visual_mask]] = rows[layer].to(joint.device, joint.dtype)
        deepstack.append(joint)
    return embeds, visual_mask, deepstack


def repeat_visual_rows(
    rows: torch.Tensor,  # [N_visual, D], prompt by prompt
    rows_per_prompt: torch.Tensor,  # [B]
    repeats: int,
) -> torch.Tensor:  # [repeats * N_visual, D]
    """The visual rows of ``repeats`` copies of each prompt in ``repeat_interleave`` order: rows
    [A | B] of prompts [a, b] become [A A | B B] for the sequences [a a b b]. Equals
    ``torch.cat([chunk.repeat(repeats, 1) for chunk in rows.split(rows_per_prompt.tolist())])``,
    done as one gather so the backward is one scatter-add."""
    counts = rows_per_prompt.to(rows.device)
    starts = torch.cumsum(counts, 0) - counts  # [B]
    seq_counts = counts.repeat_interleave(repeats)  # [B*G]
    seq_starts = starts.repeat_interleave(repeats)  # [B*G]
    offsets = torch.arange(int(seq_counts.sum()), device=rows.device)
    offsets = offsets - (torch.cumsum(seq_counts, 0) - seq_counts).repeat_interleave(seq_counts)
    return rows[seq_starts.repeat_interleave(seq_counts) + offsets]
