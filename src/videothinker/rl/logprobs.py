"""Log-probabilities of sampled completion tokens, lean and naive.

The lean path (`completion_logprobs`) is what training runs; the naive path
(`naive_completion_logprobs`) is the plain reading of the same quantity, kept beside it as its
reference (tests/rl/test_logprobs.py holds the two equal, values and gradients). What the lean
path saves (DESIGN.md §4, one H200, Qwen2.5-VL-3B, G = 8):

- the vision tower runs once per video, not once per completion (103 ms instead of 740 ms forward,
  and again in backward), its features shared by the G sequences of a prompt;
- logits exist only for the positions that predict completion tokens, a chunk of rows at a time,
  in fp32, never for the prompt (50.2 GiB -> 20.6 GiB peak in forward + backward);
- the lm_head of each chunk is recomputed in backward instead of keeping [rows, vocab] fp32 logits.

Logits are divided by the sampling temperature before the softmax, as TRL's GRPO trainer does, so
the log-probs are those of the distribution the completions were sampled from.
"""

from __future__ import annotations

import inspect

import torch
from torch.utils.checkpoint import checkpoint

from videothinker.console import warn
from videothinker.models.vision import (
    embed_prompts,
    encode_visuals,
    modality_type_ids,
    repeat_visual_rows,
    rope_position_ids,
    shares_features,
    visuals_per_prompt,
    vlm_body,
)
from videothinker.rl.types import VideoInputs

DEFAULT_CHUNK_SIZE = 512  # rows of [chunk, vocab] fp32 logits: 311 MB at Qwen's 151936 tokens
_warned: set[str] = set()


