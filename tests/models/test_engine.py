"""The decode engine: greedy tokens equal ``generate``'s token for token on tiny Qwen2-VL, Qwen2.5-VL
and Qwen3-VL models (B = 2 left-padded prompts of different lengths, video and text only); the decode
step equals the model's forward with a KV cache; a bf16 copy of fp32 weights refreshes in place; models
the engine cannot serve are named; on a GPU, graph replay equals the eager loop."""

from __future__ import annotations

import pytest
import torch

from tiny_prompts import prompt_inputs, sharp_model
from videothinker.models.decode import decode_unavailable, weights_from_model
from videothinker.models.engine import DecodeEngine
from videothinker.models.loading import eos_token_ids, load_model
from videothinker.models.vision import vlm_body

ARCHS = ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"]


def reference_greedy(model, inputs, processor, max_new_tokens):
    """Plain ``generate``: the completion tokens, the reference the engine must equal."""
    from videothinker.models.engine import prompt_model_inputs

    eos = eos_token_ids(model, processor)
    sequences = model.generate(
        **prompt_model_inputs(model, inputs),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        eos_token_id=eos,
        pad_token_id=processor.tokenizer.pad_token_id,
        repetition_penalty=1.0,
    )
    return sequences[:, inputs["input_ids"].shape[1] :]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("videos", [True, False], ids=["video", "text"])
def test_engine_greedy_equals_generate(tiny_model_dir, arch, videos):
    model = sharp_model(tiny_model_dir(arch))
    processor, inputs = prompt_inputs(tiny_model_dir(arch), videos=videos)
    assert inputs["attention_mask"][0].sum() != inputs["attention_mask"][1].sum()  # left padding exercised
    eos = eos_token_ids(model, processor)
    pad = processor.tokenizer.pad_token_id
    expected = reference_greedy(model, inputs, processor, 12)
    engine = DecodeEngine(model, prompt_bucket=64, check_every=4)
    got = engine.generate(inputs, 3, max_new_tokens=12, eos_token_ids=eos, pad_token_id=pad, do_sample=False)
    assert got.shape[0] == 6
    assert torch.equal(got, expected.repeat_interleave(3, dim=0))
    # The same engine again (its buffers reused, refilled) gives the same tokens.
    again = engine.generate(
        inputs, 3, max_new_tokens=12, eos_token_ids=eos, pad_token_id=pad, do_sample=False
    )
    assert torch.equal(again, got)


def test_engine_stops_at_eos_like_generate(tiny_model_dir):
    """A completion that ends early: EOS kept, pad after it, output cut after the longest one, as
    generate does. The EOS set is widened to tokens the model emits, so rows end at different steps."""
    model = sharp_model(tiny_model_dir("qwen2_5_vl"))
    processor, inputs = prompt_inputs(tiny_model_dir("qwen2_5_vl"))
    pad = processor.tokenizer.pad_token_id
    free = reference_greedy(model, inputs, processor, 10)
    eos = [int(free[0, 3]), int(free[1, 6])]  # row 0 ends by step 4, row 1 by step 7 (or earlier)
    expected = model.generate(
        **__import__("videothinker.models.engine", fromlist=["x"]).prompt_model_inputs(model, inputs),
        max_new_tokens=10,
        do_sample=False,
        eos_token_id=eos,
        pad_token_id=pad,
    )[:, inputs["input_ids"].shape[1] :]
    engine = DecodeEngine(model, prompt_bucket=32, check_every=2)
    got = engine.generate(inputs, 1, max_new_tokens=10, eos_token_ids=eos, pad_token_id=pad, do_sample=False)
    assert expected.shape[1] < 10  # generate stopped early: the case is exercised
    assert torch.equal(got, expected)


def test_eval_batch_of_odd_size_uses_padding_rows(tiny_model_dir):
    """Three rows are served by a bucket of four; the padding row changes nothing."""
    model = sharp_model(tiny_model_dir("qwen2_vl"))
    processor, inputs = prompt_inputs(
        tiny_model_dir("qwen2_vl"), videos=False, prompts=["a b c", "d", "e f g h"]
    )
    eos, pad = eos_token_ids(model, processor), processor.tokenizer.pad_token_id
    expected = reference_greedy(model, inputs, processor, 8)
    got = DecodeEngine(model).generate(
        inputs, 1, max_new_tokens=8, eos_token_ids=eos, pad_token_id=pad, do_sample=False
    )
    assert torch.equal(got, expected)


