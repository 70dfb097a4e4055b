"""Attention for a prompt computed once for its G completions.

The log-prob passes of a GRPO step run the model on G completions of each prompt. Laid out as G
sequences ``[prompt | completion j]``, the prompt's tokens go through every layer G times, though
their hidden states are the same in each copy (causal attention: a prompt token never sees a
completion). The shared layout (`rl/shared_prompt.py`) is one sequence per prompt,

    [prompt (P tokens) | completion 1 (n tokens) | ... | completion G (n tokens)],   L = P + G n,

in which each completion attends to the prompt and to its own earlier tokens, never to another
completion; the prompt attends causally to itself. `PromptLayout` holds that pattern, in two forms:

- **dense** (the simple reference): the [L, L] mask, given to the model's own attention (``sdpa``
  or ``eager``) as a custom 4-D mask. Any attention that takes a mask computes it, at the cost of all
  L^2 pairs: nothing outside the pattern is skipped.
- **split** (the fast path, `split_attention`): in each layer, two calls of the model's attention
  function: the prompt on itself (causal), and the G completions as G rows of n queries against
  ``[the prompt's keys | their own keys]``, causal within their own. Where no prompt is padded (one
  prompt per batch, or prompts of one length), the second call is SDPA's causal kernel aligned to
  the last key (``causal_lower_right``): P (P+1)/2 + G (n P + n (n+1)/2) pairs, fewer than the
  G (P+n)(P+n+1)/2 of G separate causal sequences; with padded prompts it takes a boolean mask and
  computes G n (P + n) pairs. The linear layers see P + G n tokens instead of G (P + n): in the
  paper's setting (P = 1500, G = 8, n = 767) 7 636 instead of 18 136.

The split form runs inside the attention modules: `install` points their attention lookup at
`shared_prompt_attention`, which is the model's own function (``sdpa`` or ``eager``) unless the call
carries a ``shared_prompt`` layout (a keyword transformers passes through to the attention
function). The layout travels with the layer's inputs, so the recompute of gradient checkpointing
sees it too. Gradients of the prompt's keys and values add up over the G completions through the
``expand`` that shares them.
"""

from __future__ import annotations

import copy
import sys
from dataclasses import dataclass, field

import torch
from torch.nn.attention.bias import causal_lower_right

from videothinker.models.vision import vlm_body

NAME = "videothinker_shared_prompt"
SUPPORTED = ("sdpa", "eager")


class _Shared:
    """A layout's mutable state, one object for every copy of the layout: not a dataclass or a
    container, so that code that rebuilds a layer's inputs (FSDP2's forward hooks cast tensors
    through `torch.distributed.utils._apply_to_tensors`, which copies dataclasses, dicts and lists)
    passes it on as it is."""

    def __init__(self) -> None:
        self.calls = 0
        self.masks: dict = {}


