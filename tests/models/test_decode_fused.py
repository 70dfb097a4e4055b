"""The fused decode step (models/decode_fused.py) against the simple one (models/decode.py): the
rotary rewrite by hand, the step's logits and cache writes in float32 and bf16 for the three
families, its bf16 error against a float64 step no worse than the simple step's, fused Qwen3-VL
norms refreshed in place, and the engine's tokens."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from test_engine import ARCHS, reference_greedy

from tiny_prompts import prompt_inputs, sharp_model
from videothinker.models.decode import _rotate_half, decode_step, weights_from_model
from videothinker.models.decode_fused import (
    additive_mask,
    cache_attention,
    compiled_fused_layer,
    fused_decode_step,
    step_mask,
    step_rotary,
)
from videothinker.models.engine import DecodeEngine
from videothinker.models.loading import eos_token_ids, load_model
from videothinker.models.vision import vlm_body


def test_rotary_as_roll_and_signed_sin_by_hand():
    """x = [1, 2, 3, 4], angle a on both halves: x cos + rotate_half(x) sin = [1c - 3s, 2c - 4s,
    3c + 1s, 4c + 2s], and the fused form gives it; v rows (cos 1, sin 0) come back unchanged."""
    x = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    c, s = torch.tensor(0.6, dtype=torch.float64), torch.tensor(0.8, dtype=torch.float64)
    expected = torch.stack([1 * c - 3 * s, 2 * c - 4 * s, 3 * c + 1 * s, 4 * c + 2 * s])
    assert torch.allclose(x * c + _rotate_half(x) * s, expected)
    signed = torch.stack([-s, -s, s, s])
    assert torch.allclose(torch.addcmul(x * c, x.roll(2, dims=-1), signed), expected)


def test_step_rotary_rows_and_additive_mask(tiny_model_dir):
    model = sharp_model(tiny_model_dir("qwen2_5_vl"))
    w = weights_from_model(model, fuse=True)
    positions = torch.tensor([0, 7, 300])
    cos, sin = step_rotary(positions, w)
    Q, K, D = w.num_heads, w.num_kv_heads, w.head_dim
    assert cos.shape == sin.shape == (3, Q + 2 * K, D)
    v = torch.randn(3, K, D)
    rotated_v = torch.addcmul(v * cos[:, Q + K :], v.roll(D // 2, dims=-1), sin[:, Q + K :])
    assert torch.equal(rotated_v, v)  # the v rows pass through exactly
    x = torch.randn(3, Q + K, D)
    angles = positions.float()[:, None] * w.inv_freq
    ref_cos = torch.cat([angles, angles], -1).cos()[:, None] * w.rope_scale
    ref_sin = torch.cat([angles, angles], -1).sin()[:, None] * w.rope_scale
    fused = torch.addcmul(x * cos[:, : Q + K], x.roll(D // 2, dims=-1), sin[:, : Q + K])
    torch.testing.assert_close(fused, x * ref_cos + _rotate_half(x) * ref_sin)
    attend = torch.tensor([[True, False, True], [False, False, True]])
    mask = additive_mask(attend, torch.float32)
    assert mask.shape == (2, 1, 1, 3)
    assert mask.flatten().tolist() == [0.0, float("-inf"), 0.0, float("-inf"), float("-inf"), 0.0]


def test_matmul_attention_equals_sdpa_float64():
    """`cache_attention` both ways on a random cache with masked slots (float64), and the matmul
    mask's layout: kv head by kv head, each head's query group sharing its row's mask."""
    gen = torch.Generator().manual_seed(2)
    n, K, group, S, D = 3, 2, 4, 7, 8
    q = torch.randn(n, K, group, D, generator=gen, dtype=torch.float64)
    kv = torch.randn(2, n, K, S, D, generator=gen, dtype=torch.float64)
    attend = torch.rand(n, S, generator=gen) > 0.4
    attend[:, 0] = True
    w = SimpleNamespace(dtype=torch.float64, num_kv_heads=K, num_heads=K * group)
    sdpa = cache_attention(q, kv, step_mask(attend, w, "sdpa"), 0.3)
    mask = step_mask(attend, w, "matmul")
    assert mask.shape == (n * K, group, S)
    assert torch.equal(mask[K * 2 + 1, 3], additive_mask(attend, torch.float64)[2, 0, 0])  # row 2, head 1
    matmul = cache_attention(q, kv, mask, 0.3)
    torch.testing.assert_close(matmul, sdpa, rtol=0, atol=1e-12)
    scores = torch.einsum("nkgd,nksd->nkgs", q, kv[0]) * 0.3
    weights = scores.masked_fill(~attend[:, None, None, :], float("-inf")).softmax(-1)
    torch.testing.assert_close(matmul, torch.einsum("nkgs,nksd->nkgd", weights, kv[1]), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="decode attention"):
        step_mask(attend, w, "flash")


