"""Shared-prompt log-probs (each prompt run once for its G completions): the layout's positions and
masks by hand, the split attention against the dense mask and against `completion_logprobs` (values
and gradients, float32 and float64) on tiny Qwen2-VL, Qwen2.5-VL and Qwen3-VL models."""

from __future__ import annotations

import pytest
import torch
from test_logprobs import G, T, _grads

from tiny_prompts import completion_batch, prompt_inputs
from videothinker.models import prompt_attention
from videothinker.models.inputs import build_inputs
from videothinker.models.loading import enable_activation_checkpointing, load_model, load_processor
from videothinker.models.prompt_attention import NAME, PromptLayout, install, unavailable
from videothinker.models.vision import vlm_body
from videothinker.rl import shared_prompt as sp_module
from videothinker.rl.logprobs import completion_logprobs, naive_completion_logprobs
from videothinker.rl.shared_prompt import (
    packed_positions,
    predicting_positions,
    rollout_logprobs,
    shared_prompt_logprobs,
)
from videothinker.rl.types import Rollout, VideoInputs


# ------------------------------------------------------------------------------------ hand-worked
def test_predicting_positions_by_hand():
    # P = 4, G = 2, T = 3: layout [p0 p1 p2 p3 | a0 a1 | b0 b1]; a0 is predicted by p3, a1 by a0 (4),
    # a2 by a1 (5); b0 by p3, b1 by b0 (6), b2 by b1 (7)
    assert predicting_positions(4, 2, 3).tolist() == [[3, 4, 5], [3, 6, 7]]
    assert predicting_positions(4, 2, 1).tolist() == [[3], [3]]  # one-token completions: the prompt only


def test_packed_positions_by_hand():
    plain = torch.tensor([[0, 1, 2, 3, 4]])  # P = 3, n = 2
    assert packed_positions(plain, 3, 2).tolist() == [[0, 1, 2, 3, 4, 3, 4]]
    mrope = torch.stack([plain, plain + 10, plain + 20])  # [3, 1, 5]
    out = packed_positions(mrope, 3, 2)
    assert out.shape == (3, 1, 7) and out[1].tolist() == [[10, 11, 12, 13, 14, 13, 14]]


