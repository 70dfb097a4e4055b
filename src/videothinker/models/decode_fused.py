"""The fused decode step: `decode_step`'s computation in about a third of its kernels.

A decode step for 8 rows moves little data per kernel, so on a GPU its time is mostly the count of
kernels, not their work (docs/PERFORMANCE.md). `decode_step` keeps the model's own formulation (the
simple path: about 43 tensor operations a layer in bf16); this step computes the same thing with
weights laid out by ``weights_from_model(fuse=True)`` in about 14:

- the norms are ``F.rms_norm`` (one fused kernel on CUDA; the reference spells it out in eight);
- q, k and v come from one product over the fused weight, as one ``[N, Q + 2K, D]`` tensor;
- Qwen3-VL's per-head q and k norms run once over the q and k rows, with their weights stacked;
- the rotary embedding runs once over all of those rows: ``x cos + rotate_half(x) sin`` is
  ``addcmul(x cos, roll(x, D/2), s)`` with ``s = [-sin, sin]`` by halves, and on the v rows cos is 1
  and s is 0, which leaves v exactly as it was; k and v then lie side by side, so one write puts both
  into the cache (laid out ``[layers, 2, N, K, S, D]``);
- the mask becomes additive once per step, not once per layer;
- the residual adds ride on the o and down products (``addmm``); gate and up are one product.

Rounding differs from the reference only where a fused kernel keeps fp32 a little longer (a bf16
norm's weight multiplied before the cast); in float32 and float64 the two steps agree to rounding
(tests/models/test_decode_fused.py), and the engine's greedy tokens equal ``generate``'s.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import BlockMask, flex_attention

from videothinker.config import DECODE_ATTENTION
from videothinker.models.decode import DecoderWeights, LayerWeights, _adapters_to_merge, _linear, rotary
from videothinker.models.sharding import is_dtensor
from videothinker.models.vision import vlm_body


def step_rotary(positions: torch.Tensor, w: DecoderWeights) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and signed sin [N, Q + 2K, D] of one step, for every row of the fused q/k/v output: the
    1-D rotary embedding at ``positions`` [N] on the q and k rows; cos 1 and sin 0 on the v rows."""
    n, q_k, kv, D = positions.shape[0], w.num_heads + w.num_kv_heads, w.num_kv_heads, w.head_dim
    cos, sin = rotary(positions, w)  # [N, 1, D] each, the simple step's
    # rotate_half(x) * sin == roll(x, D/2) * signed, signed = [-sin, sin] by halves
    signed = torch.cat([-sin[..., : D // 2], sin[..., D // 2 :]], dim=-1)
    cos_rows = torch.cat([cos.expand(n, q_k, D), cos.new_ones(n, kv, D)], dim=1)
    sin_rows = torch.cat([signed.expand(n, q_k, D), sin.new_zeros(n, kv, D)], dim=1)
    return cos_rows, sin_rows


def additive_mask(attend: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[N, 1, 1, S]: 0 where a row attends, -inf elsewhere (made once per step, read by every layer)."""
    mask = torch.zeros(attend.shape, dtype=dtype, device=attend.device)
    return mask.masked_fill_(~attend, float("-inf")).view(attend.shape[0], 1, 1, -1)


def step_mask(attend: torch.Tensor, w: DecoderWeights, attention: str = "sdpa") -> torch.Tensor | BlockMask:
    """The step's mask in the form `cache_attention` computes ``attention`` from: ``sdpa``, the
    additive [N, 1, 1, S]; ``matmul``, the same expanded to [N*K, Q/K, S] for ``baddbmm``;
    ``flex``, `flex_block_mask`'s."""
    if attention == "flex":
        return flex_block_mask(attend, w.num_heads // w.num_kv_heads)
    mask = additive_mask(attend, w.dtype)
    if attention == "sdpa":
        return mask
    if attention != "matmul":
        raise ValueError(f"decode attention must be one of {DECODE_ATTENTION}, got {attention!r}")
    n, K, group = attend.shape[0], w.num_kv_heads, w.num_heads // w.num_kv_heads
    return mask.expand(n, K, group, attend.shape[1]).reshape(n * K, group, attend.shape[1])


_FLEX_BLOCK = 128  # flex attention's default block size
_compiled_flex: Callable | None = None
# the transposed (query-side) block lists serve only the backward pass; torch builds them unless told
_NO_Q_BLOCKS = (
    {"compute_q_blocks": False}
    if "compute_q_blocks" in inspect.signature(BlockMask.from_kv_blocks).parameters
    else {}
)


def flex_block_mask(attend: torch.Tensor, group: int) -> BlockMask:
    """The block mask flex attention decodes ``group`` queries per kv head with, from ``attend``
    [N, S] (bool), once per step: per row, blocks of the cache where every slot attends are "full"
    (computed without the mask function), blocks where some do are partial (the mask function
    reads ``attend``, padded with False to whole blocks so it never reads past its end), and blocks
    where none do are skipped, so decoding reads only the cache written so far. Made of tensor
    operations alone, so a CUDA graph captures it and replays it on each step's ``attend``."""
    n, slots = attend.shape
    blocks = -(-slots // _FLEX_BLOCK)
    padded = F.pad(attend, (0, blocks * _FLEX_BLOCK - slots))
    by_block = padded.view(n, blocks, _FLEX_BLOCK)
    full = by_block.all(-1)
    partial = by_block.any(-1) & ~full

    def listed(chosen: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """How many blocks are chosen per row, and their indices first (then the others)."""
        count = chosen.sum(-1, dtype=torch.int32).view(n, 1, 1)
        order = torch.argsort((~chosen).to(torch.int8), dim=-1, stable=True).to(torch.int32)
        return count, order.view(n, 1, 1, blocks)

    def keep(b, h, q_index, kv_index):
        return padded[b, kv_index]

    return BlockMask.from_kv_blocks(
        *listed(partial),
        *listed(full),
        BLOCK_SIZE=_FLEX_BLOCK,
        mask_mod=keep,
        seq_lengths=(group, slots),
        **_NO_Q_BLOCKS,
    )


def flex_cache_attention(
    q: torch.Tensor,  # [N, K, Q/K, D]
    kv: torch.Tensor,  # [2, N, K, S, D]
    block_mask: BlockMask,  # `flex_block_mask`'s
    scale: float,
) -> torch.Tensor:  # [N, K, Q/K, D]
    """`cache_attention` through torch's flex attention: each kv head is a "head" whose Q/K query
    heads are its queries, so each key and value is read once for its group, by the split-KV
    decoding kernel flex attention generates for short queries, and only the blocks of the cache
    that some slot of the row attends to. Compiled (flex attention has no fast eager form) with
    torch's automatic dynamic shapes: a second cache length compiles once more, with the length
    dynamic, and later lengths reuse that."""
    q = q.contiguous()  # a slice of the fused q/k/v rows; inductor's flex lowering takes no view of it
    if torch.compiler.is_compiling():  # inside `compiled_fused_layer`'s graph
        return flex_attention(q, kv[0], kv[1], block_mask=block_mask, scale=scale)
    global _compiled_flex
    if _compiled_flex is None:
        _compiled_flex = torch.compile(flex_attention)
    return _compiled_flex(q, kv[0], kv[1], block_mask=block_mask, scale=scale)


def cache_attention(
    q: torch.Tensor,  # [N, K, Q/K, D]: each kv head's group of query heads
    kv: torch.Tensor,  # [2, N, K, S, D]
    mask: torch.Tensor | BlockMask,  # `step_mask`'s: [N, 1, 1, S] (sdpa), [N*K, Q/K, S] (matmul), flex
    scale: float,
) -> torch.Tensor:  # [N, K, Q/K, D]
    """Decode attention over the cache, each key and value read once for its group of query heads:
    one SDPA call (torch picks the kernel); for a 3-D mask, two batched products around a softmax
    (scores ``baddbmm(mask, q, k^T, alpha=scale)``, which cuBLAS spreads over the cache length;
    the softmax accumulates in float32); for a block mask, flex attention (`flex_cache_attention`)."""
    if isinstance(mask, BlockMask):
        return flex_cache_attention(q, kv, mask, scale)
    if mask.dim() == 4:
        return F.scaled_dot_product_attention(q, kv[0], kv[1], attn_mask=mask, scale=scale)
    n, K, group, D = q.shape
    keys, values = kv[0].reshape(n * K, -1, D), kv[1].reshape(n * K, -1, D)
    scores = torch.baddbmm(mask, q.reshape(n * K, group, D), keys.transpose(1, 2), alpha=scale)
    return torch.bmm(scores.softmax(-1), values).view(n, K, group, D)


def fused_layer(
    h: torch.Tensor,  # [N, H]
    cos: torch.Tensor,  # [N, Q + 2K, D] (`step_rotary`)
    sin: torch.Tensor,  # [N, Q + 2K, D]
    kv: torch.Tensor,  # [2, N, K, S, D], this layer's cache
    write_index: torch.Tensor,  # [1] int64
    mask: torch.Tensor,  # `step_mask`'s
    lw: LayerWeights,
    w: DecoderWeights,
) -> torch.Tensor:  # [N, H]
    """One decoder layer for one token per row, its keys and values written into ``kv``."""
    n, Q, K, D = h.shape[0], w.num_heads, w.num_kv_heads, w.head_dim
    x = F.rms_norm(h, h.shape[-1:], lw.input_norm, w.eps)
    proj = F.linear(x, lw.qkv, lw.qkv_bias).view(n, Q + 2 * K, D)
    if lw.qk_norm is not None:  # Qwen3-VL: the per-head norms of q and k, in place on their rows
        q_k = proj[:, : Q + K]
        normed = F.rms_norm(q_k, (D,), eps=w.eps)
        if torch.compiler.is_compiling():  # the compiler takes no out= here; it fuses the two anyway
            q_k.copy_(normed * lw.qk_norm)
        else:
            torch.mul(normed, lw.qk_norm, out=q_k)
    rotated = torch.addcmul(proj * cos, proj.roll(D // 2, dims=-1), sin)
    new_kv = rotated[:, Q:].view(n, 2, K, 1, D).transpose(0, 1)  # [2, N, K, 1, D]
    kv.index_copy_(3, write_index, new_kv)
    attended = cache_attention(rotated[:, :Q].view(n, K, Q // K, D), kv, mask, w.scaling).reshape(n, Q * D)
    if lw.o_bias is None:
        h = torch.addmm(h, attended, lw.o.t())
    else:
        h = h + F.linear(attended, lw.o, lw.o_bias)
    gate, up = F.linear(F.rms_norm(h, h.shape[-1:], lw.post_norm, w.eps), lw.gate_up).chunk(2, dim=-1)
    return torch.addmm(h, w.act(gate) * up, lw.down.t())


def compiled_fused_layer():
    """`fused_layer` through ``torch.compile`` (``rollout.compile`` with the fused step): the whole
    layer, cache write and attention included, one graph for all layers (the weights are passed as
    tensors, so layers differ only in data). The compiler fuses the norms, the rotary and the
    activation with their neighbours; the products and the attention stay library calls."""
    compiled = torch.compile(_fused_layer_of_tensors, fullgraph=True, dynamic=False)

    def layer(h, cos, sin, kv, write_index, mask, lw: LayerWeights, w: DecoderWeights):
        tensors = (lw.input_norm, lw.qkv, lw.qkv_bias, lw.qk_norm, lw.o, lw.o_bias, lw.post_norm, lw.gate_up)
        return compiled(h, cos, sin, kv, write_index, mask, *tensors, lw.down, w)

    return layer


def _fused_layer_of_tensors(
    h,
    cos,
    sin,
    kv,
    write_index,
    mask,
    input_norm,
    qkv,
    qkv_bias,
    qk_norm,
    o,
    o_bias,
    post_norm,
    gate_up,
    down,
    w,
):
    lw = LayerWeights(input_norm, None, None, None, o, post_norm, None, None, down, o_bias=o_bias)
    lw.qkv, lw.qkv_bias, lw.qk_norm, lw.gate_up = qkv, qkv_bias, qk_norm, gate_up
    return fused_layer(h, cos, sin, kv, write_index, mask, lw, w)


def fused_decode_step(
    w: DecoderWeights,
    tokens: torch.Tensor,  # [N] int64
    positions: torch.Tensor,  # [N] int64
    kv: torch.Tensor,  # [L, 2, N, K, S, D], keys ([:, 0]) and values ([:, 1]) of every layer
    write_index: torch.Tensor,  # [1] int64
    attend: torch.Tensor,  # [N, S] bool (this step's slot is set here)
    layer: Callable = fused_layer,
    attention: str = "sdpa",
) -> torch.Tensor:  # [N, V] float32 logits
    """`decode_step` over fused weights (``weights_from_model(fuse=True)``) and a joint K/V cache:
    the same inputs, outputs and cache writes, in fewer kernels; capturable in a CUDA graph.
    ``layer``: `fused_layer`, or `compiled_fused_layer`'s; ``attention``: how `cache_attention`
    computes (``sdpa``, ``matmul`` or ``flex``, `DECODE_ATTENTION`)."""
    if w.layers[0].qkv is None:
        raise ValueError("fused_decode_step needs weights_from_model(..., fuse=True)")
    attend.index_fill_(1, write_index, True)
    mask = step_mask(attend, w, attention)
    cos, sin = step_rotary(positions, w)
    h = F.embedding(tokens, w.embed)
    for index, lw in enumerate(w.layers):
        h = layer(h, cos, sin, kv[index], write_index, mask, lw, w)
    return F.linear(F.rms_norm(h, h.shape[-1:], w.norm, w.eps), w.lm_head).float()


def fusing_is_free(model: torch.nn.Module, dtype: torch.dtype | None = None) -> bool:
    """Whether `weights_from_model` copies the projection weights anyway (a cast to ``dtype``, FSDP
    shards gathered, LoRA adapters merged in), so that laying them out fused costs no memory. The
    first layer's q projection stands for all of them (the Qwen VL families are uniform)."""
    module = vlm_body(model).language_model.layers[0].self_attn.q_proj
    if _adapters_to_merge(module):
        return True
    w = _linear(module).weight
    return is_dtensor(w) or (dtype is not None and w.dtype != dtype)
