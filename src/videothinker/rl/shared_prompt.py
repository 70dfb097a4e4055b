"""Log-probs with each prompt computed once for its G completions (``grpo.share_prompt``).

`completion_logprobs` runs the language model on G sequences ``[prompt | completion]`` per prompt:
the prompt's P tokens go through every layer G times (in the paper's setting, P = 1500 video-prompt
tokens and G = 8 completions of up to 768: 18 136 positions, 10 500 of them repeats of the prompt).
`shared_prompt_logprobs` lays each prompt out once, followed by its G completions (see
`videothinker.models.prompt_attention`): P + G (T - 1) positions (7 636 there), the same log-probs
and gradients. The vision tower runs once per video, as in `completion_logprobs`; the DeepStack
features (Qwen3-VL) are no longer repeated G times either.

``attention="split"`` (the default) runs each layer's attention as the prompt on itself plus the
completions against the prompt (`split_attention`); ``attention="dense"`` gives the model its own
attention with the layout's whole [L, L] mask: the simple reference of the split form (tests hold
the two, and `completion_logprobs`, equal).
"""

from __future__ import annotations

import torch

from videothinker.console import warn
from videothinker.models.prompt_attention import PromptLayout, install, unavailable
from videothinker.models.vision import (
    embed_prompts,
    encode_visuals,
    shares_features,
    vlm_body,
)
from videothinker.rl.logprobs import (
    DEFAULT_CHUNK_SIZE,
    _check_shapes,
    completion_logprobs,
    head_logprobs,
    prompt_and_completion_positions,
)
from videothinker.rl.types import Rollout, VideoInputs

ATTENTION = ("split", "dense")
_warned: set[str] = set()


def packed_positions(position_ids: torch.Tensor, prompt_length: int, generations: int) -> torch.Tensor:
    """Position ids of the shared layout from those of one ``[prompt | completion]`` sequence per
    prompt ([..., B, P + n], M-RoPE's [3, B, P + n] or plain [B, P + n]): the prompt's, then the
    completion's n positions once per completion (every completion continues from its prompt)."""
    prompt, completion = position_ids[..., :prompt_length], position_ids[..., prompt_length:]
    return torch.cat([prompt, completion.repeat(*([1] * (completion.ndim - 1)), generations)], dim=-1)


def predicting_positions(prompt_length: int, generations: int, completion_tokens: int) -> torch.Tensor:
    """[G, T] int64: the position in the shared layout whose hidden state predicts each completion
    token. Token 0 of every completion is predicted by the prompt's last position; token t >= 1 of
    completion j by its own input t - 1, at ``P + j (T - 1) + t - 1``."""
    n = completion_tokens - 1
    starts = prompt_length + n * torch.arange(generations).unsqueeze(1)  # [G, 1]
    own = starts + torch.arange(n).unsqueeze(0)  # [G, n]
    return torch.cat([torch.full((generations, 1), prompt_length - 1), own], dim=1)