def test_bf16_copy_of_fp32_weights_refreshes_in_place(tiny_model_dir):
    model = load_model(tiny_model_dir("qwen2_5_vl"), dtype="float32")
    weights = weights_from_model(model, torch.bfloat16)
    assert weights.dtype == torch.bfloat16 and weights.copy_bytes > 0
    q = weights.layers[0].q
    pointer = q.data_ptr()
    source = vlm_body(model).language_model.layers[0].self_attn.q_proj.weight
    with torch.no_grad():
        source.add_(1.0)
    assert not torch.equal(q, source.to(torch.bfloat16))
    weights.refresh()
    assert q.data_ptr() == pointer  # the same buffer (captured graphs stay valid)
    assert torch.equal(q, source.detach().to(torch.bfloat16))
    # The same dtype: the weights are the parameters themselves, no copy.
    own = weights_from_model(model, None)
    assert own.copy_bytes == 0 and own.layers[0].q.data_ptr() == source.data_ptr()


def test_bf16_engine_matches_bf16_generate(tiny_model_dir):
    """Greedy tokens of the engine over a bf16 copy of fp32 weights equal generate's on the bf16 model."""
    model32 = sharp_model(tiny_model_dir("qwen2_5_vl"))
    model16 = sharp_model(tiny_model_dir("qwen2_5_vl"), dtype="bfloat16")
    processor, inputs = prompt_inputs(tiny_model_dir("qwen2_5_vl"), videos=False)
    eos, pad = eos_token_ids(model16, processor), processor.tokenizer.pad_token_id
    expected = reference_greedy(model16, inputs, processor, 6)
    engine = DecodeEngine(model16, dtype=torch.bfloat16)
    assert engine.weights.copy_bytes == 0
    got16 = engine.generate(inputs, 1, max_new_tokens=6, eos_token_ids=eos, pad_token_id=pad, do_sample=False)
    assert torch.equal(got16, expected)
    assert DecodeEngine(model32, dtype=torch.bfloat16).weights.copy_bytes > 0


def test_unservable_models_are_named(tiny_model_dir):
    model = load_model(tiny_model_dir("qwen2_5_vl"), dtype="float32")
    assert decode_unavailable(model) is None
    layer = vlm_body(model).language_model.layers[1]
    layer.mlp.up_proj = torch.nn.Sequential(layer.mlp.up_proj)
    assert "layer 1's up_proj is a Sequential" in decode_unavailable(model)
    with pytest.raises(ValueError, match="cannot serve"):
        DecodeEngine(model)
    assert DecodeEngine.for_model(model) is None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize(
    "step",
    [
        {},
        {"fuse": True, "decode_attention": "sdpa"},
        {"fuse": True, "decode_attention": "matmul"},
        {"fuse": True, "compile": True},
        {"fuse": True, "decode_attention": "flex"},
        {"fuse": True, "compile": True, "decode_attention": "flex"},
    ],
    ids=["unfused", "fused_sdpa", "fused_matmul", "fused_compiled", "fused_flex", "fused_compiled_flex"],
)
def test_graph_replay_equals_eager_loop_on_gpu(tiny_model_dir, arch, step):
    model = sharp_model(tiny_model_dir(arch)).to("cuda", torch.bfloat16)
    processor, inputs = prompt_inputs(tiny_model_dir(arch))
    inputs = inputs.to("cuda")
    eos, pad = eos_token_ids(model, processor), processor.tokenizer.pad_token_id
    kwargs = {"max_new_tokens": 16, "eos_token_ids": eos, "pad_token_id": pad, "do_sample": False}
    graph = DecodeEngine(model, cuda_graphs=True, **step)
    eager = DecodeEngine(model, cuda_graphs=False, **step)  # the same step, eagerly
    assert torch.equal(graph.generate(inputs, 4, **kwargs), eager.generate(inputs, 4, **kwargs))
    assert graph.graph_captures == 1
    # Sampling: the same seed gives the same draws, whether the call captures a graph (the first) or
    # replays it (capturing puts the random generator back as it found it).
    sample = {**kwargs, "do_sample": True, "temperature": 0.9, "top_p": 0.8}
    torch.manual_seed(0)
    a = graph.generate(inputs, 4, **sample)
    assert graph.graph_captures == 2
    torch.manual_seed(0)
    b = graph.generate(inputs, 4, **sample)
    assert torch.equal(a, b)
    assert torch.equal(graph.generate(inputs, 4, **kwargs), eager.generate(inputs, 4, **kwargs))


