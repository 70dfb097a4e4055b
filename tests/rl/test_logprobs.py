"""Log-probs: the chunked helpers against float64 / unchunked references, and the lean path (video
encoded once, completion-only logits) against the naive path, values and gradients, on tiny real
Qwen2-VL, Qwen2.5-VL and Qwen3-VL models."""

from __future__ import annotations

import math

import pytest
import torch

from tiny_prompts import completion_batch
from videothinker.models.inputs import build_inputs
from videothinker.models.loading import load_model, load_processor
from videothinker.models.vision import repeat_visual_rows, visuals_per_prompt, vlm_body
from videothinker.rl import logprobs as lp_module
from videothinker.rl.logprobs import (
    completion_logprobs,
    head_logprobs,
    naive_completion_logprobs,
    selective_log_softmax,
)
from videothinker.rl.shared_prompt import rollout_logprobs
from videothinker.rl.types import Rollout, VideoInputs

G, T = 3, 6


# ----------------------------------------------------------------------------------- chunked helpers
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("chunk_size", [1, 4, 1000])
def test_selective_log_softmax_matches_float64_reference(dtype, chunk_size):
    gen = torch.Generator().manual_seed(0)
    logits = (torch.randn(3, 5, 37, generator=gen, dtype=torch.float64) * 8).to(dtype)  # [3, 5, V]
    index = torch.randint(0, 37, (3, 5), generator=gen)
    out = selective_log_softmax(logits, index, chunk_size=chunk_size)
    # The reference sees the same (rounded) logits, in float64: only the fp32 arithmetic differs.
    expected = torch.log_softmax(logits.double(), dim=-1).gather(-1, index.unsqueeze(-1)).squeeze(-1)
    assert out.dtype == torch.promote_types(dtype, torch.float32)
    assert out.shape == index.shape
    tol = 1e-12 if dtype == torch.float64 else 2e-5
    torch.testing.assert_close(out.double(), expected, rtol=0, atol=tol)


@pytest.mark.parametrize("chunk_size", [1, 5, 1000])
def test_head_logprobs_equals_unchunked_values_and_gradients(chunk_size):
    gen = torch.Generator().manual_seed(1)
    head = torch.nn.Linear(16, 53, bias=True)
    hidden = torch.randn(4, 7, 16, generator=gen, requires_grad=True)  # [N, T, D]
    index = torch.randint(0, 53, (4, 7), generator=gen)
    weights = torch.randn(4, 7, generator=gen)

    def run(fn):
        head.zero_grad()
        hidden.grad = None
        out = fn()
        (out * weights).sum().backward()
        return out.detach(), hidden.grad.clone(), head.weight.grad.clone(), head.bias.grad.clone()

    fast = run(lambda: head_logprobs(hidden, index, head, temperature=0.7, chunk_size=chunk_size))
    naive = run(lambda: selective_log_softmax(head(hidden).float() / 0.7, index))
    for a, b in zip(fast, naive):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("chunk_size", [1, 5, 1000])
def test_head_entropy_matches_float64_reference(chunk_size):
    gen = torch.Generator().manual_seed(3)
    head = torch.nn.Linear(16, 53, bias=True)
    hidden = torch.randn(4, 7, 16, generator=gen) * 3  # [N, T, D]
    index = torch.randint(0, 53, (4, 7), generator=gen)
    with torch.no_grad():
        logp, entropy = head_logprobs(
            hidden, index, head, temperature=0.7, chunk_size=chunk_size, entropy=True
        )
        plain = head_logprobs(hidden, index, head, temperature=0.7, chunk_size=chunk_size)
        z = torch.log_softmax(head.double()(hidden.double()) / 0.7, dim=-1)  # [N, T, V]
    expected = -(z.exp() * z).sum(-1)
    assert torch.equal(logp, plain)  # asking for the entropy changes no log-prob
    torch.testing.assert_close(entropy.double(), expected, rtol=0, atol=2e-5)
    # hand-worked: uniform logits over V tokens have entropy log V
    flat = torch.nn.Linear(16, 53, bias=False)
    torch.nn.init.zeros_(flat.weight)
    _, uniform = head_logprobs(hidden, index, flat, entropy=True)
    torch.testing.assert_close(uniform, torch.full_like(uniform, math.log(53)))


def test_repeat_visual_rows_equals_its_naive_form():
    rows = torch.arange(14.0).view(7, 2)  # prompt 0: 2 rows, prompt 1: 0 rows, prompt 2: 5 rows
    counts = torch.tensor([2, 0, 5])
    expected = torch.cat([chunk.repeat(3, 1) for chunk in rows.split(counts.tolist())])
    assert torch.equal(repeat_visual_rows(rows, counts, 3), expected)