def selective_log_softmax(
    logits: torch.Tensor,  # [..., V]
    index: torch.Tensor,  # [...] int64
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> torch.Tensor:  # [...] float32 (float64 for float64 logits)
    """Log-softmax of ``logits`` at ``index``, in at least fp32, ``chunk_size`` rows at a time.

    Equals ``torch.log_softmax(logits.to(dtype), dim=-1).gather(-1, index.unsqueeze(-1)).squeeze(-1)``
    with ``dtype = torch.promote_types(logits.dtype, torch.float32)``, without the [..., V]
    log-softmax tensor: each chunk computes ``logit[index] - logsumexp(logits)``.
    """
    dtype = torch.promote_types(logits.dtype, torch.float32)
    flat_logits = logits.reshape(-1, logits.shape[-1])  # [N, V]
    flat_index = index.reshape(-1, 1)  # [N, 1]
    out = []
    for start in range(0, flat_logits.shape[0], chunk_size):
        rows = flat_logits[start : start + chunk_size].to(dtype)  # [n, V]
        picked = rows.gather(-1, flat_index[start : start + chunk_size]).squeeze(-1)  # [n]
        out.append(picked - torch.logsumexp(rows, dim=-1))
    if not out:
        return logits.new_zeros(index.shape, dtype=dtype)
    return torch.cat(out).view(index.shape)


def _head_logprobs(
    hidden: torch.Tensor,  # [n, D]
    index: torch.Tensor,  # [n]
    lm_head: torch.nn.Module,
    temperature: float,
    entropy: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:  # [n] float32 (and [n] entropy, no grad)
    logits = lm_head(hidden).float() / temperature  # [n, V]
    picked = logits.gather(-1, index.unsqueeze(-1)).squeeze(-1)
    lse = torch.logsumexp(logits, dim=-1)  # [n]
    if not entropy:
        return picked - lse
    with torch.no_grad():  # H = logsumexp(z) - sum softmax(z) * z
        ent = lse - (torch.softmax(logits, dim=-1) * logits).sum(-1)  # [n]
    return picked - lse, ent


def _entropy_of_logits(logits: torch.Tensor) -> torch.Tensor:  # [..., V] -> [...], no grad
    with torch.no_grad():
        logp = torch.log_softmax(logits, dim=-1)
        return -(logp.exp() * logp).sum(-1)


def head_logprobs(
    hidden: torch.Tensor,  # [..., D]
    index: torch.Tensor,  # [...] int64
    lm_head: torch.nn.Module,
    *,
    temperature: float = 1.0,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    entropy: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:  # [...] float32
    """Log-probs of ``index`` under ``lm_head(hidden) / temperature``, ``chunk_size`` rows at a time.

    Equals ``selective_log_softmax(lm_head(hidden).float() / temperature, index)``. With grad
    enabled, each chunk is checkpointed: backward recomputes its [chunk, V] logits instead of
    keeping them, so the memory of logits is one chunk's, not the whole completion's. With
    ``entropy``, also returns each position's entropy of that distribution (no grad), computed from
    the same chunk of logits: ``-(softmax(z) * log_softmax(z)).sum(-1)``.
    """
    flat_hidden = hidden.reshape(-1, hidden.shape[-1])  # [N, D]
    flat_index = index.reshape(-1)  # [N]
    recompute = torch.is_grad_enabled()
    out, ent = [], []
    for start in range(0, flat_hidden.shape[0], chunk_size):
        args = (
            flat_hidden[start : start + chunk_size],
            flat_index[start : start + chunk_size],
            lm_head,
            temperature,
            entropy,
        )
        got = checkpoint(_head_logprobs, *args, use_reentrant=False) if recompute else _head_logprobs(*args)
        if entropy:
            got, chunk_entropy = got
            ent.append(chunk_entropy.detach())
        out.append(got)
    if not out:
        empty = hidden.new_zeros(index.shape, dtype=torch.float32)
        return (empty, empty.clone()) if entropy else empty
    logprobs = torch.cat(out).view(index.shape)
    return (logprobs, torch.cat(ent).view(index.shape)) if entropy else logprobs


def _check_shapes(prompt_ids, prompt_mask, completion_ids, completion_mask, num_generations) -> None:
    if prompt_ids.shape != prompt_mask.shape or completion_ids.shape != completion_mask.shape:
        raise ValueError("ids and masks must have the same shapes")
    if completion_ids.shape[0] != prompt_ids.shape[0] * num_generations:
        raise ValueError(
            f"{completion_ids.shape[0]} completions for {prompt_ids.shape[0]} prompts and "
            f"num_generations={num_generations}"
        )


def prompt_and_completion_positions(
    body: torch.nn.Module,
    prompt_ids: torch.Tensor,  # [B, P]
    prompt_mask: torch.Tensor,  # [B, P]
    completion_tokens: int,
    video: VideoInputs | None,
) -> torch.Tensor | None:  # [3, B, P + completion_tokens], or None for text-only prompts
    """The model's M-RoPE position ids of each prompt followed by ``completion_tokens`` text
    tokens. Text positions do not depend on the token values, so one set serves all G completions
    of a prompt (the EOS-masked tail differs from the naive path's; nothing reads it)."""
    text_slots = prompt_ids.new_zeros(
        prompt_ids.shape[0], completion_tokens
    )  # token 0 is text in every Qwen vocabulary
    position_ids, _ = rope_position_ids(
        body,
        torch.cat([prompt_ids, text_slots], dim=1),
        torch.cat([prompt_mask, torch.ones_like(text_slots)], dim=1),
        video,
    )
    return position_ids


def completion_logprobs(
    model: torch.nn.Module,
    prompt_ids: torch.Tensor,  # [B, P] left padded
    prompt_mask: torch.Tensor,  # [B, P]
    completion_ids: torch.Tensor,  # [B*G, T]
    completion_mask: torch.Tensor,  # [B*G, T]
    video: VideoInputs | None,
    num_generations: int,
    *,
    temperature: float = 1.0,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    entropy: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:  # [B*G, T] float32
    """Log-probs of the completion tokens, each video encoded once and shared by its G completions.
    With ``entropy``, also the entropy of the policy's distribution at each completion position (no
    grad), as a second [B*G, T] tensor.

    Equals `naive_completion_logprobs` (same arguments) at every position where ``completion_mask``
    is 1, values and gradients alike (after the first EOS the two may differ; nothing reads there).
    Steps: the vision tower on the B prompts' visuals (one call per modality); prompt embeddings with
    the features scattered in, repeated G times (the copies share the feature tensor, so gradients
    reach the tower summed over the G completions); the model's own M-RoPE position ids of the B
    prompts + T completion positions, repeated G times; the language model on all prompt tokens and
    all completion tokens but the last; `head_logprobs` on the T hidden states that predict
    completion tokens. Families the lean path cannot drive fall back to the naive path with a
    warning.

    Args:
        model: a Qwen VL ``*ForConditionalGeneration`` (or a PEFT wrapper); grad follows the caller.
        prompt_ids, prompt_mask: the B prompts, left padded.
        completion_ids, completion_mask: G completions per prompt, prompt ``i // G`` for row ``i``.
        video: the prompts' visual inputs, each visual once; None for text-only prompts.
        num_generations: G.
        temperature: the sampling temperature; logits are divided by it.
        chunk_size: rows of [rows, vocab] logits computed at a time.
    """
    _check_shapes(prompt_ids, prompt_mask, completion_ids, completion_mask, num_generations)
    if (reason := shares_features(model)) is not None:
        if reason not in _warned:
            _warned.add(reason)
            warn(f"lean log-probs unavailable ({reason}); using the naive path (video encoded G times)")
        return naive_completion_logprobs(
            model,
            prompt_ids,
            prompt_mask,
            completion_ids,
            completion_mask,
            video,
            num_generations,
            temperature=temperature,
            chunk_size=chunk_size,
            entropy=entropy,
        )
    body = vlm_body(model)
    G = num_generations
    B, P = prompt_ids.shape
    T = completion_ids.shape[1]

    features = encode_visuals(body, video) if video is not None else None
    prompt_embeds, visual_mask, deepstack = embed_prompts(body, prompt_ids, features)  # [B, P, D]
    completion_embeds = body.get_input_embeddings()(completion_ids[:, :-1])  # [B*G, T-1, D]
    inputs_embeds = torch.cat([prompt_embeds.repeat_interleave(G, dim=0), completion_embeds], dim=1)
    attention_mask = torch.cat([prompt_mask.repeat_interleave(G, dim=0), completion_mask[:, :-1]], dim=1)

    position_ids = prompt_and_completion_positions(body, prompt_ids, prompt_mask, T - 1, video)
    extra = {}
    if position_ids is not None:
        extra["position_ids"] = position_ids.repeat_interleave(G, dim=1)  # [3, B*G, P+T-1]
    if deepstack is not None:
        extra["visual_pos_masks"] = torch.cat(
            [visual_mask.repeat_interleave(G, dim=0), visual_mask.new_zeros(B * G, T - 1)], dim=1
        )  # [B*G, P+T-1]
        rows_per_prompt = visual_mask.sum(-1)  # [B]
        extra["deepstack_visual_embeds"] = [
            repeat_visual_rows(layer, rows_per_prompt, G) for layer in deepstack
        ]

    hidden = body.language_model(
        inputs_embeds=inputs_embeds, attention_mask=attention_mask, use_cache=False, **extra
    ).last_hidden_state  # [B*G, P+T-1, D]
    return head_logprobs(
        hidden[:, P - 1 :],
        completion_ids,
        model.get_output_embeddings(),
        temperature=temperature,
        chunk_size=chunk_size,
        entropy=entropy,
    )


def naive_completion_logprobs(
    model: torch.nn.Module,
    prompt_ids: torch.Tensor,  # [B, P] left padded
    prompt_mask: torch.Tensor,  # [B, P]
    completion_ids: torch.Tensor,  # [B*G, T]
    completion_mask: torch.Tensor,  # [B*G, T]
    video: VideoInputs | None,
    num_generations: int,
    *,
    temperature: float = 1.0,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    entropy: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:  # [B*G, T] float32
    """The reference path of `completion_logprobs`, read straight off the model: each prompt and
    its visuals repeated G times, one forward of the model on prompt + completion, full logits,
    ``log_softmax(logits[:, P-1:-1].float() / temperature).gather(completion_ids)`` (and, with
    ``entropy``, ``-(p * log p).sum(-1)`` of the same distribution). ``chunk_size`` is accepted for a
    common signature and unused."""
    _check_shapes(prompt_ids, prompt_mask, completion_ids, completion_mask, num_generations)
    G, P = num_generations, prompt_ids.shape[1]
    body = vlm_body(model)
    input_ids = torch.cat([prompt_ids.repeat_interleave(G, dim=0), completion_ids], dim=1)  # [B*G, P+T]
    kwargs: dict = {
        "attention_mask": torch.cat([prompt_mask.repeat_interleave(G, dim=0), completion_mask], dim=1)
    }
    if video is not None:
        videos_per_prompt, images_per_prompt = visuals_per_prompt(body, prompt_ids, video)
        kwargs |= video.repeat_per_prompt(videos_per_prompt, images_per_prompt, G).model_kwargs()
        if "mm_token_type_ids" in inspect.signature(model.forward).parameters:
            kwargs["mm_token_type_ids"] = modality_type_ids(input_ids, body.config)
    logits = model(input_ids=input_ids, use_cache=False, **kwargs).logits  # [B*G, P+T, V]
    logits = logits[:, P - 1 : -1].float() / temperature  # [B*G, T, V]
    logprobs = torch.log_softmax(logits, dim=-1).gather(-1, completion_ids.unsqueeze(-1)).squeeze(-1)
    return (logprobs, _entropy_of_logits(logits)) if entropy else logprobs