def test_flex_attention_equals_the_float64_reference():
    """`cache_attention` through flex attention (float32: flex attention takes no float64 on a CPU)
    on a cache of two blocks and a part: a row with masked slots in every block, a row attending
    to all, a row attending to its first block and one slot after. Its block mask lists per row the
    blocks where every slot attends (full), where some do (partial; the padding past the cache's end
    counts as masked) and skips the rest; the result equals a float64 softmax by hand and the SDPA
    form in float32."""
    gen = torch.Generator().manual_seed(3)
    n, K, group, S, D = 3, 2, 4, 300, 8
    q = torch.randn(n, K, group, D, generator=gen, dtype=torch.float64)
    kv = torch.randn(2, n, K, S, D, generator=gen, dtype=torch.float64)
    attend = torch.rand(n, S, generator=gen) > 0.3
    attend[1] = True
    attend[2] = False
    attend[2, :129] = True
    w = SimpleNamespace(dtype=torch.float32, num_kv_heads=K, num_heads=K * group)
    mask = step_mask(attend, w, "flex")
    assert mask.full_kv_num_blocks.flatten().tolist() == [0, 2, 1]
    assert mask.kv_num_blocks.flatten().tolist() == [3, 1, 1]  # partial blocks
    assert mask.kv_indices[1, 0, 0, 0] == 2 and mask.full_kv_indices[1, 0, 0, :2].tolist() == [0, 1]
    assert mask.kv_indices[2, 0, 0, 0] == 1 and mask.full_kv_indices[2, 0, 0, 0] == 0
    flex = cache_attention(q.float(), kv.float(), mask, 0.3)
    scores = torch.einsum("nkgd,nksd->nkgs", q, kv[0]) * 0.3
    weights = scores.masked_fill(~attend[:, None, None, :], float("-inf")).softmax(-1)
    exact = torch.einsum("nkgs,nksd->nkgd", weights, kv[1])
    torch.testing.assert_close(flex.double(), exact, rtol=0, atol=2e-6)
    sdpa = cache_attention(q.float(), kv.float(), step_mask(attend, w, "sdpa"), 0.3)
    torch.testing.assert_close(flex, sdpa, rtol=0, atol=2e-6)
    everything = step_mask(torch.ones_like(attend), w, "flex")
    assert not torch.allclose(flex, cache_attention(q.float(), kv.float(), everything, 0.3))


def _both_steps(model, dtype, device="cpu", attention="sdpa"):
    """The simple and the fused step from one cache, tokens and positions: (logits, cache) each."""
    plain, fused = weights_from_model(model, dtype), weights_from_model(model, dtype, fuse=True)
    gen = torch.Generator().manual_seed(0)
    n, slots = 3, 8
    cache = torch.randn(plain.num_layers, 2, n, plain.num_kv_heads, slots, plain.head_dim, generator=gen)
    attend = torch.zeros(n, slots, dtype=torch.bool)
    attend[:, :4] = True
    attend[1, 0] = False  # rows attend to different slots
    tokens = torch.randint(0, plain.embed.shape[0], (n,), generator=gen)
    positions, index = torch.tensor([4, 5, 9]), torch.tensor([4])
    cache, attend, tokens, positions, index = (
        t.to(device) for t in (cache, attend, tokens, positions, index)
    )
    simple_cache, fused_cache = cache.to(dtype), cache.to(dtype)
    simple = decode_step(
        plain, tokens, positions, simple_cache[:, 0], simple_cache[:, 1], index, attend.clone()
    )
    fast = fused_decode_step(
        fused, tokens, positions, fused_cache, index, attend.clone(), attention=attention
    )
    return (simple, simple_cache), (fast, fused_cache)


DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device")])]  # fmt: skip


@pytest.mark.parametrize("attention", ["sdpa", "matmul", "flex"])
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("arch", ARCHS)
def test_fused_step_equals_simple_step(tiny_model_dir, arch, device, attention):
    """float32: logits and every cache slot agree to rounding; bf16: the fused step's error against
    the float64 step is no larger than the simple step's (on a GPU: its fused kernels); for both
    ways of attending over the cache."""
    model = sharp_model(tiny_model_dir(arch)).to(device)
    (simple, simple_cache), (fast, fused_cache) = _both_steps(model, torch.float32, device, attention)
    torch.testing.assert_close(fast, simple, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fused_cache, simple_cache, rtol=1e-5, atol=1e-5)
    (exact, exact_cache), _ = _both_steps(model, torch.float64, device)
    (simple16, cache16), (fast16, fused16) = _both_steps(model, torch.bfloat16, device, attention)
    for fast_out, simple_out, truth in ((fast16, simple16, exact), (fused16, cache16, exact_cache)):
        fast_err = (fast_out.double() - truth.double()).abs().mean()
        simple_err = (simple_out.double() - truth.double()).abs().mean()
        assert fast_err <= 1.25 * simple_err + 1e-6, (fast_err, simple_err)


