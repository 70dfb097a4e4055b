"""Tiny models of each Qwen VL family: build, reload with the Auto classes, forward and generate on
batched video prompts built by `build_inputs`."""

from __future__ import annotations

import json

import pytest
import torch

from videothinker.data.video import SampledVideo
from videothinker.models.inputs import build_inputs
from videothinker.models.loading import (
    eos_token_ids,
    family_of,
    load_model,
    load_processor,
    processor_size_factor,
    processor_temporal_patch_size,
)

ARCHS = ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"]
PROMPTS = ["Which?", "Which of the following will happen if the cyan cylinder is removed? A. B. C."]


def random_video(side: int, num_frames: int = 4, fps: float = 2.0, seed: int = 0) -> SampledVideo:
    g = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 256, (num_frames, 3, side, side), dtype=torch.uint8, generator=g)
    return SampledVideo(frames=frames, fps=fps, path=f"video-{seed}.mp4")


@pytest.fixture(scope="module", params=ARCHS)
def loaded(request, tiny_model_dir):
    path = tiny_model_dir(request.param)
    return request.param, load_model(path, dtype="float32"), load_processor(path)


def test_reload_keeps_family_and_real_processor(loaded):
    arch, model, processor = loaded
    assert family_of(model) == arch == family_of(model.config)
    expected = {"qwen2_vl": "Qwen2VL", "qwen2_5_vl": "Qwen2_5_VL", "qwen3_vl": "Qwen3VL"}[arch]
    assert type(model).__name__ == f"{expected}ForConditionalGeneration"
    assert processor_size_factor(processor) == (32 if arch == "qwen3_vl" else 28)
    assert processor_temporal_patch_size(processor) == 2
    tokenizer = processor.tokenizer
    eos = eos_token_ids(model, processor)
    assert eos[:2] == tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id
    for token, attr in [("<|video_pad|>", "video_token_id"), ("<|image_pad|>", "image_token_id")]:
        assert getattr(model.config, attr) == tokenizer.convert_tokens_to_ids(token)
    assert model.config.get_text_config().vocab_size >= len(tokenizer)


def test_tokenizer_keeps_reasoning_tags_whole(loaded):
    _, _, processor = loaded
    tokenizer = processor.tokenizer
    text = "<think>x</think><answer>A,C</answer>"
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.decode(ids, skip_special_tokens=True) == text
    tokens = tokenizer.convert_ids_to_tokens(ids)
    assert tokens[0] == "<think>" and tokens[-1] == "</answer>"
    # Prompt words are whole tokens, digits one token each.
    assert len(tokenizer(" cylinder")["input_ids"]) == 1
    assert tokenizer.convert_ids_to_tokens(tokenizer("2025")["input_ids"]) == list("2025")


def test_video_batch_forward_and_generate(loaded):
    arch, model, processor = loaded
    side = processor_size_factor(processor) * 2
    videos = [random_video(side, seed=0), random_video(side, num_frames=2, fps=1.0, seed=1)]
    inputs = build_inputs(processor, PROMPTS, videos)
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    # Left padding: every row ends with the assistant turn's opening; the short prompt is padded.
    assert mask[:, -1].all() and not mask[0, 0] and mask[1].all()
    assert (ids[~mask.bool()] == processor.tokenizer.pad_token_id).all()
    video_pad = processor.tokenizer.convert_tokens_to_ids("<|video_pad|>")
    grid = inputs["video_grid_thw"]
    assert grid.tolist() == [[2, 4, 4], [1, 4, 4]]
    assert (ids == video_pad).sum(1).tolist() == (grid.prod(1) // 4).tolist()
    if arch == "qwen2_5_vl":
        # Temporal patch size / sampled fps: seconds per temporal grid step.
        assert inputs["second_per_grid_ts"].tolist() == [1.0, 2.0]
    if arch == "qwen3_vl":
        assert "<0.2 seconds>" in processor.tokenizer.decode(ids[0])
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape[:2] == ids.shape and torch.isfinite(logits).all()
    out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert out.shape == (2, ids.shape[1] + 3)
    assert torch.equal(out[:, : ids.shape[1]], ids)


def test_batched_generation_matches_single(loaded):
    _, model, processor = loaded
    side = processor_size_factor(processor) * 2
    videos = [random_video(side, seed=0), random_video(side, seed=1)]
    batch = model.generate(**build_inputs(processor, PROMPTS, videos), max_new_tokens=4, do_sample=False)
    single = model.generate(
        **build_inputs(processor, PROMPTS[1:], videos[1:]), max_new_tokens=4, do_sample=False
    )
    assert torch.equal(batch[1, -4:], single[0, -4:])


def test_image_and_text_only_prompts(tiny_qwen2_5_vl_dir):
    model, processor = load_model(tiny_qwen2_5_vl_dir), load_processor(tiny_qwen2_5_vl_dir)
    g = torch.Generator().manual_seed(0)
    image = SampledVideo(
        torch.randint(0, 256, (1, 3, 56, 84), dtype=torch.uint8, generator=g), 1.0, "a.png", True
    )
    inputs = build_inputs(processor, ["Describe the picture.", "No picture here."], [image, None])
    assert inputs["image_grid_thw"].tolist() == [[1, 4, 6]]
    assert "pixel_values_videos" not in inputs
    image_pad = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert (inputs["input_ids"] == image_pad).sum(1).tolist() == [6, 0]
    out = model.generate(**inputs, max_new_tokens=2, do_sample=False)
    assert out.shape[0] == 2


def test_cli_builds_a_loadable_model(tmp_path):
    from videothinker.cli import main

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("zyxwvut zyxwvut zyxwvut\n" * 3)
    out = tmp_path / "tiny"
    args = [
        "tiny-model",
        "--arch",
        "qwen2_vl",
        "--out",
        str(out),
        "--corpus",
        str(corpus),
        "--hidden-size",
        "32",
    ]
    assert main(args) == 0
    assert json.loads((out / "config.json").read_text())["text_config"]["hidden_size"] == 32
    assert len(load_processor(out).tokenizer(" zyxwvut")["input_ids"]) == 1  # learnt from --corpus
    assert main(args) == 1  # refuses to overwrite without --overwrite
    weights = (out / "model.safetensors").read_bytes()
    assert main([*args, "--overwrite"]) == 0
    assert (out / "model.safetensors").read_bytes() == weights  # same seed, same weights
    assert main([*args, "--overwrite", "--seed", "1"]) == 0
    assert (out / "model.safetensors").read_bytes() != weights


@pytest.mark.parametrize(
    ("sizes", "message"),
    [
        ({"hidden_size": 60}, "multiple of 4"),
        ({"num_key_value_heads": 3}, "multiple of num_key_value_heads"),
        ({"vision_depth": 0}, "must be positive"),
        ({"width": 8}, "unknown tiny model size"),
    ],
)
def test_bad_sizes_are_refused(tmp_path, sizes, message):
    from videothinker.models.tiny import build_tiny_model

    with pytest.raises(ValueError, match=message):
        build_tiny_model("qwen2_vl", tmp_path / "m", **sizes)
    assert not (tmp_path / "m").exists()
