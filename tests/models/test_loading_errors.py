"""Bad checkpoints and bad frames fail with errors that name the problem."""

from __future__ import annotations

import pytest
import torch

from videothinker.data.video import SampledVideo
from videothinker.models.inputs import build_inputs
from videothinker.models.loading import family_of, load_model, load_processor


def test_load_model_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(tmp_path / "nowhere")


def test_load_model_folder_without_config(tmp_path):
    with pytest.raises(ValueError, match="no config.json"):
        load_model(tmp_path)
    with pytest.raises(ValueError, match="no config.json"):
        load_processor(tmp_path)


def test_load_model_refuses_pickled_weights(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "qwen2_vl"}')
    (tmp_path / "pytorch_model.bin").write_bytes(b"not unpickled")
    with pytest.raises(ValueError, match="safetensors"):
        load_model(tmp_path)


def test_load_model_rejects_unknown_dtype(tiny_qwen2_vl_dir):
    with pytest.raises(ValueError, match="dtype"):
        load_model(tiny_qwen2_vl_dir, dtype="float8")


def test_load_model_dtype(tiny_qwen2_vl_dir):
    assert load_model(tiny_qwen2_vl_dir, dtype="bfloat16").dtype == torch.bfloat16


def test_family_of_other_architectures():
    from transformers import LlavaConfig

    assert family_of(LlavaConfig()) == "llava"
    with pytest.raises(ValueError, match="model family"):
        family_of(object())


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        (torch.zeros(3, 3, 56, 56, dtype=torch.uint8), "multiple of the temporal patch size"),
        (torch.zeros(4, 3, 56, 60, dtype=torch.uint8), "not a multiple of the processor's 28-pixel grid"),
        (torch.zeros(4, 3, 56, 56, dtype=torch.float32), "uint8 tensor"),
        (torch.zeros(4, 56, 56, 3, dtype=torch.uint8), "uint8 tensor"),
    ],
)
def test_build_inputs_rejects_bad_frames(tiny_qwen2_vl_dir, frames, message):
    processor = load_processor(tiny_qwen2_vl_dir)
    with pytest.raises(ValueError, match=message) as info:
        build_inputs(processor, ["q"], [SampledVideo(frames, 2.0, "clip.mp4")])
    assert "clip.mp4" in str(info.value)


def test_build_inputs_rejects_mismatched_batch(tiny_qwen2_vl_dir):
    processor = load_processor(tiny_qwen2_vl_dir)
    with pytest.raises(ValueError, match="2 prompts but 1 visuals"):
        build_inputs(processor, ["a", "b"], [None])