@dataclass
class PromptLayout:
    """B prompts (left padded to P), each followed by G completions of n input tokens.

    Attributes:
        prompt_valid: [B, P] bool, the prompt tokens that are not padding.
        generations: G.
        completion_length: n (the completions' tokens that are inputs: all but the last).
        calls: attention calls made with this layout (forward and recompute), a check that the
            model's attention modules read it.
    """

    prompt_valid: torch.Tensor
    generations: int
    completion_length: int
    _shared: _Shared = field(default_factory=_Shared, repr=False)

    @property
    def calls(self) -> int:
        return self._shared.calls

    @calls.setter
    def calls(self, value: int) -> None:
        self._shared.calls = value

    @property
    def prompt_length(self) -> int:
        return self.prompt_valid.shape[1]

    @property
    def length(self) -> int:
        return self.prompt_length + self.generations * self.completion_length

    @property
    def padded(self) -> bool:
        return not bool(self.prompt_valid.all())

    def prompt_mask(self) -> torch.Tensor:  # [B, 1, P, P] bool
        """The prompt on itself: causal over its valid tokens. A padding token also sees itself, so
        that no row is empty (its output is read by nothing)."""
        P, device = self.prompt_length, self.prompt_valid.device
        causal = torch.ones(P, P, dtype=torch.bool, device=device).tril()
        mask = causal & self.prompt_valid[:, None, None, :]
        return mask | torch.eye(P, dtype=torch.bool, device=device)

    def completion_mask(self) -> torch.Tensor:  # [B*G, 1, n, P + n] bool
        """Each completion's n queries against [the prompt's keys | their own keys]."""
        n, G, device = self.completion_length, self.generations, self.prompt_valid.device
        prompt = self.prompt_valid.repeat_interleave(G, dim=0)[:, None, None, :].expand(-1, 1, n, -1)
        own = torch.ones(n, n, dtype=torch.bool, device=device).tril().expand(prompt.shape[0], 1, n, n)
        return torch.cat([prompt, own], dim=-1)

    def dense_mask(self) -> torch.Tensor:  # [B, 1, L, L] bool
        """The whole pattern as one mask (the simple reference of `split_attention`)."""
        B, P, G, n = self.prompt_valid.shape[0], self.prompt_length, self.generations, self.completion_length
        mask = torch.zeros(B, 1, self.length, self.length, dtype=torch.bool, device=self.prompt_valid.device)
        mask[:, :, :P, :P] = self.prompt_mask()
        rows = self.completion_mask().view(B, G, n, P + n)
        for j in range(G):
            start = P + j * n
            mask[:, 0, start : start + n, :P] = rows[:, j, :, :P]
            mask[:, 0, start : start + n, start : start + n] = rows[:, j, :, P:]
        return mask

    def cached(self, name: str, additive_dtype: torch.dtype | None) -> torch.Tensor:
        """One of the masks above, made once per layout; additive (0 / dtype min) for ``eager``."""
        key = (name, additive_dtype)
        masks = self._shared.masks
        if key not in masks:
            mask = getattr(self, name)()
            if additive_dtype is not None:
                mask = as_additive(mask, additive_dtype)
            masks[key] = mask
        return masks[key]


