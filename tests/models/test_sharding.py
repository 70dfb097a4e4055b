"""FSDP2 sharding (models/sharding.py) in one process on CPU (gloo, world size 1): a sharded model
gives the unsharded one's lean log-probs and gradients, the decode engine's weights gathered from its
shards, and full HF weights. (Two processes: tests/rl/test_fsdp.py.)"""

from __future__ import annotations

import pytest
import torch

from tiny_prompts import completion_batch, prompt_inputs, sharp_model
from videothinker.models.decode import weights_from_model
from videothinker.models.engine import DecodeEngine
from videothinker.models.loading import enable_activation_checkpointing, load_model
from videothinker.models.sharding import (
    device_mesh,
    full_state_dict,
    is_dtensor,
    root_forward,
    shard_model,
    shard_units,
)
from videothinker.rl.logprobs import completion_logprobs
from videothinker.rl.types import VideoInputs

G = 3


@pytest.fixture(scope="module")
def mesh():
    """A one-process gloo group for this module's tests, destroyed after them."""
    import torch.distributed as dist

    assert not dist.is_initialized()
    mesh = device_mesh(torch.device("cpu"))
    yield mesh
    dist.destroy_process_group()


def _sharded(model_dir, mesh, *, tie: bool = False, checkpointing: bool = False):
    models = []
    for shard in (False, True):
        model = load_model(model_dir, dtype="float32").train()
        if tie:
            model.lm_head.weight = model.model.language_model.embed_tokens.weight
        if checkpointing:
            enable_activation_checkpointing(model)
        models.append(shard_model(model, mesh) if shard else model)
    return models


def _logprobs_and_grads(model, batch):
    inputs, completion_ids, completion_mask, weights = batch
    model.zero_grad(set_to_none=True)
    args = (
        model,
        inputs["input_ids"],
        inputs["attention_mask"],
        completion_ids,
        completion_mask,
        VideoInputs.from_batch(inputs),
        G,
    )
    out = root_forward(model, lambda: completion_logprobs(*args, temperature=0.7, chunk_size=4))
    (out * weights * completion_mask).sum().backward()
    grads = {}
    for name, p in model.named_parameters():
        if p.grad is not None:
            grads[name] = p.grad.full_tensor() if is_dtensor(p.grad) else p.grad
    return out.detach(), grads


@pytest.mark.parametrize(
    ("arch", "tie", "checkpointing"),
    [("qwen2_5_vl", False, False), ("qwen2_5_vl", True, True), ("qwen3_vl", False, False)],
    ids=["qwen2_5_vl", "tied-embeddings-checkpointing", "qwen3_vl"],
)
def test_lean_logprobs_and_gradients_equal_the_unsharded_model(
    tiny_model_dir, mesh, arch, tie, checkpointing
):
    plain, sharded = _sharded(tiny_model_dir(arch), mesh, tie=tie, checkpointing=checkpointing)
    assert len(shard_units(plain)) == 4  # 2 decoder layers + 2 vision blocks
    batch = (*completion_batch(tiny_model_dir(arch), G, 6), None)
    batch = (*batch[:3], torch.randn(batch[1].shape, generator=torch.Generator().manual_seed(2)))
    expected, expected_grads = _logprobs_and_grads(plain, batch)
    out, grads = _logprobs_and_grads(sharded, batch)
    on = batch[2].bool()
    torch.testing.assert_close(out[on], expected[on], rtol=0, atol=1e-6)
    assert grads.keys() == expected_grads.keys()
    assert any(".visual." in n for n in grads) and any("embed_tokens" in n for n in grads)
    for name, grad in expected_grads.items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-5, atol=1e-7, msg=name)
    assert all(is_dtensor(p) for p in sharded.parameters())  # resharded after backward


def test_engine_decodes_from_weights_gathered_from_shards(tiny_qwen2_5_vl_dir, mesh):
    plain = sharp_model(tiny_qwen2_5_vl_dir)
    sharded = shard_model(sharp_model(tiny_qwen2_5_vl_dir), mesh)
    weights = weights_from_model(sharded, torch.bfloat16)
    expected = weights_from_model(plain, torch.bfloat16)
    assert weights.gathered and not expected.gathered
    assert weights.copy_bytes == expected.copy_bytes
    assert all(torch.equal(a, b) for a, b in zip(weights.copies, expected.copies))

    # an update of the shards reaches the copy only through refresh, in the same buffer
    embed = weights.embed
    with torch.no_grad():
        sharded.model.language_model.embed_tokens.weight.to_local().add_(1.0)
    before = embed.clone()
    weights.refresh()
    assert weights.embed is embed and not torch.equal(embed, before)

    # greedy tokens from the sharded model (prefill through FSDP, decode from the gathered copy)
    _, inputs = prompt_inputs(tiny_qwen2_5_vl_dir)
    plain2 = sharp_model(tiny_qwen2_5_vl_dir)
    sharded2 = shard_model(sharp_model(tiny_qwen2_5_vl_dir), mesh)
    kwargs = dict(max_new_tokens=6, eos_token_ids=[0], pad_token_id=0, do_sample=False)
    with torch.no_grad():
        a = DecodeEngine(plain2, cuda_graphs=False).generate(inputs, 2, **kwargs)
        engine = DecodeEngine(sharded2, cuda_graphs=False)
        b = engine.generate(inputs, 2, **kwargs)
    assert torch.equal(a, b)
    assert "gathered from its shards" in engine.memory_report()


def test_full_state_dict_saves_a_loadable_hf_checkpoint(tiny_qwen2_5_vl_dir, mesh, tmp_path):
    plain, sharded = _sharded(tiny_qwen2_5_vl_dir, mesh)
    state = full_state_dict(sharded)
    assert not any(is_dtensor(v) for v in state.values())
    sharded.save_pretrained(tmp_path / "out", state_dict=state, safe_serialization=True)
    loaded = load_model(tmp_path / "out", dtype="float32")
    expected = plain.state_dict()
    assert loaded.state_dict().keys() == expected.keys()
    assert all(torch.equal(v, expected[k]) for k, v in loaded.state_dict().items())


def test_generate_rollout_of_a_sharded_model(tiny_qwen2_5_vl_dir, mesh):
    """``rollout.engine=generate`` on a sharded policy: generate() with synced_gpus (every process runs
    forwards until all are done, since each forward gathers from all of them), the same tokens."""
    from videothinker.rl.rollout import generate_rollout

    _, inputs = prompt_inputs(tiny_qwen2_5_vl_dir)
    plain = sharp_model(tiny_qwen2_5_vl_dir)
    sharded = shard_model(sharp_model(tiny_qwen2_5_vl_dir), mesh)
    kwargs = dict(max_completion_length=6, eos_token_ids=[0], pad_token_id=0, do_sample=False)
    with torch.no_grad():
        a = generate_rollout(plain, inputs, 2, **kwargs)
        b = generate_rollout(sharded, inputs, 2, **kwargs)
    assert torch.equal(a.completion_ids, b.completion_ids)
