"""Next-token choice on the device: greedy, temperature and nucleus (top-p) sampling.

Pure tensor functions with no host synchronisation, so the engine's decode step can be captured in
a CUDA graph with them. They follow transformers' ``generate`` with ``do_sample=True, top_k=0``:
logits divided by the temperature, then ``TopPLogitsWarper``'s rule (sort ascending, drop the
tokens whose cumulative probability is <= 1 - top_p, always keep the most likely one), then a draw
from the softmax. The draw is the exponential race (``argmax(p_i / E_i)`` with ``E_i ~ Exp(1)``,
which picks ``i`` with probability ``p_i``) instead of ``torch.multinomial``; E is taken as
``-log(U)``, ``U ~ Uniform[0, 1)``, which is never 0, so no token wins by a division by zero.
tests/models/test_sampling.py checks the drawn frequencies against the softmax.
"""

from __future__ import annotations

import torch


def top_p_filter(scores: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """``scores`` [N, V] with the tokens outside the nucleus set to -inf.

    Equals transformers' ``TopPLogitsWarper(top_p)(None, scores)`` (min_tokens_to_keep = 1);
    ``top_p`` is a [1] (or scalar) float tensor, so a captured graph serves any value."""
    sorted_scores, order = torch.sort(scores, dim=-1)  # ascending
    cumulative = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
    remove_sorted = cumulative <= (1 - top_p)
    remove_sorted[..., -1] = False
    remove = torch.zeros_like(remove_sorted).scatter_(-1, order, remove_sorted)
    return scores.masked_fill(remove, float("-inf"))


def sample_next(
    logits: torch.Tensor,  # [N, V] float32
    *,
    greedy: bool,
    temperature: torch.Tensor | None = None,  # [1] float32
    top_p: torch.Tensor | None = None,  # [1] float32, or None for no nucleus filter
    generator: torch.Generator | None = None,
) -> torch.Tensor:  # [N] int64
    """The next token of each row: the argmax (greedy), or a draw from softmax(logits / temperature)
    restricted to the top-p nucleus."""
    if greedy:
        return logits.argmax(dim=-1)
    scores = logits / temperature
    if top_p is not None:
        scores = top_p_filter(scores, top_p)
    probs = scores.softmax(dim=-1)
    uniform = torch.rand(probs.shape, dtype=probs.dtype, device=probs.device, generator=generator)
    race = -uniform.log()  # Exp(1), in (0, inf]
    return (probs / race).argmax(dim=-1)