def shared_prompt_logprobs(
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
    attention: str = "split",
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:  # [B*G, T] float32
    """`completion_logprobs` (same arguments, same values and gradients where ``completion_mask`` is
    1) with each prompt's tokens run through the language model once, not G times. Models it cannot
    drive (another attention implementation, sliding windows, a family without the lean path's
    helpers) fall back to `completion_logprobs` with a warning."""
    if attention not in ATTENTION:
        raise ValueError(f"attention must be one of {ATTENTION}, got {attention!r}")
    _check_shapes(prompt_ids, prompt_mask, completion_ids, completion_mask, num_generations)
    args = (model, prompt_ids, prompt_mask, completion_ids, completion_mask, video, num_generations)
    if shares_features(model) is not None:  # it warns once and takes the naive path
        return completion_logprobs(*args, temperature=temperature, chunk_size=chunk_size, entropy=entropy)
    if (reason := unavailable(model)) is not None:
        if reason not in _warned:
            _warned.add(reason)
            warn(f"shared-prompt log-probs unavailable ({reason}); computing the prompt once per completion")
        return completion_logprobs(*args, temperature=temperature, chunk_size=chunk_size, entropy=entropy)
    body = vlm_body(model)
    G, (B, P), T = num_generations, prompt_ids.shape, completion_ids.shape[1]
    n = T - 1
    layout = PromptLayout(prompt_mask.bool(), G, n)

    features = encode_visuals(body, video) if video is not None else None
    prompt_embeds, visual_mask, deepstack = embed_prompts(body, prompt_ids, features)  # [B, P, D]
    completion_embeds = body.get_input_embeddings()(completion_ids[:, :-1])  # [B*G, n, D]
    inputs_embeds = torch.cat(
        [prompt_embeds, completion_embeds.reshape(B, G * n, prompt_embeds.shape[-1])], dim=1
    )  # [B, L, D]

    position_ids = prompt_and_completion_positions(body, prompt_ids, prompt_mask, n, video)
    if position_ids is None:  # text-only prompts: the forward's own arange positions
        position_ids = torch.arange(P + n, device=prompt_ids.device).expand(B, -1)
    extra = {"position_ids": packed_positions(position_ids, P, G)}
    if deepstack is not None:
        extra["visual_pos_masks"] = torch.cat([visual_mask, visual_mask.new_zeros(B, G * n)], dim=1)
        extra["deepstack_visual_embeds"] = deepstack
    if attention == "split":
        install(model)
        extra["shared_prompt"] = layout
        mask = prompt_mask.new_ones(B, 1, 1, 1, dtype=torch.bool)  # a 4-D mask is passed as is; unread
    else:
        eager = body.language_model.config._attn_implementation == "eager"
        mask = layout.cached("dense_mask", inputs_embeds.dtype if eager else None)

    hidden = body.language_model(
        inputs_embeds=inputs_embeds, attention_mask=mask, use_cache=False, **extra
    ).last_hidden_state  # [B, L, D]
    if attention == "split" and layout.calls < len(body.language_model.layers):
        raise RuntimeError(
            f"the shared-prompt attention ran in {layout.calls} of {len(body.language_model.layers)} "
            "layers: the layout did not reach the attention function (a transformers version or a wrapper "
            "around the layers that drops or copies the keyword); set grpo.share_prompt=false"
        )
    index = predicting_positions(P, G, T).to(hidden.device).view(1, G * T, 1)
    rows = hidden.gather(1, index.expand(B, -1, hidden.shape[-1])).view(B * G, T, -1)  # [B*G, T, D]
    return head_logprobs(
        rows,
        completion_ids,
        model.get_output_embeddings(),
        temperature=temperature,
        chunk_size=chunk_size,
        entropy=entropy,
    )


def rollout_logprobs(
    model: torch.nn.Module,
    rollout: Rollout,
    *,
    temperature: float = 1.0,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    grad: bool = True,
    entropy: bool = False,
    share_prompt: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:  # [B*G, T] float32
    """`completion_logprobs` of a rollout's completions (and their entropies, with ``entropy``);
    with ``share_prompt``, `shared_prompt_logprobs` (each prompt run once for its G completions: the
    same values).
    ``grad=False`` is the reference model's (and old-policy) mode: under ``torch.no_grad()``, so
    neither autograd state nor the per-chunk recompute of the lm_head is kept (put the reference
    model in eval mode: HF checkpointing only acts in training mode)."""
    args = (
        model,
        rollout.prompt_ids,
        rollout.prompt_mask,
        rollout.completion_ids,
        rollout.completion_mask,
        rollout.video,
        rollout.num_generations,
    )
    kwargs = {"temperature": temperature, "chunk_size": chunk_size, "entropy": entropy}
    fn = shared_prompt_logprobs if share_prompt else completion_logprobs
    if grad:
        return fn(*args, **kwargs)
    with torch.no_grad():
        return fn(*args, **kwargs)