def test_dense_mask_by_hand():
    # one prompt [pad, p1, p2] (P = 3), G = 2 completions of n = 2: layout [_ p1 p2 | a0 a1 | b0 b1]
    layout = PromptLayout(torch.tensor([[False, True, True]]), generations=2, completion_length=2)
    expected = torch.tensor(
        [
            [1, 0, 0, 0, 0, 0, 0],  # padding sees itself only
            [0, 1, 0, 0, 0, 0, 0],
            [0, 1, 1, 0, 0, 0, 0],
            [0, 1, 1, 1, 0, 0, 0],  # a0: the prompt's valid tokens and itself
            [0, 1, 1, 1, 1, 0, 0],
            [0, 1, 1, 0, 0, 1, 0],  # b0: the prompt, not a
            [0, 1, 1, 0, 0, 1, 1],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(layout.dense_mask()[0, 0], expected)
    assert layout.length == 7 and layout.padded
    assert layout.completion_mask().shape == (2, 1, 2, 5)


def test_additive_mask_of_the_layout_is_zero_where_allowed():
    layout = PromptLayout(torch.ones(1, 2, dtype=torch.bool), generations=2, completion_length=1)
    additive = layout.cached("dense_mask", torch.float32)
    assert additive.dtype == torch.float32
    assert torch.equal(additive == 0, layout.dense_mask())
    assert layout.cached("dense_mask", torch.float32) is additive  # made once per layout


def test_a_copied_layout_shares_its_call_count_and_masks():
    """FSDP2's forward hooks rebuild a layer's inputs with `_apply_to_tensors`, which copies
    dataclasses: each layer then sees a copy of the layout, whose attention calls must still count
    on the original (the check that the attention read the layout) and whose masks stay made once."""
    from torch.distributed.utils import _apply_to_tensors

    layout = PromptLayout(torch.ones(1, 2, dtype=torch.bool), generations=2, completion_length=1)
    copy = _apply_to_tensors(lambda t: t.clone(), {"shared_prompt": layout})["shared_prompt"]
    assert copy is not layout and copy.prompt_valid is not layout.prompt_valid
    copy.calls += 1
    copy.calls += 1
    assert layout.calls == 2
    assert copy.cached("prompt_mask", None) is layout.cached("prompt_mask", None)


# ------------------------------------------------------------------------------ against the model
def _assert_same(a, b, mask, atol, grad_atol=None):
    """Values equal to ``atol``, gradients (relative to their largest) to ``grad_atol``. In float64
    the values agree bitwise, but the gradients only to float32 rounding: the models' RMSNorm and
    the towers' rotary compute in float32 whatever the weights' dtype, and the gradients of the G
    completions reach the prompt summed in another order."""
    out_a, grads_a = a
    out_b, grads_b = b
    on = mask.bool()
    torch.testing.assert_close(out_a[on], out_b[on], rtol=0, atol=atol)
    assert grads_a.keys() == grads_b.keys()
    for name, grad in grads_b.items():
        scale = grad.abs().max().clamp(min=1e-3)
        tol = atol if grad_atol is None else grad_atol
        torch.testing.assert_close(grads_a[name] / scale, grad / scale, rtol=0, atol=tol, msg=name)


@pytest.mark.parametrize("arch", ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"])
def test_split_equals_dense_and_per_sequence_float64(tiny_model_dir, arch):
    model = load_model(tiny_model_dir(arch), dtype="float32").double().train()
    inputs, completion_ids, completion_mask = completion_batch(tiny_model_dir(arch), G, T)
    inputs = {k: v.double() if v.is_floating_point() else v for k, v in inputs.items()}
    assert not bool(inputs["attention_mask"].all())  # left padding: the prompt masks are exercised
    weights = torch.randn(
        completion_ids.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64
    )
    args = (inputs, completion_ids, completion_mask, weights)
    kw = {"temperature": 0.7, "chunk_size": 4}
    per_sequence = _grads(model, completion_logprobs, *args, **kw)
    split = _grads(model, shared_prompt_logprobs, *args, **kw)
    dense = _grads(model, shared_prompt_logprobs, *args, attention="dense", **kw)
    assert split[0].shape == (2 * G, T)
    assert any(".visual." in name for name in split[1])  # the tower is trained through the features
    _assert_same(split, per_sequence, completion_mask, atol=1e-10, grad_atol=1e-6)
    _assert_same(split, dense, completion_mask, atol=1e-10, grad_atol=1e-6)


@pytest.mark.parametrize("arch", ["qwen2_5_vl", "qwen3_vl"])
def test_one_unpadded_prompt_runs_the_causal_kernel_and_equals_per_sequence(
    tiny_model_dir, arch, monkeypatch
):
    """One prompt (no padding): the completions attend through ``causal_lower_right``, no mask."""
    model = load_model(tiny_model_dir(arch), dtype="float32").double().train()
    _, inputs = prompt_inputs(tiny_model_dir(arch), prompts=["Which object moves first? Think it through."])
    inputs = {k: v.double() if v.is_floating_point() else v for k, v in inputs.items()}
    assert bool(inputs["attention_mask"].all())
    gen = torch.Generator().manual_seed(5)
    completion_ids = torch.randint(0, 300, (G, T), generator=gen)
    completion_mask = torch.ones_like(completion_ids)
    weights = torch.randn(completion_ids.shape, generator=gen, dtype=torch.float64)
    masks = []
    real = prompt_attention.causal_lower_right
    monkeypatch.setattr(prompt_attention, "causal_lower_right", lambda *a: masks.append(a) or real(*a))
    args = (inputs, completion_ids, completion_mask, weights)
    split = _grads(model, shared_prompt_logprobs, *args)
    assert masks and masks[0] == (T - 1, inputs["input_ids"].shape[1] + T - 1)
    _assert_same(
        split, _grads(model, completion_logprobs, *args), completion_mask, atol=1e-10, grad_atol=1e-6
    )
    _assert_same(
        split, _grads(model, shared_prompt_logprobs, *args, attention="dense"), completion_mask, 1e-10, 1e-6
    )


def test_split_equals_naive_with_checkpointing_and_entropy(tiny_qwen2_5_vl_dir):
    """float32, HF gradient checkpointing on (the recompute must see the layout too), entropies."""
    model = load_model(tiny_qwen2_5_vl_dir, dtype="float32").train()
    enable_activation_checkpointing(model)
    inputs, completion_ids, completion_mask = completion_batch(tiny_qwen2_5_vl_dir, G, T)
    weights = torch.randn(completion_ids.shape, generator=torch.Generator().manual_seed(4))
    args = (inputs, completion_ids, completion_mask, weights)
    split = _grads(model, lambda *a, **k: shared_prompt_logprobs(*a, **k)[0], *args, entropy=True)
    naive = _grads(model, lambda *a, **k: naive_completion_logprobs(*a, **k)[0], *args, entropy=True)
    _assert_same(split, naive, completion_mask, atol=1e-5)
    with torch.no_grad():
        call = _call(model, inputs, completion_ids, completion_mask)
        _, split_entropy = shared_prompt_logprobs(*call, entropy=True)
        _, naive_entropy = naive_completion_logprobs(*call, entropy=True)
    on = completion_mask.bool()
    torch.testing.assert_close(split_entropy[on], naive_entropy[on], rtol=0, atol=1e-5)


def test_eager_attention_and_text_only_prompts(tiny_qwen2_5_vl_dir):
    """The eager model against the per-sequence log-probs of the same weights under sdpa (HF's own
    eager masks give NaN on left-padded rows in float64: a fully masked row's scores overflow)."""
    model = load_model(tiny_qwen2_5_vl_dir, dtype="float32", attn_implementation="eager").double()
    reference = load_model(tiny_qwen2_5_vl_dir, dtype="float32").double()
    processor = load_processor(tiny_qwen2_5_vl_dir)
    inputs = build_inputs(
        processor, ["A short prompt.", "A much longer prompt with more words in it."], [None] * 2
    )
    completion_ids = torch.randint(0, 300, (2 * G, T), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(completion_ids)
    args = (inputs["input_ids"], inputs["attention_mask"], completion_ids, mask, None, G)
    with torch.no_grad():
        expected = completion_logprobs(reference, *args)
        torch.testing.assert_close(shared_prompt_logprobs(model, *args), expected, rtol=0, atol=1e-10)
        dense = shared_prompt_logprobs(model, *args, attention="dense")
        torch.testing.assert_close(dense, expected, rtol=0, atol=1e-10)


def test_a_text_only_prompt_beside_a_video_prompt(tiny_qwen2_5_vl_dir):
    model = load_model(tiny_qwen2_5_vl_dir, dtype="float32").double()
    inputs, completion_ids, completion_mask = completion_batch(
        tiny_qwen2_5_vl_dir, G, T, text_only_second=True
    )
    inputs = {k: v.double() if v.is_floating_point() else v for k, v in inputs.items()}
    args = (model, inputs["input_ids"], inputs["attention_mask"], completion_ids, completion_mask)
    video = VideoInputs.from_batch(inputs)
    with torch.no_grad():
        expected = completion_logprobs(*args, video, G)
        shared = shared_prompt_logprobs(*args, video, G)
    on = completion_mask.bool()
    torch.testing.assert_close(shared[on], expected[on], rtol=0, atol=1e-10)


def test_one_token_completions(tiny_qwen2_5_vl_dir):
    model = load_model(tiny_qwen2_5_vl_dir, dtype="float32").double()
    inputs, completion_ids, completion_mask = completion_batch(tiny_qwen2_5_vl_dir, G, T)
    inputs = {k: v.double() if v.is_floating_point() else v for k, v in inputs.items()}
    args = (inputs["input_ids"], inputs["attention_mask"], completion_ids[:, :1], completion_mask[:, :1])
    video = VideoInputs.from_batch(inputs)
    with torch.no_grad():
        expected = completion_logprobs(model, *args, video, G)
        torch.testing.assert_close(
            shared_prompt_logprobs(model, *args, video, G), expected, rtol=0, atol=1e-10
        )


def _model_and_call(model_dir):
    """The tiny float32 model and the positional arguments of a log-prob call on `completion_batch`."""
    model = load_model(model_dir, dtype="float32")
    inputs, completion_ids, completion_mask = completion_batch(model_dir, G, T)
    return model, _call(model, inputs, completion_ids, completion_mask)


def _call(model, inputs, completion_ids, completion_mask) -> tuple:
    """The positional arguments of a log-prob call on these inputs and completions."""
    video = VideoInputs.from_batch(inputs)
    return (model, inputs["input_ids"], inputs["attention_mask"], completion_ids, completion_mask, video, G)


def test_install_leaves_other_calls_as_they_were(tiny_qwen2_5_vl_dir):
    """After `install`, a forward without a layout (generate, the per-sequence path) is unchanged,
    and the model's own config still names its attention."""
    model, call = _model_and_call(tiny_qwen2_5_vl_dir)
    with torch.no_grad():
        before = completion_logprobs(*call)
        install(model)
        install(model)  # idempotent
        after = completion_logprobs(*call)
    lm = vlm_body(model).language_model
    assert lm.config._attn_implementation == "sdpa"
    assert all(layer.self_attn.config._attn_implementation == NAME for layer in lm.layers)
    assert all(layer.self_attn._shared_prompt_config is lm.config for layer in lm.layers)
    assert unavailable(model) is None
    torch.testing.assert_close(after, before, rtol=0, atol=0)
    lm.config._attn_implementation = "flash_attention_2"  # as set_attn_implementation would
    assert "flash_attention_2" in unavailable(model)  # followed: the layout is not given to it


def test_rollout_logprobs_shares_the_prompt_on_request(tiny_qwen2_5_vl_dir, monkeypatch):
    model = load_model(tiny_qwen2_5_vl_dir, dtype="float32")
    inputs, completion_ids, completion_mask = completion_batch(tiny_qwen2_5_vl_dir, G, T)
    rollout = Rollout(
        inputs["input_ids"], inputs["attention_mask"], completion_ids, completion_mask, G,
        video=VideoInputs.from_batch(inputs),
    )  # fmt: skip
    layouts = []
    real = prompt_attention.split_attention
    monkeypatch.setattr(
        prompt_attention, "split_attention", lambda *a, **k: layouts.append(a[6]) or real(*a, **k)
    )
    shared = rollout_logprobs(model, rollout, grad=False, share_prompt=True)
    assert layouts and all(lay.generations == G for lay in layouts)
    count = len(layouts)
    plain = rollout_logprobs(model, rollout, grad=False)
    assert len(layouts) == count  # the default computes each prompt per completion
    on = completion_mask.bool()
    torch.testing.assert_close(shared[on], plain[on], rtol=0, atol=1e-5)


def test_unsupported_attention_falls_back_with_a_warning(tiny_qwen2_5_vl_dir, monkeypatch):
    model, call = _model_and_call(tiny_qwen2_5_vl_dir)
    for layer in vlm_body(model).language_model.layers:
        layer.self_attn.config._attn_implementation = "flash_attention_2"
    assert "flash_attention_2" in unavailable(model)
    messages = []
    monkeypatch.setattr(sp_module, "warn", messages.append)
    monkeypatch.setattr(sp_module, "_warned", set())
    monkeypatch.setattr(sp_module, "completion_logprobs", lambda *a, **k: "per sequence")
    assert shared_prompt_logprobs(*call) == "per sequence"
    assert len(messages) == 1 and "flash_attention_2" in messages[0]


def test_a_layout_the_attention_never_read_is_an_error(tiny_qwen2_5_vl_dir, monkeypatch):
    """If transformers stopped passing the layout through to the attention function, the split
    path would silently attend to everything: it raises instead."""
    model, call = _model_and_call(tiny_qwen2_5_vl_dir)
    install(model)
    monkeypatch.setattr(sp_module, "install", lambda m: None)  # keep the function registered below
    from transformers import AttentionInterface

    real = prompt_attention._base

    def forgetful(module, query, key, value, attention_mask, *, shared_prompt=None, **kwargs):
        base, _ = real(module)
        return base(module, query, key, value, attention_mask, **kwargs)

    AttentionInterface.register(NAME, forgetful)
    try:
        with pytest.raises(RuntimeError, match="did not reach the attention function"), torch.no_grad():
            shared_prompt_logprobs(*call)
    finally:
        AttentionInterface.register(NAME, prompt_attention.shared_prompt_attention)


DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device")])]  # fmt: skip


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("padded", [False, True], ids=["one_prompt", "padded_prompts"])
def test_split_in_float32_and_under_bf16_autocast(tiny_model_dir, padded, device):
    """float32 values and gradients equal the per-sequence path's; under bf16 autocast (the paper
    presets: the Qwen rotary leaves q and k in float32 and v in bf16, which the lower-right causal
    call must cast itself) the shared path's error against float32 is no larger than the
    per-sequence path's. On CUDA: SDPA's own kernels (causal, lower-right causal, masked)."""
    model_dir = tiny_model_dir("qwen2_5_vl")
    model = load_model(model_dir, dtype="float32").to(device).train()
    if padded:
        inputs, completion_ids, completion_mask = completion_batch(model_dir, G, T)
    else:
        _, inputs = prompt_inputs(model_dir, prompts=["Which object moves first? Think it through."])
        completion_ids = torch.randint(0, 300, (G, T), generator=torch.Generator().manual_seed(5))
        completion_mask = torch.ones_like(completion_ids)
    inputs = {k: v.to(device) for k, v in inputs.items()}
    completion_ids, completion_mask = completion_ids.to(device), completion_mask.to(device)
    weights = torch.randn(completion_ids.shape, generator=torch.Generator().manual_seed(6)).to(device)
    args = (inputs, completion_ids, completion_mask, weights)
    per_sequence = _grads(model, completion_logprobs, *args)
    split = _grads(model, shared_prompt_logprobs, *args)
    _assert_same(split, per_sequence, completion_mask, atol=1e-4, grad_atol=1e-4)
    on = completion_mask.bool()
    with torch.autocast(device, dtype=torch.bfloat16):
        per_sequence16 = _grads(model, completion_logprobs, *args)[0]
        split16 = _grads(model, shared_prompt_logprobs, *args)[0]
    truth = per_sequence[0][on]
    split_err = (split16[on] - truth).abs().mean()
    per_sequence_err = (per_sequence16[on] - truth).abs().mean()
    assert split_err <= 1.5 * per_sequence_err + 1e-4, (split_err, per_sequence_err)