def test_lora_policy_decodes_with_merged_adapters(tiny_model_dir):
    """A peft LoRA policy: the engine decodes from the base weights with the adapters merged in, and
    after the adapters change (a training step) `refresh_weights` brings it back to generate's tokens."""
    peft = pytest.importorskip("peft")
    model = sharp_model(tiny_model_dir("qwen2_5_vl"))
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=targets, exclude_modules=r".*visual.*")
    peft.get_peft_model(model, config)  # injects the adapters into ``model`` in place

    def perturb(seed):
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.copy_(torch.randn(param.shape, generator=gen) * 0.5)

    processor, inputs = prompt_inputs(tiny_model_dir("qwen2_5_vl"))
    eos, pad = eos_token_ids(model, processor), processor.tokenizer.pad_token_id
    kwargs = {"max_new_tokens": 10, "eos_token_ids": eos, "pad_token_id": pad, "do_sample": False}
    perturb(0)
    engine = DecodeEngine(model)
    assert len(engine.weights.merges) == 7 * len(vlm_body(model).language_model.layers)
    assert torch.equal(
        engine.generate(inputs, 2, **kwargs),
        reference_greedy(model, inputs, processor, 10).repeat_interleave(2, 0),
    )
    perturb(1)  # the adapters move; the merged weights follow only after a refresh
    expected = reference_greedy(model, inputs, processor, 10).repeat_interleave(2, 0)
    stale = engine.generate(inputs, 2, **kwargs)
    engine.refresh_weights()
    assert torch.equal(engine.generate(inputs, 2, **kwargs), expected)
    assert not torch.equal(stale, expected)


def test_a_failed_graph_capture_falls_back_to_eager_steps(tiny_model_dir, monkeypatch):
    """If a GPU's capture fails (a kernel that cannot be captured), the engine warns once and decodes
    eagerly, with the same tokens (the capture is simulated: this runs on any machine)."""
    import videothinker.models.engine as engine_module

    model = sharp_model(tiny_model_dir("qwen2_vl"))
    processor, inputs = prompt_inputs(tiny_model_dir("qwen2_vl"))
    eos, pad = eos_token_ids(model, processor), processor.tokenizer.pad_token_id
    kwargs = {"max_new_tokens": 6, "eos_token_ids": eos, "pad_token_id": pad, "do_sample": False}
    engine = DecodeEngine(model)
    engine.cuda_graphs = True  # as on a GPU

    def fail(state):
        raise RuntimeError("operation not permitted when stream is capturing")

    messages = []
    monkeypatch.setattr(engine, "_capture", fail)
    monkeypatch.setattr(engine_module, "warn", messages.append)
    got = engine.generate(inputs, 2, **kwargs)
    assert engine.cuda_graphs is False and len(messages) == 1 and "capture failed" in messages[0]
    assert torch.equal(got, reference_greedy(model, inputs, processor, 6).repeat_interleave(2, 0))


@pytest.mark.slow
@pytest.mark.parametrize("fuse", [False, True], ids=["unfused", "fused"])
def test_compiled_layer_parts_give_the_same_tokens(tiny_model_dir, fuse):
    """rollout.compile: the simple step's layer parts through torch.compile (two graphs for all
    layers, no recompiles per layer), or the whole fused layer (one graph, cache write and attention
    inside), decode the tokens the plain step decodes (Qwen3-VL: its q/k norms too)."""
    from torch._dynamo.utils import counters

    model = sharp_model(tiny_model_dir("qwen3_vl"))
    processor, inputs = prompt_inputs(tiny_model_dir("qwen3_vl"))
    eos, pad = eos_token_ids(model, processor), processor.tokenizer.pad_token_id
    kwargs = {"max_new_tokens": 6, "eos_token_ids": eos, "pad_token_id": pad, "do_sample": False}
    plain = DecodeEngine(model).generate(inputs, 2, **kwargs)
    torch._dynamo.reset()  # graphs compiled by earlier tests would be reused, not counted
    counters.clear()
    compiled = DecodeEngine(model, compile=True, fuse=fuse).generate(inputs, 2, **kwargs)
    assert torch.equal(compiled, plain)
    assert counters["stats"]["unique_graphs"] == (1 if fuse else 2)


