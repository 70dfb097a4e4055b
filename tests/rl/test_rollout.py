"""Rollout: one prefill fanned out to G samples gives, greedily, exactly the tokens of plain
``generate(num_return_sequences=G)``, with the vision tower run once per video; on tiny real
Qwen2-VL, Qwen2.5-VL and Qwen3-VL models, B = 2 left-padded prompts."""

from __future__ import annotations

import pytest
import torch

from tiny_prompts import prompt_inputs, sharp_model
from videothinker.models.inputs import build_inputs
from videothinker.models.loading import eos_token_ids, load_model, load_processor
from videothinker.models.vision import vlm_body
from videothinker.rl import rollout as rollout_module
from videothinker.rl.losses import completion_mask_after_eos
from videothinker.rl.rollout import generate_rollout, simple_generate_rollout

G = 3


def _inputs(model_dir, *, videos: bool = True):
    processor, inputs = prompt_inputs(model_dir, videos=videos)
    assert inputs["attention_mask"][0].sum() != inputs["attention_mask"][1].sum()  # left padding is exercised
    return processor, inputs


@pytest.mark.parametrize("arch", ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"])
def test_one_prefill_greedy_equals_plain_generate(tiny_model_dir, arch):
    model = sharp_model(tiny_model_dir(arch))
    processor, inputs = _inputs(tiny_model_dir(arch))
    eos = eos_token_ids(model, processor)
    kwargs = {
        "max_completion_length": 10,
        "eos_token_ids": eos,
        "pad_token_id": processor.tokenizer.pad_token_id,
        "do_sample": False,
    }
    patches = inputs["pixel_values_videos"].shape[0]
    rows_seen: list[int] = []
    hook = vlm_body(model).visual.register_forward_hook(
        lambda module, args, out: rows_seen.append(args[0].shape[0])
    )
    try:
        fast = generate_rollout(model, inputs, G, **kwargs)
        fast_rows = list(rows_seen)
        simple = simple_generate_rollout(model, inputs, G, **kwargs)
    finally:
        hook.remove()

    assert fast_rows == [patches]  # the tower ran once, on each video once
    assert fast.completion_ids.shape[0] == 2 * G
    assert torch.equal(fast.completion_ids, simple.completion_ids)
    assert torch.equal(fast.completion_mask, simple.completion_mask)
    assert fast.completion_mask.sum(dim=1).max() >= 5  # several decode steps, not an immediate EOS
    assert torch.equal(fast.completion_mask, completion_mask_after_eos(fast.completion_ids, eos))
    assert torch.equal(fast.prompt_ids, inputs["input_ids"]) and fast.num_generations == G
    assert torch.equal(
        fast.video.pixel_values_videos, inputs["pixel_values_videos"]
    )  # prompt-level, not G copies


def test_one_prefill_greedy_equals_plain_generate_for_text_only_prompts(tiny_qwen2_5_vl_dir):
    model = sharp_model(tiny_qwen2_5_vl_dir)
    processor, inputs = _inputs(tiny_qwen2_5_vl_dir, videos=False)
    kwargs = {
        "max_completion_length": 8,
        "eos_token_ids": eos_token_ids(model, processor),
        "pad_token_id": processor.tokenizer.pad_token_id,
        "do_sample": False,
    }
    fast = generate_rollout(model, inputs, G, **kwargs)
    assert fast.video is None
    assert torch.equal(
        fast.completion_ids, simple_generate_rollout(model, inputs, G, **kwargs).completion_ids
    )


def test_sampling_gives_g_different_completions_per_prompt(tiny_qwen2_5_vl_dir):
    model = load_model(tiny_qwen2_5_vl_dir, dtype="float32")
    processor, inputs = _inputs(tiny_qwen2_5_vl_dir)
    eos = eos_token_ids(model, processor)
    torch.manual_seed(0)
    rollout = generate_rollout(
        model,
        inputs,
        G,
        max_completion_length=6,
        temperature=1.0,
        eos_token_ids=eos,
        pad_token_id=processor.tokenizer.pad_token_id,
    )
    assert rollout.completion_ids.shape[0] == 2 * G and rollout.completion_ids.shape[1] <= 6
    assert torch.equal(rollout.completion_mask, completion_mask_after_eos(rollout.completion_ids, eos))
    for group in rollout.completion_ids.view(2, G, -1):  # near-uniform random model: samples differ
        assert len({tuple(row.tolist()) for row in group}) > 1


def test_right_padded_prompts_are_rejected(tiny_qwen2_5_vl_dir):
    model = load_model(tiny_qwen2_5_vl_dir, dtype="float32")
    processor = load_processor(tiny_qwen2_5_vl_dir)
    inputs = build_inputs(
        processor, ["Short.", "A longer prompt than that."], [None, None], padding_side="right"
    )
    with pytest.raises(ValueError, match="left padded"):
        generate_rollout(model, inputs, G, max_completion_length=4, eos_token_ids=[0], pad_token_id=0)


def test_missing_kv_cache_falls_back_to_plain_generate(tiny_qwen2_5_vl_dir, monkeypatch):
    model = load_model(tiny_qwen2_5_vl_dir, dtype="float32")
    processor, inputs = _inputs(tiny_qwen2_5_vl_dir)
    real_forward = model.forward

    def forward_without_cache(*args, **kwargs):  # as under gradient checkpointing in training mode
        out = real_forward(*args, **kwargs)
        for name in ("cache", "past_key_values"):  # the field's name in transformers >= 5.24 and before
            if name in getattr(out, "__dataclass_fields__", {}):
                setattr(out, name, None)
        return out

    messages = []
    monkeypatch.setattr(model, "forward", forward_without_cache)
    monkeypatch.setattr(rollout_module, "warn", messages.append)
    monkeypatch.setattr(rollout_module, "simple_generate_rollout", lambda *a, **k: "simple")
    out = generate_rollout(model, inputs, G, max_completion_length=4, eos_token_ids=[0], pad_token_id=0)
    assert out == "simple" and "no KV cache" in messages[0]
