"""Sampling G completions per prompt: one prefill of each prompt, its KV cache fanned out G times.

With an engine (``rollout.engine=graph``, the default where it applies) the completions come from
`videothinker.models.engine.DecodeEngine`: one prefill, a static KV cache and a decode step replayed as a
CUDA graph. Without one (``rollout.engine=generate``, or a model the engine cannot serve) they come from
transformers' ``generate``, as follows.

``generate(num_return_sequences=G)`` prefills every prompt G times (DESIGN.md §4: 5.5 s for a
1500-token video prompt, G = 8, 256 tokens on one H200; 4.5 s with one prefill fanned out).
`generate_rollout` prefills all prompt tokens but the last once (the vision tower runs there, once
per video), repeats the cache G times (``Cache.batch_repeat_interleave``), then lets ``generate``
continue from that cache on the G-times repeated prompt: it feeds the one uncached token and
decodes. The M-RoPE offsets the prefill left in the model (``rope_deltas``, one per prompt) are
repeated G times too, so decoding positions are those of the simple path.

`simple_generate_rollout` is the plain ``generate(num_return_sequences=G)``, kept as the reference:
tests/rl/test_rollout.py holds greedy output of the two identical, token for token.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence

import torch

from videothinker.console import warn
from videothinker.models.engine import (
    DecodeEngine,
    cache_argument,
    check_left_padded,
    model_output_cache,
    prompt_model_inputs,
)
from videothinker.models.sharding import is_sharded
from videothinker.models.vision import rope_position_ids, text_position_ids, vlm_body
from videothinker.rl.losses import completion_mask_after_eos
from videothinker.rl.types import Rollout, VideoInputs


def _generation_kwargs(
    max_completion_length: int,
    temperature: float,
    top_p: float,
    eos_token_ids: int | Sequence[int],
    pad_token_id: int,
    do_sample: bool,
    synced_gpus: bool = False,
) -> dict:
    """Every knob that changes the sampled distribution, set explicitly: a checkpoint's
    generation_config.json (Qwen's sets top_k=1, repetition_penalty=1.05) must not leak into RL
    sampling, whose log-probs assume plain temperature sampling. ``synced_gpus`` for a sharded model
    (models/sharding.py): every process runs forwards until all have finished, since each forward
    gathers weights from all of them."""
    kwargs = {
        "synced_gpus": synced_gpus,
        "max_new_tokens": max_completion_length,
        "do_sample": do_sample,
        "num_beams": 1,
        "eos_token_id": [eos_token_ids] if isinstance(eos_token_ids, int) else list(eos_token_ids),
        "pad_token_id": pad_token_id,
        "repetition_penalty": 1.0,
    }
    if do_sample:
        kwargs |= {"temperature": temperature, "top_p": top_p, "top_k": 0, "min_p": None, "typical_p": 1.0}
    return kwargs


def _check_prompts(inputs: Mapping[str, torch.Tensor]) -> None:
    check_left_padded(inputs["attention_mask"])
    if inputs["input_ids"].shape[1] < 2:
        raise ValueError("prompts must be at least 2 tokens long")


def _make_rollout(inputs, sequences: torch.Tensor, num_generations: int, eos_token_ids) -> Rollout:
    return _rollout_of(inputs, sequences[:, inputs["input_ids"].shape[1] :], num_generations, eos_token_ids)


def _rollout_of(inputs, completion_ids: torch.Tensor, num_generations: int, eos_token_ids) -> Rollout:
    return Rollout(
        prompt_ids=inputs["input_ids"],
        prompt_mask=inputs["attention_mask"],
        completion_ids=completion_ids,
        completion_mask=completion_mask_after_eos(completion_ids, eos_token_ids),
        num_generations=num_generations,
        video=VideoInputs.from_batch(inputs),
    )


@torch.no_grad()
def generate_rollout(
    model: torch.nn.Module,
    inputs: Mapping[str, torch.Tensor],
    num_generations: int,
    *,
    max_completion_length: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    eos_token_ids: int | Sequence[int],
    pad_token_id: int,
    do_sample: bool = True,
    engine: DecodeEngine | None = None,
) -> Rollout:
    """G completions of each of B prompts from one prefill of each prompt.

    Greedy output equals `simple_generate_rollout`'s token for token; sampled output has the same
    distribution. Models whose forward leaves no ``rope_deltas`` or returns no cache (gradient
    checkpointing in training mode) fall back to the simple path with a warning.

    Args:
        model: a Qwen VL ``*ForConditionalGeneration`` (eval mode for sampling).
        inputs: processor output for B prompts, left padded: input_ids [B, P], attention_mask
            [B, P], and the visual fields (pixel_values_videos, video_grid_thw, ...).
        num_generations: G.
        max_completion_length: most tokens sampled per completion (T <= this).
        temperature, top_p: plain temperature / nucleus sampling (top_k, repetition penalty off).
        eos_token_ids: tokens that end a completion (Qwen: <|im_end|> and <|endoftext|>).
        pad_token_id: what ``generate`` writes after a finished completion.
        do_sample: False for greedy decoding (tests, evaluation).
        engine: decode with this engine (built for ``model``); None: with ``generate``.

    Returns:
        A `Rollout` with prompt_ids, prompt_mask, completion_ids [B*G, T], completion_mask (1 up to
        and including the first EOS) and the prompt-level visual inputs; no log-probs or rewards.
    """
    _check_prompts(inputs)
    G = num_generations
    if engine is not None:
        completion_ids = engine.generate(
            inputs,
            G,
            max_new_tokens=max_completion_length,
            eos_token_ids=eos_token_ids,
            pad_token_id=pad_token_id,
            do_sample=do_sample,
            temperature=temperature,
            top_p=top_p,
        )
        return _rollout_of(inputs, completion_ids, G, eos_token_ids)
    generation = _generation_kwargs(
        max_completion_length, temperature, top_p, eos_token_ids, pad_token_id, do_sample, is_sharded(model)
    )
    body = vlm_body(model)
    if not (hasattr(body, "rope_deltas") and hasattr(body, "get_rope_index")):
        warn(f"one-prefill sampling unavailable for {type(body).__name__} (no rope_deltas); using generate()")
        return simple_generate_rollout(
            model,
            inputs,
            G,
            max_completion_length=max_completion_length,
            temperature=temperature,
            top_p=top_p,
            eos_token_ids=eos_token_ids,
            pad_token_id=pad_token_id,
            do_sample=do_sample,
        )
    prompt = prompt_model_inputs(model, inputs)
    prompt_ids, prompt_mask = prompt["input_ids"], prompt["attention_mask"]  # [B, P]
    # Positions as generate() builds them for its own prefill: text positions counted over the mask,
    # and the model's 3-D M-RoPE ids with the per-prompt offsets decoding continues from.
    text_positions = text_position_ids(prompt_mask)  # [B, P]
    rope_positions, rope_deltas = rope_position_ids(
        body, prompt_ids, prompt_mask, VideoInputs.from_batch(inputs)
    )
    if rope_positions is None:  # text only
        rope_positions = text_positions.unsqueeze(0).expand(3, -1, -1)
        rope_deltas = torch.zeros_like(prompt_ids[:, :1])
    position_ids = torch.cat([text_positions.unsqueeze(0), rope_positions], dim=0)  # [4, B, P]

    prefill = {
        k: (v[:, :-1] if k in ("input_ids", "attention_mask", "mm_token_type_ids") else v)
        for k, v in prompt.items()
    }
    prefill["position_ids"] = position_ids[:, :, :-1]
    if "logits_to_keep" in inspect.signature(model.forward).parameters:
        prefill["logits_to_keep"] = 1
    cache = model_output_cache(model(**prefill, use_cache=True))
    if cache is None:
        warn(
            "one-prefill sampling unavailable: the prefill returned no KV cache (gradient checkpointing in "
            "training mode?); using generate()"
        )
        return simple_generate_rollout(
            model,
            inputs,
            G,
            max_completion_length=max_completion_length,
            temperature=temperature,
            top_p=top_p,
            eos_token_ids=eos_token_ids,
            pad_token_id=pad_token_id,
            do_sample=do_sample,
        )
    cache.batch_repeat_interleave(G)
    body.rope_deltas = rope_deltas.repeat_interleave(G, dim=0)  # [B*G, 1], read by generate's decode steps
    sequences = model.generate(
        input_ids=prompt_ids.repeat_interleave(G, dim=0),
        attention_mask=prompt_mask.repeat_interleave(G, dim=0),
        **{cache_argument(model): cache},
        **generation,
    )  # [B*G, P+T]
    return _make_rollout(inputs, sequences, G, eos_token_ids)


@torch.no_grad()
def simple_generate_rollout(
    model: torch.nn.Module,
    inputs: Mapping[str, torch.Tensor],
    num_generations: int,
    *,
    max_completion_length: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    eos_token_ids: int | Sequence[int],
    pad_token_id: int,
    do_sample: bool = True,
) -> Rollout:
    """The reference path of `generate_rollout` (same arguments and result): plain
    ``model.generate(**inputs, num_return_sequences=G)``, which prefills each prompt G times
    (greedy: one completion per prompt, repeated G times)."""
    _check_prompts(inputs)
    generation = _generation_kwargs(
        max_completion_length, temperature, top_p, eos_token_ids, pad_token_id, do_sample, is_sharded(model)
    )
    if do_sample:
        sequences = model.generate(
            **prompt_model_inputs(model, inputs), num_return_sequences=num_generations, **generation
        )
    else:  # generate() refuses greedy num_return_sequences > 1: the G greedy completions are one
        sequences = model.generate(**prompt_model_inputs(model, inputs), **generation).repeat_interleave(
            num_generations, 0
        )
    return _make_rollout(inputs, sequences, num_generations, eos_token_ids)
