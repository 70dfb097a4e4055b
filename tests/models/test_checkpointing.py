"""model.checkpoint_layers (models/loading.py, limit_activation_checkpointing): only the first N
decoder layers recompute their activations in backward; the gradients are the fully checkpointed
model's, which are the plain model's."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from tiny_prompts import prompt_inputs
from videothinker.models.loading import (
    enable_activation_checkpointing,
    limit_activation_checkpointing,
    load_model,
)
from videothinker.models.vision import vlm_body


def _backward(model_dir, checkpointing: bool, layers: int | None):
    """(gradients by name, MLP calls per decoder layer) of one forward and backward."""
    model = load_model(model_dir, dtype="float32").train()
    if checkpointing:
        enable_activation_checkpointing(model)
        if layers is not None:
            limit_activation_checkpointing(model, layers)
    calls: Counter[int] = Counter()
    for i, layer in enumerate(vlm_body(model).language_model.layers):
        # counted in the MLP's forward itself: the recompute in backward runs no module hooks
        def counting(*args, _forward=layer.mlp.forward, _i=i, **kwargs):
            calls.update([_i])
            return _forward(*args, **kwargs)

        layer.mlp.forward = counting
    _, inputs = prompt_inputs(model_dir)
    logits = model(**inputs).logits
    (logits.float().square().mean()).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return grads, calls


def test_only_the_first_layers_recompute_and_the_gradients_do_not_change(tiny_model_dir):
    model_dir = tiny_model_dir("qwen2_5_vl")
    plain, plain_calls = _backward(model_dir, checkpointing=False, layers=None)
    full, full_calls = _backward(model_dir, checkpointing=True, layers=None)
    part, part_calls = _backward(model_dir, checkpointing=True, layers=1)
    L = len(plain_calls)
    assert L >= 2
    assert all(plain_calls[i] == 1 for i in range(L))
    assert all(full_calls[i] == 2 for i in range(L))  # every layer ran again in backward
    assert part_calls[0] == 2 and all(part_calls[i] == 1 for i in range(1, L))
    assert plain.keys() == full.keys() == part.keys()
    for name in plain:
        torch.testing.assert_close(full[name], plain[name], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(part[name], plain[name], rtol=1e-5, atol=1e-7)


def test_limits_are_checked(tiny_model_dir):
    model = load_model(tiny_model_dir("qwen2_5_vl"), dtype="float32")
    enable_activation_checkpointing(model)
    L = len(vlm_body(model).language_model.layers)
    with pytest.raises(ValueError, match="checkpoint_layers must be between 0 and"):
        limit_activation_checkpointing(model, L + 1)
    assert limit_activation_checkpointing(model, L) == 0
    assert limit_activation_checkpointing(model, 0) == L
    assert not any(layer.gradient_checkpointing for layer in vlm_body(model).language_model.layers)


def test_config_refuses_a_negative_count():
    from videothinker.config import ModelConfig

    problems = ModelConfig(path="m", checkpoint_layers=-1).problems()
    assert any("model.checkpoint_layers must be >= 0" in p for p in problems)