@pytest.mark.parametrize("arch", ARCHS)
def test_fused_projections_equal_unfused(tiny_model_dir, arch):
    """weights_from_model(fuse=True): q/k/v and gate/up as one product each give the unfused step's
    logits and cache writes (float32), and the engine's greedy tokens equal generate's."""
    from videothinker.models.decode import decode_step

    model = sharp_model(tiny_model_dir(arch))
    plain, fused = weights_from_model(model), weights_from_model(model, fuse=True)
    lw = fused.layers[0]
    assert lw.qkv is not None and lw.gate_up is not None and plain.layers[0].qkv is None
    assert lw.q.data_ptr() == lw.qkv.data_ptr()  # the per-projection fields are row views of the buffer
    assert torch.equal(lw.qkv, torch.cat([plain.layers[0].q, plain.layers[0].k, plain.layers[0].v]))
    assert fused.copy_bytes > 0 == plain.copy_bytes  # its own dtype: the fused buffers are a copy
    gen = torch.Generator().manual_seed(0)
    n, slots, L = 3, 8, fused.num_layers
    shape = (L, n, fused.num_kv_heads, slots, fused.head_dim)
    cache = torch.randn(2, *shape, generator=gen)
    out = []
    for w in (plain, fused):
        keys, values = cache[0].clone(), cache[1].clone()
        attend = torch.zeros(n, slots, dtype=torch.bool)
        attend[:, :4] = True
        tokens = torch.randint(0, w.embed.shape[0], (n,), generator=torch.Generator().manual_seed(1))
        logits = decode_step(w, tokens, torch.tensor([4, 5, 6]), keys, values, torch.tensor([4]), attend)
        out.append((logits, keys, values))
    for a, b in zip(*out, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    processor, inputs = prompt_inputs(tiny_model_dir(arch))
    eos, pad = eos_token_ids(model, processor), processor.tokenizer.pad_token_id
    kwargs = {"max_new_tokens": 8, "eos_token_ids": eos, "pad_token_id": pad, "do_sample": False}
    got = DecodeEngine(model, fuse=True).generate(inputs, 2, **kwargs)
    assert torch.equal(got, reference_greedy(model, inputs, processor, 8).repeat_interleave(2, 0))


def test_fused_bf16_copy_of_fp32_weights_refreshes_in_place(tiny_model_dir):
    model = load_model(tiny_model_dir("qwen2_5_vl"), dtype="float32")
    weights = weights_from_model(model, torch.bfloat16, fuse=True)
    unfused = weights_from_model(model, torch.bfloat16)
    assert weights.copy_bytes == unfused.copy_bytes  # fused at no extra memory where a copy exists anyway
    lw = weights.layers[0]
    pointer = lw.qkv.data_ptr()
    attn = vlm_body(model).language_model.layers[0].self_attn
    mlp = vlm_body(model).language_model.layers[0].mlp
    with torch.no_grad():
        attn.k_proj.weight.add_(1.0)
        attn.v_proj.bias.add_(1.0)
        mlp.up_proj.weight.add_(1.0)
    weights.refresh()
    assert lw.qkv.data_ptr() == pointer
    kd = attn.k_proj.weight.shape[0]
    qd = attn.q_proj.weight.shape[0]
    assert torch.equal(lw.qkv[qd : qd + kd], attn.k_proj.weight.detach().to(torch.bfloat16))
    assert torch.equal(lw.qkv_bias[qd + kd :], attn.v_proj.bias.detach().to(torch.bfloat16))
    assert torch.equal(
        lw.gate_up[mlp.gate_proj.weight.shape[0] :], mlp.up_proj.weight.detach().to(torch.bfloat16)
    )


def test_fused_lora_policy_merges_into_the_fused_buffers(tiny_model_dir):
    peft = pytest.importorskip("peft")
    model = sharp_model(tiny_model_dir("qwen2_5_vl"))
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    peft.get_peft_model(
        model, peft.LoraConfig(r=4, lora_alpha=8, target_modules=targets, exclude_modules=r".*visual.*")
    )
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5, generator=torch.Generator().manual_seed(3))
    processor, inputs = prompt_inputs(tiny_model_dir("qwen2_5_vl"))
    eos, pad = eos_token_ids(model, processor), processor.tokenizer.pad_token_id
    kwargs = {"max_new_tokens": 8, "eos_token_ids": eos, "pad_token_id": pad, "do_sample": False}
    fused = DecodeEngine(model, fuse=True)
    assert fused.weights.layers[0].qkv is not None
    assert torch.equal(fused.generate(inputs, 2, **kwargs), DecodeEngine(model).generate(inputs, 2, **kwargs))


def test_fused_step_by_default_only_where_the_weights_are_copied_anyway(tiny_model_dir):
    """rollout.fused_step unset: the engine decodes fused for fp32 masters cast to bf16 (their copy is
    laid out fused at no extra memory) and with the simple step for weights read in their own dtype
    (no copy to make); true and false override."""
    from videothinker.config import RolloutConfig
    from videothinker.models.decode_fused import fusing_is_free
    from videothinker.models.engine import make_engine

    model = load_model(tiny_model_dir("qwen2_5_vl"), dtype="float32")
    assert fusing_is_free(model, torch.bfloat16) and not fusing_is_free(model)
    assert not fusing_is_free(model, torch.float32)
    auto = RolloutConfig()
    assert auto.fused_step is None
    masters = make_engine(model, auto, torch.bfloat16)
    assert masters.fused_step and masters.weights.layers[0].qkv is not None
    own = make_engine(model, auto)
    assert not own.fused_step and own.weights.layers[0].qkv is None and own.weights.copy_bytes == 0
    assert make_engine(model, RolloutConfig(fused_step=True)).fused_step
    assert not make_engine(model, RolloutConfig(fused_step=False), torch.bfloat16).fused_step
