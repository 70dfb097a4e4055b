"""Sampling on the device: the nucleus filter equals transformers' TopPLogitsWarper; drawn tokens follow
softmax(logits / temperature) within the nucleus, for the plain function and for the engine (its
first token from the prefill, its second from the decode step), by a chi-square test that fails on a
wrong temperature or a missing nucleus filter."""

from __future__ import annotations

import math

import pytest
import torch

from tiny_prompts import prompt_inputs, sharp_model
from videothinker.models.engine import DecodeEngine, prompt_model_inputs
from videothinker.models.loading import eos_token_ids
from videothinker.models.sampling import sample_next, top_p_filter


def test_top_p_filter_equals_transformers_warper():
    from transformers.generation.logits_process import TopPLogitsWarper

    gen = torch.Generator().manual_seed(0)
    for top_p in (0.05, 0.3, 0.9, 0.999):
        scores = torch.randn(5, 300, generator=gen) * 3
        expected = TopPLogitsWarper(top_p)(None, scores.clone())
        got = top_p_filter(scores, torch.tensor([top_p]))
        assert torch.equal(torch.isinf(got), torch.isinf(expected))
        assert torch.equal(got[~torch.isinf(got)], scores[~torch.isinf(expected)])


def test_top_p_keeps_the_most_likely_token_by_hand():
    # probs 0.5, 0.3, 0.2 (ascending cumsum 0.2, 0.5, 1.0): top_p 0.6 drops what sums to <= 0.4 -> the 0.2
    scores = torch.tensor([[0.5, 0.3, 0.2]]).log()
    assert torch.isinf(top_p_filter(scores, torch.tensor([0.6]))).tolist() == [[False, False, True]]
    # top_p 0.1: only the most likely token stays
    assert torch.isinf(top_p_filter(scores, torch.tensor([0.1]))).tolist() == [[False, True, True]]


def test_greedy_is_argmax():
    logits = torch.randn(7, 50, generator=torch.Generator().manual_seed(1))
    assert torch.equal(sample_next(logits, greedy=True), logits.argmax(-1))


def nucleus_probs(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """The float64 reference: softmax(logits / T) restricted to the nucleus and renormalised."""
    probs = torch.softmax(logits.double() / temperature, dim=-1)
    ordered, order = probs.sort(descending=True)
    before = ordered.cumsum(-1) - ordered  # mass of the more likely tokens
    keep = torch.zeros_like(probs, dtype=torch.bool).scatter(-1, order, before < top_p)
    probs = probs * keep
    return probs / probs.sum(-1, keepdim=True)


def chi_square_fits(counts: torch.Tensor, probs: torch.Tensor, z: float = 3.72) -> bool:
    """Pearson's chi-square over bins of expected count >= 5 (the rest pooled) at significance 1e-4
    (z = 3.72), the critical value by the Wilson-Hilferty approximation. A token drawn that the
    reference gives probability 0 fails at once."""
    n = counts.sum().item()
    expected = probs * n
    if bool((counts[probs == 0] > 0).any()):
        return False
    big = expected >= 5
    observed = torch.cat([counts[big].double(), counts[~big].double().sum().view(1)])
    wanted = torch.cat([expected[big], expected[~big].sum().view(1)])
    keep = wanted > 0
    stat = float(((observed[keep] - wanted[keep]) ** 2 / wanted[keep]).sum())
    df = int(keep.sum()) - 1
    critical = df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3
    return stat < critical


def test_sample_next_follows_the_softmax():
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(1, 40, generator=gen) * 2
    n = 20_000
    draws = sample_next(
        logits.expand(n, -1),
        greedy=False,
        temperature=torch.tensor([0.7]),
        top_p=torch.tensor([0.8]),
        generator=gen,
    )
    counts = torch.bincount(draws, minlength=40)
    assert chi_square_fits(counts, nucleus_probs(logits[0], 0.7, 0.8))
    # The test can fail: the same draws are not those of another temperature or of no nucleus.
    assert not chi_square_fits(counts, nucleus_probs(logits[0], 1.0, 0.8))
    assert not chi_square_fits(counts, nucleus_probs(logits[0], 0.7, 1.0))


@pytest.mark.slow
def test_engine_draws_follow_the_models_softmax(tiny_model_dir):
    """4096 completions of one prompt: the first tokens (drawn from the prefill) and the second
    tokens after the most frequent first token (drawn inside the decode step) fit the model's own
    softmax(logits / T) within the nucleus."""
    model_dir = tiny_model_dir("qwen2_5_vl")
    model = sharp_model(model_dir)
    processor, inputs = prompt_inputs(model_dir, videos=True, prompts=["Which object moves first?"])
    with torch.no_grad():  # logits of std 1.5: about a hundred tokens in the nucleus, one at p ~ 0.35
        std = model(**prompt_model_inputs(model, inputs)).logits[0, -1].std()
        model.get_output_embeddings().weight.mul_(1.5 / std)
    T, top_p, G = 0.8, 0.9, 4096
    eos = eos_token_ids(model, processor)
    torch.manual_seed(0)
    out = DecodeEngine(model).generate(
        inputs, G, max_new_tokens=2, eos_token_ids=eos, pad_token_id=processor.tokenizer.pad_token_id,
        temperature=T, top_p=top_p,
    )  # fmt: skip
    with torch.no_grad():
        first_logits = model(**prompt_model_inputs(model, inputs)).logits[0, -1]
    vocab = first_logits.shape[-1]
    first_probs = nucleus_probs(first_logits, T, top_p)
    assert int((first_probs > 0).sum()) >= 5  # a real distribution, not one token
    first_counts = torch.bincount(out[:, 0], minlength=vocab)
    assert chi_square_fits(first_counts, first_probs)
    assert not chi_square_fits(first_counts, nucleus_probs(first_logits, 1.5, top_p))
    assert not chi_square_fits(first_counts, nucleus_probs(first_logits, T, 1.0))

    a = int(first_counts.argmax())
    rows = out[:, 0] == a
    assert int(rows.sum()) >= 300
    if a in eos:
        pytest.skip("the most frequent first token ends the completion")
    longer = {
        "input_ids": torch.cat([inputs["input_ids"], torch.tensor([[a]])], dim=1),
        "attention_mask": torch.cat([inputs["attention_mask"], torch.ones(1, 1, dtype=torch.long)], dim=1),
    } | {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
    with torch.no_grad():
        second_logits = model(**prompt_model_inputs(model, longer)).logits[0, -1]
    second_counts = torch.bincount(out[rows, 1], minlength=vocab)
    assert chi_square_fits(second_counts, nucleus_probs(second_logits, T, top_p))
    assert not chi_square_fits(second_counts, nucleus_probs(second_logits, 1.5, top_p))
