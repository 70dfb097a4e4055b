"""One decode step of a Qwen VL text model, computed from the model's weights as plain tensors.

The sampling engine (`videothinker.models.engine`) decodes with this step instead of the model's
``forward``: the step takes fixed-shape inputs (one token per row, a static KV cache, a write index
held on the device), so it can be captured once in a CUDA graph and replayed, and it reads its
weights from a `DecoderWeights`, which either *are* the model's parameters (bf16 models: no copy) or
a low-precision copy of fp32 master weights, refreshed in place after each optimizer step (for a
LoRA policy, the adapted weights are merged copies: base + adapters, refreshed the same way).

`decode_step` equals one step of the model's own forward with a KV cache (``model(input_ids=[[t]],
past_key_values=cache)``) for a text token: embedding, for every decoder layer RMSNorm -> q/k/v
projections (Qwen3-VL: RMSNorm of q and k per head) -> rotary embedding -> attention over the cache
-> o projection -> residual -> RMSNorm -> SwiGLU MLP -> residual, then the final norm and lm_head.
tests/models/test_engine.py holds the engine's greedy tokens equal to ``generate``'s, token for
token, on tiny Qwen2-VL, Qwen2.5-VL and Qwen3-VL models.

Two facts make it short:
- A decoded token is text, and the three M-RoPE components (time, height, width) of a text token's
  position are equal, so its rotary embedding is the plain 1-D one at that position, whichever way the
  family interleaves the sections (Qwen2/2.5-VL: contiguous sections, Qwen3-VL: interleaved).
- Grouped-query attention needs no repeated keys and values: the ``group = heads / kv_heads`` query
  heads that share a key/value head are laid out as that head's query "sequence" of length ``group``,
  so ``scaled_dot_product_attention(q [N, kv_heads, group, D], k [N, kv_heads, S, D], ...)`` attends
  each query head to its own key/value head with no ``repeat_kv``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from videothinker.models.sharding import is_dtensor
from videothinker.models.vision import vlm_body


@dataclass
class LayerWeights:
    """The tensors of one decoder layer (shapes for hidden size H, q heads Q, kv heads K, head dim D)."""

    input_norm: torch.Tensor  # [H]
    q: torch.Tensor  # [Q*D, H]
    k: torch.Tensor  # [K*D, H]
    v: torch.Tensor  # [K*D, H]
    o: torch.Tensor  # [H, Q*D]
    post_norm: torch.Tensor  # [H]
    gate: torch.Tensor  # [I, H]
    up: torch.Tensor  # [I, H]
    down: torch.Tensor  # [H, I]
    q_bias: torch.Tensor | None = None  # [Q*D] (Qwen2/2.5-VL)
    k_bias: torch.Tensor | None = None  # [K*D]
    v_bias: torch.Tensor | None = None  # [K*D]
    o_bias: torch.Tensor | None = None  # [H]
    q_norm: torch.Tensor | None = None  # [D] (Qwen3-VL)
    k_norm: torch.Tensor | None = None  # [D]
    # fused (``weights_from_model(fuse=True)``): q, k, v (and their biases) and gate, up are row views
    # of these, so one product replaces three and two
    qkv: torch.Tensor | None = None  # [(Q+2K)*D, H]
    qkv_bias: torch.Tensor | None = None  # [(Q+2K)*D]
    gate_up: torch.Tensor | None = None  # [2*I, H]
    qk_norm: torch.Tensor | None = None  # [Q+K, D]: q_norm on Q rows, k_norm on K rows (fused Qwen3-VL)


@dataclass
class DecoderWeights:
    """What `decode_step` reads: the text model's tensors and shape facts.

    Attributes:
        embed: [V, H] token embeddings; lm_head: [V, H] (the same tensor when tied).
        layers: one `LayerWeights` per decoder layer; norm: [H] final RMSNorm weight.
        eps: RMSNorm epsilon; scaling: attention score scale (head_dim ** -0.5).
        num_heads, num_kv_heads, head_dim: attention shape.
        inv_freq: [D/2] float32 rotary inverse frequencies; rope_scale: cos/sin factor (1 for
            default RoPE).
        act: the MLP's activation (SiLU for the Qwen VL families).
        copies, sources: when the weights are a copy of the model's parameters, the copied tensors
            and the parameters they mirror (`refresh` casts the second into the first); empty when
            the weights are the parameters themselves.
        gathered: the sources are FSDP shards (DTensors, models/sharding.py): the copy holds their
            full tensors, gathered one parameter at a time.
        merges: for a LoRA policy, (merged weight, peft layer, adapter names): the layer's base
            weight plus each active adapter's ``get_delta_weight``, recomputed by `refresh`.
    """

    embed: torch.Tensor
    layers: list[LayerWeights]
    norm: torch.Tensor
    lm_head: torch.Tensor
    eps: float
    scaling: float
    num_heads: int
    num_kv_heads: int
    head_dim: int
    inv_freq: torch.Tensor
    rope_scale: float
    act: Callable[[torch.Tensor], torch.Tensor]
    copies: list[torch.Tensor] = field(default_factory=list)
    sources: list[torch.Tensor] = field(default_factory=list)
    merges: list[tuple[torch.Tensor, torch.nn.Module, list[str]]] = field(default_factory=list)
    gathered: bool = False

    @property
    def dtype(self) -> torch.dtype:
        return self.embed.dtype

    @property
    def device(self) -> torch.device:
        return self.embed.device

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def copy_bytes(self) -> int:
        """Bytes held by the copy and the merged LoRA weights (0 when the weights are the model's own)."""
        merged = [m[0] for m in self.merges]
        return sum(t.numel() * t.element_size() for t in (*self.copies, *merged))

    @torch.no_grad()
    def refresh(self) -> None:
        """Cast the model's current parameters into the copy and re-merge LoRA adapters, in place (the
        same buffers, so captured CUDA graphs stay valid); nothing to do when the weights are the
        parameters themselves. Shards are gathered in full one at a time (a collective: every
        process refreshes at once)."""
        if self.gathered:
            for copy, source in zip(self.copies, self.sources):
                copy.copy_(source.full_tensor())
        elif self.copies:
            torch._foreach_copy_(self.copies, self.sources)
        for merged, layer, names in self.merges:
            merged.copy_(layer.base_layer.weight)
            for name in names:
                merged.add_(layer.get_delta_weight(name).to(merged.dtype))


def decode_unavailable(model: torch.nn.Module) -> str | None:
    """None when `DecoderWeights.from_model` can serve this model, else why not (for a log line)."""
    body = vlm_body(model)
    lm = getattr(body, "language_model", None)
    if lm is None or not all(hasattr(lm, n) for n in ("embed_tokens", "layers", "norm", "rotary_emb")):
        return (
            f"{type(body).__name__} has no Qwen-style language_model (embed_tokens, layers, norm, rotary_emb)"
        )
    head = model.get_output_embeddings()
    if type(head) is not torch.nn.Linear or head.bias is not None:
        return f"its lm_head is a {type(head).__name__}, not a plain bias-free Linear"
    config = lm.config
    if "sliding_attention" in (getattr(config, "layer_types", None) or []):
        return "it uses sliding-window attention"
    rope_type = getattr(lm.rotary_emb, "rope_type", "default")
    if rope_type in ("dynamic", "longrope") or not hasattr(lm.rotary_emb, "inv_freq"):
        return f"its rotary embedding ({rope_type}) depends on the sequence length"
    for i, layer in enumerate(lm.layers):
        attn, mlp = getattr(layer, "self_attn", None), getattr(layer, "mlp", None)
        if attn is None or mlp is None:
            return f"decoder layer {i} has no self_attn or mlp"
        for name, module in (
            *((n, getattr(attn, n, None)) for n in ("q_proj", "k_proj", "v_proj", "o_proj")),
            *((n, getattr(mlp, n, None)) for n in ("gate_proj", "up_proj", "down_proj")),
        ):
            if type(module) is not torch.nn.Linear and (why := _lora_unservable(module)) is not None:
                return f"layer {i}'s {name} is a {type(module).__name__}, {why}"
        if any(
            getattr(mlp, n).bias is not None for n in ("gate_proj", "up_proj", "down_proj")
        ) or not hasattr(mlp, "act_fn"):
            return f"layer {i}'s MLP is not a bias-free SwiGLU"
        for norm in (layer.input_layernorm, layer.post_attention_layernorm):
            if _eps(norm) is None or getattr(norm, "weight", None) is None:
                return f"layer {i}'s norms are not RMSNorms with a weight"
    return None


def _lora_unservable(module: torch.nn.Module) -> str | None:
    """None for a peft LoRA layer over a plain Linear whose adapters merge into one weight
    (``get_delta_weight``), else why not."""
    base = getattr(module, "base_layer", None)
    if type(base) is not torch.nn.Linear or not hasattr(module, "get_delta_weight"):
        return "not a plain Linear or a LoRA layer over one"
    for name in getattr(module, "active_adapters", []):
        for flag in ("use_dora", "lora_bias"):
            if getattr(module, flag, {}).get(name, False):
                return f"whose adapter {name!r} uses {flag} (not merged by the engine)"
    return None


def _linear(module: torch.nn.Module) -> torch.nn.Linear:
    """The plain Linear of a layer: itself, or a LoRA layer's base."""
    return module if type(module) is torch.nn.Linear else module.base_layer


def _adapters_to_merge(module: torch.nn.Module) -> list[str]:
    """The active LoRA adapters the engine merges into a layer's weight (none for a plain Linear or an
    already merged layer)."""
    return [] if type(module) is torch.nn.Linear or module.merged else list(module.active_adapters)


def _eps(norm: torch.nn.Module) -> float | None:
    return getattr(norm, "variance_epsilon", getattr(norm, "eps", None))


@torch.no_grad()
def weights_from_model(
    model: torch.nn.Module, dtype: torch.dtype | None = None, fuse: bool = False
) -> DecoderWeights:
    """The text model's weights for `decode_step`: the parameters themselves when ``dtype`` is None or
    theirs, else a copy cast to ``dtype`` (tied tensors copied once); a LoRA layer's weight is its
    base with the active adapters merged in. A sharded model's parameters (FSDP DTensors) are always
    copied, each gathered to its full tensor (in ``dtype``, or its own). Copies and merges are kept
    fresh by `DecoderWeights.refresh`. Raises ValueError naming what is unsupported
    (`decode_unavailable`).

    ``fuse``: each layer's q, k and v weights (and biases) are copied into one buffer, and gate and up
    into another (`LayerWeights.qkv`, ``gate_up``; the per-projection fields are row views of them),
    so the step runs one product for the three and one for the two. Where a copy exists anyway (a
    dtype cast, FSDP shards, merged LoRA weights) it is laid out fused at no extra memory; for a model
    decoded in its own dtype the fused buffers are a copy of those weights, refreshed like the others."""
    reason = decode_unavailable(model)
    if reason is not None:
        raise ValueError(f"the decode engine cannot serve {type(model).__name__}: {reason}")
    body = vlm_body(model)
    lm = body.language_model
    copies: dict[int, torch.Tensor] = {}
    sources: list[torch.Tensor] = []
    broadcast: list[tuple[torch.Tensor, torch.Tensor]] = []  # (copy, smaller source it repeats)
    merges: list[tuple[torch.Tensor, torch.nn.Module, list[str]]] = []

    def weight(module: torch.nn.Module) -> torch.Tensor:
        """A Linear's weight; for a LoRA layer with active adapters, a merged copy (`refresh`)."""
        names = _adapters_to_merge(module)
        if not names:
            return take(_linear(module).weight)
        base = module.base_layer.weight
        merged = torch.empty_like(base, dtype=dtype or base.dtype)
        merges.append((merged, module, names))
        return merged

    def bias(module: torch.nn.Module) -> torch.Tensor | None:
        return take(_linear(module).bias)

    def take(t: torch.Tensor | None) -> torch.Tensor | None:
        if t is None:
            return None
        t = t.detach()
        shard = is_dtensor(t)
        if not shard and (dtype is None or t.dtype == dtype):
            return t
        key = _storage_key(t)
        if key not in copies:
            copies[key] = (t.full_tensor() if shard else t).to(dtype or t.dtype, copy=True)
            sources.append(t)
        return copies[key]

    def stacked(tensors: list[torch.Tensor], merged: list[tuple[torch.nn.Module, list[str]] | None]):
        """One buffer holding ``tensors`` stacked by rows, and its row views: each view a copy of its
        tensor (`refresh` casts into it) or, for a LoRA layer with active adapters, its merged weight."""
        first = tensors[0]
        buffer = torch.empty(
            (sum(t.shape[0] for t in tensors), *first.shape[1:]),
            dtype=dtype or first.dtype,
            device=first.device,
        )
        views = list(buffer.split([t.shape[0] for t in tensors]))
        for view, tensor, merge in zip(views, tensors, merged, strict=True):
            if merge is not None:
                merges.append((view, *merge))
            else:
                copies[_storage_key(tensor)] = view
                sources.append(tensor.detach())
        return buffer, views

    def fused(modules: list[torch.nn.Module]):
        """`stacked` weights of Linear (or LoRA) layers, and their biases if they have any."""
        merged = [(m, names) if (names := _adapters_to_merge(m)) else None for m in modules]
        weights_, views = stacked([_linear(m).weight for m in modules], merged)
        biases = [_linear(m).bias for m in modules]
        if all(b is None for b in biases):
            return weights_, views, None, [None] * len(modules)
        if any(b is None for b in biases):  # no Qwen VL family mixes them
            raise ValueError("fused projections need all of their layers with biases or all without")
        bias_buffer, bias_views = stacked(list(biases), [None] * len(modules))
        return weights_, views, bias_buffer, bias_views

    layers = []
    for layer in lm.layers:
        a, m = layer.self_attn, layer.mlp
        q_norm, k_norm = getattr(a, "q_norm", None), getattr(a, "k_norm", None)
        qk_norm = None
        if fuse:
            qkv, (q, k, v), qkv_bias, (q_bias, k_bias, v_bias) = fused([a.q_proj, a.k_proj, a.v_proj])
            gate_up, (gate, up), _, _ = fused([m.gate_proj, m.up_proj])
            if q_norm is not None:  # one [Q+K, D] weight, so one product scales q's rows and k's
                heads = (lm.config.num_attention_heads, lm.config.num_key_value_heads)
                qk_norm = torch.empty(
                    (sum(heads), q_norm.weight.shape[0]),
                    dtype=dtype or q_norm.weight.dtype,
                    device=qkv.device,
                )
                for view, norm in zip(qk_norm.split(heads), (q_norm, k_norm), strict=True):
                    broadcast.append((view, norm.weight.detach()))
        else:
            qkv = qkv_bias = gate_up = None
            q, k, v, gate, up = (weight(x) for x in (a.q_proj, a.k_proj, a.v_proj, m.gate_proj, m.up_proj))
            q_bias, k_bias, v_bias = (bias(x) for x in (a.q_proj, a.k_proj, a.v_proj))
        layers.append(
            LayerWeights(
                input_norm=take(layer.input_layernorm.weight),
                q=q,
                k=k,
                v=v,
                o=weight(a.o_proj),
                post_norm=take(layer.post_attention_layernorm.weight),
                gate=gate,
                up=up,
                down=weight(m.down_proj),
                q_bias=q_bias,
                k_bias=k_bias,
                v_bias=v_bias,
                o_bias=bias(a.o_proj),
                q_norm=None if q_norm is None else take(q_norm.weight),
                k_norm=None if k_norm is None else take(k_norm.weight),
                qkv=qkv,
                qkv_bias=qkv_bias,
                gate_up=gate_up,
                qk_norm=qk_norm,
            )
        )
    config = lm.config
    attn = lm.layers[0].self_attn
    head_dim = attn.head_dim
    weights = DecoderWeights(
        embed=take(lm.embed_tokens.weight),
        layers=layers,
        norm=take(lm.norm.weight),
        lm_head=take(model.get_output_embeddings().weight),
        eps=float(_eps(lm.norm)),
        scaling=float(getattr(attn, "scaling", head_dim**-0.5)),
        num_heads=config.num_attention_heads,
        num_kv_heads=config.num_key_value_heads,
        head_dim=head_dim,
        inv_freq=lm.rotary_emb.inv_freq.detach().float().clone(),
        rope_scale=float(getattr(lm.rotary_emb, "attention_scaling", 1.0)),
        act=lm.layers[0].mlp.act_fn,
    )
    weights.copies = [copies[_storage_key(s)] for s in sources] + [c for c, _ in broadcast]
    weights.sources = sources + [s for _, s in broadcast]
    weights.gathered = any(is_dtensor(s) for s in sources)
    weights.merges = merges
    if merges or fuse:  # fused buffers start empty: fill them
        weights.refresh()
    return weights


def _storage_key(t: torch.Tensor) -> int:
    """Where a tensor's data lives (a shard's: its local tensor's), so tied weights are copied once."""
    return (t.to_local() if is_dtensor(t) else t).data_ptr()


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """The Qwen RMSNorm: normalised in fp32, cast back to the input's dtype, then scaled."""
    x32 = x.float()
    x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x32.to(x.dtype)


def rotary(positions: torch.Tensor, w: DecoderWeights) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [N, 1, D] of the 1-D rotary embedding at ``positions`` [N] (int64)."""
    freqs = positions.float().unsqueeze(-1) * w.inv_freq  # [N, D/2]
    angles = torch.cat([freqs, freqs], dim=-1).unsqueeze(1)  # [N, 1, D]
    return (angles.cos() * w.rope_scale).to(w.dtype), (angles.sin() * w.rope_scale).to(w.dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def attention_inputs(
    h: torch.Tensor,  # [N, H]
    cos: torch.Tensor,  # [N, 1, D]
    sin: torch.Tensor,  # [N, 1, D]
    lw: LayerWeights,
    eps: float,
    num_heads: int,
    num_kv_heads: int,
    head_dim: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # q [N, Q, D], k [N, K, D], v [N, K, D]
    """A layer's part before attention: RMSNorm, q/k/v projections, (Qwen3-VL) q/k norms, rotary."""
    n = h.shape[0]
    x = rms_norm(h, lw.input_norm, eps)
    if lw.qkv is not None:  # one product for the three (weights_from_model(fuse=True))
        q, k, v = F.linear(x, lw.qkv, lw.qkv_bias).split(
            [num_heads * head_dim, num_kv_heads * head_dim, num_kv_heads * head_dim], dim=-1
        )
        q = q.reshape(n, num_heads, head_dim)
        k, v = k.reshape(n, num_kv_heads, head_dim), v.reshape(n, num_kv_heads, head_dim)
    else:
        q = F.linear(x, lw.q, lw.q_bias).view(n, num_heads, head_dim)
        k = F.linear(x, lw.k, lw.k_bias).view(n, num_kv_heads, head_dim)
        v = F.linear(x, lw.v, lw.v_bias).view(n, num_kv_heads, head_dim)
    if lw.q_norm is not None:
        q, k = rms_norm(q, lw.q_norm, eps), rms_norm(k, lw.k_norm, eps)
    return q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin, v


def attention_output(
    h: torch.Tensor,  # [N, H], the layer's input (the residual)
    attended: torch.Tensor,  # [N, Q*D]
    lw: LayerWeights,
    eps: float,
    act: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:  # [N, H], the layer's output
    """A layer's part after attention: o projection, residual, RMSNorm, SwiGLU MLP, residual."""
    h = h + F.linear(attended, lw.o, lw.o_bias)
    x = rms_norm(h, lw.post_norm, eps)
    if lw.gate_up is not None:  # one product for the two (weights_from_model(fuse=True))
        gate, up = F.linear(x, lw.gate_up).chunk(2, dim=-1)
        return h + F.linear(act(gate) * up, lw.down)
    return h + F.linear(act(F.linear(x, lw.gate)) * F.linear(x, lw.up), lw.down)


def decode_step(
    w: DecoderWeights,
    tokens: torch.Tensor,  # [N] int64, this step's input token of each row
    positions: torch.Tensor,  # [N] int64, their rotary positions
    keys: torch.Tensor,  # [L, N, K, S, D], the static key cache
    values: torch.Tensor,  # [L, N, K, S, D]
    write_index: torch.Tensor,  # [1] int64, the cache slot this step's keys and values go to
    attend: torch.Tensor,  # [N, S] bool, the slots each row attends to (this step's is set here)
    parts: tuple[Callable, Callable] = (attention_inputs, attention_output),
) -> torch.Tensor:  # [N, V] float32 logits of the next token
    """One token per row through the text model, its keys and values written into the cache at
    ``write_index``; every shape is fixed and every index lives on the device, so the step can be
    captured in a CUDA graph. Equals the model's forward on one new token with a KV cache holding
    the slots ``attend`` marks (see the module docstring).

    ``parts``: the layer's pure parts before and after attention (`attention_inputs`,
    `attention_output`), or compiled versions of them (``rollout.compile``); the cache writes and
    the attention stay outside them."""
    before, after = parts
    n = tokens.shape[0]
    group = w.num_heads // w.num_kv_heads
    attend.index_fill_(1, write_index, True)
    mask = attend.view(n, 1, 1, -1)  # [N, 1, 1, S], broadcast over kv heads and their query group
    cos, sin = rotary(positions, w)
    h = F.embedding(tokens, w.embed)  # [N, H]
    for layer, lw in enumerate(w.layers):
        q, k, v = before(h, cos, sin, lw, w.eps, w.num_heads, w.num_kv_heads, w.head_dim)
        keys[layer].index_copy_(2, write_index, k.unsqueeze(2))
        values[layer].index_copy_(2, write_index, v.unsqueeze(2))
        out = F.scaled_dot_product_attention(
            q.view(n, w.num_kv_heads, group, w.head_dim),
            keys[layer],
            values[layer],
            attn_mask=mask,
            scale=w.scaling,
        )  # [N, K, group, D]
        h = after(h, out.reshape(n, w.num_heads * w.head_dim), lw, w.eps, w.act)
    return F.linear(rms_norm(h, w.norm, w.eps), w.lm_head).float()


def compiled_parts() -> tuple[Callable, Callable]:
    """`attention_inputs` and `attention_output` compiled with ``torch.compile`` (fused elementwise
    work: norms, rotary, residuals; one compiled graph each, shared by every layer: the weights are
    passed as tensors, so layers differ only in data, not in what is guarded)."""
    before = torch.compile(_inputs_of_tensors, fullgraph=True, dynamic=False)
    after = torch.compile(_output_of_tensors, fullgraph=True, dynamic=False)

    def compiled_before(h, cos, sin, lw: LayerWeights, eps, num_heads, num_kv_heads, head_dim):
        tensors = (lw.input_norm, lw.q, lw.q_bias, lw.k, lw.k_bias, lw.v, lw.v_bias, lw.q_norm, lw.k_norm)
        return before(h, cos, sin, *tensors, lw.qkv, lw.qkv_bias, eps, num_heads, num_kv_heads, head_dim)

    def compiled_after(h, attended, lw: LayerWeights, eps, act):
        tensors = (lw.o, lw.o_bias, lw.post_norm, lw.gate, lw.up, lw.down, lw.gate_up)
        return after(h, attended, *tensors, eps, act)

    return compiled_before, compiled_after


def _inputs_of_tensors(
    h, cos, sin, input_norm, q, q_bias, k, k_bias, v, v_bias, q_norm, k_norm, qkv, qkv_bias, eps, *shape
):
    lw = LayerWeights(
        input_norm, q, k, v, None, None, None, None, None, q_bias, k_bias, v_bias, None, q_norm, k_norm
    )
    lw.qkv, lw.qkv_bias = qkv, qkv_bias
    return attention_inputs(h, cos, sin, lw, eps, *shape)


def _output_of_tensors(h, attended, o, o_bias, post_norm, gate, up, down, gate_up, eps, act):
    lw = LayerWeights(None, None, None, None, o, post_norm, gate, up, down, o_bias=o_bias, gate_up=gate_up)
    return attention_output(h, attended, lw, eps, act)