def test_video_inputs_repeat_per_prompt_keeps_each_prompts_videos_together():
    grid = torch.tensor([[1, 1, 1], [1, 2, 1], [1, 1, 3]])  # videos of 1, 2, 3 patches
    pixels = torch.arange(6.0).view(6, 1)  # video 0: [0], video 1: [1, 2], video 2: [3, 4, 5]
    video = VideoInputs(pixels, grid, second_per_grid_ts=torch.tensor([0.5, 1.0, 2.0]))
    out = video.repeat_per_prompt([1, 2], [0, 0], repeats=2)  # prompt a: video 0; prompt b: videos 1, 2
    assert out.pixel_values_videos.flatten().tolist() == [0, 0, 1, 2, 3, 4, 5, 1, 2, 3, 4, 5]
    assert out.video_grid_thw[:, 1:].prod(-1).tolist() == [1, 1, 2, 3, 2, 3]
    assert out.second_per_grid_ts.tolist() == [0.5, 0.5, 1.0, 2.0, 1.0, 2.0]


def test_video_inputs_rejects_a_grid_that_does_not_match_its_pixels():
    with pytest.raises(ValueError, match="patches"):
        VideoInputs(torch.zeros(5, 3), torch.tensor([[1, 2, 2]]))


# ------------------------------------------------------------------------------ lean == naive
def _grads(model, fn, inputs, completion_ids, completion_mask, weights, **kwargs):
    model.zero_grad()
    out = fn(
        model,
        inputs["input_ids"],
        inputs["attention_mask"],
        completion_ids,
        completion_mask,
        VideoInputs.from_batch(inputs),
        G,
        **kwargs,
    )
    (out * weights * completion_mask).sum().backward()
    return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("arch", ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"])
def test_lean_logprobs_equal_naive_values_and_gradients(tiny_model_dir, arch):
    model = load_model(tiny_model_dir(arch), dtype="float32").train()
    inputs, completion_ids, completion_mask = completion_batch(tiny_model_dir(arch), G, T)
    weights = torch.randn(completion_ids.shape, generator=torch.Generator().manual_seed(2))
    kw = {"temperature": 0.7, "chunk_size": 4}
    lean, lean_grads = _grads(
        model, completion_logprobs, inputs, completion_ids, completion_mask, weights, **kw
    )
    naive, naive_grads = _grads(
        model, naive_completion_logprobs, inputs, completion_ids, completion_mask, weights, **kw
    )

    assert lean.shape == (2 * G, T) and lean.dtype == torch.float32
    on = completion_mask.bool()
    torch.testing.assert_close(lean[on], naive[on], rtol=0, atol=1e-5)
    assert lean_grads.keys() == naive_grads.keys()
    assert any(".visual." in name for name in naive_grads)  # the tower is trained through the features
    for name, grad in naive_grads.items():
        scale = grad.abs().max().clamp(min=1e-3)
        torch.testing.assert_close(lean_grads[name] / scale, grad / scale, rtol=0, atol=1e-5, msg=name)


def test_lean_entropy_equals_naive(tiny_qwen2_5_vl_dir):
    model = load_model(tiny_qwen2_5_vl_dir, dtype="float32")
    inputs, completion_ids, completion_mask = completion_batch(tiny_qwen2_5_vl_dir, G, T)
    args = (
        model, inputs["input_ids"], inputs["attention_mask"], completion_ids, completion_mask,
        VideoInputs.from_batch(inputs), G,
    )  # fmt: skip
    with torch.no_grad():
        lean, lean_entropy = completion_logprobs(*args, temperature=0.7, chunk_size=4, entropy=True)
        naive, naive_entropy = naive_completion_logprobs(*args, temperature=0.7, entropy=True)
    on = completion_mask.bool()
    torch.testing.assert_close(lean[on], naive[on], rtol=0, atol=1e-5)
    torch.testing.assert_close(lean_entropy[on], naive_entropy[on], rtol=0, atol=1e-5)
    assert bool((lean_entropy[on] > 0).all())


def test_lean_logprobs_with_a_text_only_prompt_in_the_batch(tiny_qwen2_5_vl_dir):
    model = load_model(tiny_qwen2_5_vl_dir, dtype="float32")
    inputs, completion_ids, completion_mask = completion_batch(
        tiny_qwen2_5_vl_dir, G, T, text_only_second=True
    )
    video = VideoInputs.from_batch(inputs)
    assert visuals_per_prompt(vlm_body(model), inputs["input_ids"], video) == ([1, 0], [0, 0])
    args = (model, inputs["input_ids"], inputs["attention_mask"], completion_ids, completion_mask, video, G)
    with torch.no_grad():
        lean, naive = completion_logprobs(*args), naive_completion_logprobs(*args)
    on = completion_mask.bool()
    torch.testing.assert_close(lean[on], naive[on], rtol=0, atol=1e-5)


def test_lean_logprobs_of_text_only_prompts(tiny_qwen2_5_vl_dir):
    model = load_model(tiny_qwen2_5_vl_dir, dtype="float32")
    processor = load_processor(tiny_qwen2_5_vl_dir)
    inputs = build_inputs(
        processor, ["A short prompt.", "A much longer prompt with many more words in it."], [None, None]
    )
    completion_ids = torch.randint(0, 300, (2 * G, T), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(completion_ids)
    args = (model, inputs["input_ids"], inputs["attention_mask"], completion_ids, mask, None, G)
    with torch.no_grad():
        torch.testing.assert_close(
            completion_logprobs(*args), naive_completion_logprobs(*args), rtol=0, atol=1e-5
        )


def test_lean_path_encodes_each_video_once(tiny_qwen2_5_vl_dir):
    model = load_model(tiny_qwen2_5_vl_dir, dtype="float32")
    inputs, completion_ids, completion_mask = completion_batch(tiny_qwen2_5_vl_dir, G, T)
    patches = inputs["pixel_values_videos"].shape[0]
    rows_seen: list[int] = []
    hook = vlm_body(model).visual.register_forward_hook(
        lambda module, args, out: rows_seen.append(args[0].shape[0])
    )
    args = (
        model,
        inputs["input_ids"],
        inputs["attention_mask"],
        completion_ids,
        completion_mask,
        VideoInputs.from_batch(inputs),
        G,
    )
    try:
        with torch.no_grad():
            completion_logprobs(*args)
            lean_rows = list(rows_seen)
            rows_seen.clear()
            naive_completion_logprobs(*args)
    finally:
        hook.remove()
    assert lean_rows == [patches]  # one call of the tower, each video once
    assert sum(rows_seen) == G * patches  # the naive path encodes each video G times


def test_rollout_logprobs_without_grad_equal_with_grad(tiny_qwen2_5_vl_dir):
    model = load_model(tiny_qwen2_5_vl_dir, dtype="float32")
    inputs, completion_ids, completion_mask = completion_batch(tiny_qwen2_5_vl_dir, G, T)
    rollout = Rollout(
        inputs["input_ids"],
        inputs["attention_mask"],
        completion_ids,
        completion_mask,
        G,
        video=VideoInputs.from_batch(inputs),
    )
    with_grad = rollout_logprobs(model, rollout, temperature=0.9)
    without = rollout_logprobs(model, rollout, temperature=0.9, grad=False)
    assert with_grad.requires_grad and not without.requires_grad
    torch.testing.assert_close(without, with_grad.detach(), rtol=0, atol=1e-6)


def test_unsupported_model_falls_back_to_the_naive_path(tiny_qwen2_5_vl_dir, monkeypatch):
    model = load_model(tiny_qwen2_5_vl_dir, dtype="float32")
    inputs, completion_ids, completion_mask = completion_batch(tiny_qwen2_5_vl_dir, G, T)
    args = (
        model,
        inputs["input_ids"],
        inputs["attention_mask"],
        completion_ids,
        completion_mask,
        VideoInputs.from_batch(inputs),
        G,
    )
    calls = []
    monkeypatch.setattr(lp_module, "shares_features", lambda m: "a family the test made up")
    monkeypatch.setattr(lp_module, "naive_completion_logprobs", lambda *a, **k: calls.append(1) or "naive")
    monkeypatch.setattr(lp_module, "warn", lambda message: calls.append(message))
    assert completion_logprobs(*args) == "naive"
    assert any("a family the test made up" in str(c) for c in calls)


def test_mismatched_shapes_are_rejected(tiny_qwen2_5_vl_dir):
    model = load_model(tiny_qwen2_5_vl_dir, dtype="float32")
    inputs, completion_ids, completion_mask = completion_batch(tiny_qwen2_5_vl_dir, G, T)
    with pytest.raises(ValueError, match="num_generations"):
        completion_logprobs(
            model,
            inputs["input_ids"],
            inputs["attention_mask"],
            completion_ids,
            completion_mask,
            VideoInputs.from_batch(inputs),
            G + 1,
        )