@pytest.mark.slow
@pytest.mark.parametrize("attention", ["sdpa", "matmul", "flex"])
@pytest.mark.parametrize("arch", ARCHS)
def test_compiled_fused_layer_equals_the_eager_one(tiny_model_dir, arch, attention):
    """rollout.compile with the fused step: the whole layer through torch.compile gives the eager
    fused step's logits and cache writes (float32), with one graph for every layer."""
    from torch._dynamo.utils import counters

    model = sharp_model(tiny_model_dir(arch))
    w = weights_from_model(model, torch.float32, fuse=True)
    gen = torch.Generator().manual_seed(1)
    n, slots = 3, 8
    cache = torch.randn(w.num_layers, 2, n, w.num_kv_heads, slots, w.head_dim, generator=gen)
    attend = torch.zeros(n, slots, dtype=torch.bool)
    attend[:, :5] = True
    attend[2, 1] = False
    tokens = torch.randint(0, w.embed.shape[0], (n,), generator=gen)
    args = (tokens, torch.tensor([5, 6, 7]))
    eager_cache, compiled_cache = cache.clone(), cache.clone()
    eager = fused_decode_step(w, *args, eager_cache, torch.tensor([5]), attend.clone(), attention=attention)
    torch._dynamo.reset()  # graphs compiled by earlier tests would be reused, not counted
    counters.clear()
    compiled = fused_decode_step(
        w, *args, compiled_cache, torch.tensor([5]), attend.clone(), compiled_fused_layer(), attention
    )
    assert counters["stats"]["unique_graphs"] == 1
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(compiled_cache, eager_cache, rtol=1e-5, atol=1e-5)
    assert not torch.equal(compiled_cache, cache)  # this step's keys and values were written


def test_fused_step_needs_fused_weights(tiny_model_dir):
    model = sharp_model(tiny_model_dir("qwen2_vl"))
    w = weights_from_model(model)
    kv = torch.zeros(w.num_layers, 2, 1, w.num_kv_heads, 4, w.head_dim)
    with pytest.raises(ValueError, match="fuse=True"):
        fused_decode_step(
            w, torch.tensor([1]), torch.tensor([0]), kv, torch.tensor([0]), torch.ones(1, 4, dtype=bool)
        )


def test_fused_qwen3_norms_refresh_in_place(tiny_model_dir):
    """Qwen3-VL's q and k norm weights live stacked in one [Q+K, D] copy; refresh recasts both."""
    model = load_model(tiny_model_dir("qwen3_vl"), dtype="float32")
    weights = weights_from_model(model, torch.bfloat16, fuse=True)
    lw, Q = weights.layers[0], weights.num_heads
    attn = vlm_body(model).language_model.layers[0].self_attn
    pointer = lw.qk_norm.data_ptr()
    with torch.no_grad():
        attn.q_norm.weight.mul_(1.5)
        attn.k_norm.weight.add_(0.25)
    weights.refresh()
    assert lw.qk_norm.data_ptr() == pointer
    assert torch.equal(lw.qk_norm[:Q], attn.q_norm.weight.detach().to(torch.bfloat16).expand(Q, -1))
    assert torch.equal(
        lw.qk_norm[Q:], attn.k_norm.weight.detach().to(torch.bfloat16).expand(lw.qk_norm.shape[0] - Q, -1)
    )


@pytest.mark.parametrize("attention", ["sdpa", "matmul", "flex"])
@pytest.mark.parametrize("arch", ARCHS)
def test_fused_engine_greedy_equals_generate(tiny_model_dir, arch, attention):
    model = sharp_model(tiny_model_dir(arch))
    processor, inputs = prompt_inputs(tiny_model_dir(arch))
    eos, pad = eos_token_ids(model, processor), processor.tokenizer.pad_token_id
    engine = DecodeEngine(model, fuse=True, prompt_bucket=64, check_every=4, decode_attention=attention)
    assert engine.fused_step
    got = engine.generate(inputs, 3, max_new_tokens=12, eos_token_ids=eos, pad_token_id=pad, do_sample=False)
    assert torch.equal(got, reference_greedy(model, inputs, processor, 12).repeat_interleave(3, 0))


@pytest.mark.slow
def test_flex_attention_compiles_at_most_twice_across_cache_lengths():
    """The engine's buckets give caches of many lengths: flex attention compiles for the first, once
    more (the length then dynamic) for the second, and reuses that for the rest."""
    from torch._dynamo.utils import counters

    import videothinker.models.decode_fused as decode_fused

    torch._dynamo.reset()
    counters.clear()
    decode_fused._compiled_flex = None
    gen = torch.Generator().manual_seed(4)
    n, K, group, D = 2, 2, 4, 8
    w = SimpleNamespace(dtype=torch.float32, num_kv_heads=K, num_heads=K * group)
    for slots in (200, 330, 460, 590):
        q = torch.randn(n, K, group, D, generator=gen)
        kv = torch.randn(2, n, K, slots, D, generator=gen)
        attend = torch.zeros(n, slots, dtype=torch.bool)
        attend[:, : slots - 50] = True
        out = cache_attention(q, kv, step_mask(attend, w, "flex"), 0.3)
        sdpa = cache_attention(q, kv, step_mask(attend, w, "sdpa"), 0.3)
        torch.testing.assert_close(out, sdpa, rtol=0, atol=2e-6)
    assert counters["stats"]["unique_graphs"] <= 2