def as_additive(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A boolean mask as the additive one ``eager`` attention adds to its scores."""
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(
        ~mask, torch.finfo(dtype).min
    )


def _implementation(attn: torch.nn.Module) -> str | None:
    """The attention implementation the module's model asks for: the one its config named before
    `install` (read now, so a later ``set_attn_implementation`` on the model is followed)."""
    config = getattr(attn, "_shared_prompt_config", None) or getattr(attn, "config", None)
    return getattr(config, "_attn_implementation", None)


def _base(module: torch.nn.Module):
    """The model's own attention function for ``module``, and whether it is ``eager``."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    name = _implementation(module)
    if name == "eager":
        return sys.modules[type(module).__module__].eager_attention_forward, True
    return ALL_ATTENTION_FUNCTIONS[name], False


def split_attention(
    base,
    eager: bool,
    module: torch.nn.Module,
    query: torch.Tensor,  # [B, H, L, D]
    key: torch.Tensor,  # [B, K, L, D]
    value: torch.Tensor,  # [B, K, L, D]
    layout: PromptLayout,
    **kwargs,
) -> tuple[torch.Tensor, None]:  # [B, L, H, D]
    """The shared layout's attention in two calls of ``base``: the prompt on itself, then the G
    completions of each prompt as G rows against [the prompt's keys | their own keys]."""
    B, H, L, D = query.shape
    K, P, G, n = key.shape[1], layout.prompt_length, layout.generations, layout.completion_length
    if layout.length != L:
        raise ValueError(f"the attention saw {L} positions; the shared-prompt layout has {layout.length}")
    layout.calls += 1
    kwargs = {k: v for k, v in kwargs.items() if k not in ("is_causal", "position_ids")}
    additive = query.dtype if eager else None
    # sdpa with no mask and is_causal runs the causal kernels; eager needs the mask spelled out
    prompt_mask = layout.cached("prompt_mask", additive) if eager or layout.padded else None
    prompt_out, _ = base(
        module, query[:, :, :P], key[:, :, :P], value[:, :, :P], prompt_mask, is_causal=True, **kwargs
    )  # [B, P, H, D]
    if n == 0:
        return prompt_out, None

    def own(x: torch.Tensor, heads: int) -> torch.Tensor:  # [B, heads, G n, D] -> [B, G, heads, n, D]
        return x[:, :, P:].view(B, heads, G, n, D).transpose(1, 2)

    def with_prompt(x: torch.Tensor) -> torch.Tensor:  # [B*G, K, P + n, D]
        shared = x[:, :, :P].unsqueeze(1).expand(B, G, K, P, D)
        return torch.cat([shared, own(x, K)], dim=3).reshape(B * G, K, P + n, D)

    queries, keys, values = own(query, H).reshape(B * G, H, n, D), with_prompt(key), with_prompt(value)
    if eager or layout.padded or n == 1:
        mask = layout.cached("completion_mask", additive)
    else:  # every prompt key valid: the pattern is causal aligned to the last key, which SDPA's
        # causal kernels run without a mask, skipping what lies above the diagonal
        mask = causal_lower_right(n, P + n)
        queries, keys, values = _autocast_dtype(queries, keys, values)
    completion_out, _ = base(module, queries, keys, values, mask, is_causal=False, **kwargs)  # [B*G, n, H, D]
    return torch.cat([prompt_out, completion_out.reshape(B, G * n, H, D)], dim=1), None


def _autocast_dtype(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The tensors in the dtype autocast would give SDPA, if it is on. ``causal_lower_right`` takes
    the SDPA call before autocast casts its inputs, and refuses mixed dtypes (under bf16 autocast the
    Qwen rotary leaves q and k in float32, v in bf16)."""
    device = tensors[0].device.type
    if not torch.is_autocast_enabled(device):
        return tensors
    dtype = torch.get_autocast_dtype(device)
    return tuple(t.to(dtype) for t in tensors)


def shared_prompt_attention(module, query, key, value, attention_mask, *, shared_prompt=None, **kwargs):
    """The attention function `install` gives a module: its own (``sdpa``, ``eager``) unless the
    call carries a `PromptLayout`, then `split_attention`."""
    base, eager = _base(module)
    if shared_prompt is None:
        return base(module, query, key, value, attention_mask, **kwargs)
    return split_attention(base, eager, module, query, key, value, shared_prompt, **kwargs)


def unavailable(model: torch.nn.Module) -> str | None:
    """None when the shared layout can run on this model's language model, else why not."""
    lm = vlm_body(model).language_model
    if "sliding_attention" in (getattr(lm.config, "layer_types", None) or []):
        return "it uses sliding-window attention"
    for layer in lm.layers:
        impl = _implementation(getattr(layer, "self_attn", None))
        if impl not in SUPPORTED:
            return f"its attention is {impl!r}; the shared prompt needs one of {', '.join(SUPPORTED)}"
    return None


def install(model: torch.nn.Module) -> None:
    """Route the language model's attention through `shared_prompt_attention` (idempotent). Each
    attention module gets a copy of its config naming that function, and keeps the model's own
    config to read its implementation from at each call; that config, and so the mask building and
    everything else that reads it, stay as they were. Check `unavailable` first."""
    from transformers import AttentionInterface

    AttentionInterface.register(NAME, shared_prompt_attention)
    copies: dict[int, object] = {}
    for layer in vlm_body(model).language_model.layers:
        attn = layer.self_attn
        if getattr(attn, "_shared_prompt_config", None) is not None:
            continue
        if id(attn.config) not in copies:
            config = copy.copy(attn.config)
            config._attn_implementation = NAME
            copies[id(attn.config)] = config
        attn._shared_prompt_config = attn.config
        attn.config = copies[id(attn.config)]
