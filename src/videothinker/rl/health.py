"""Whether a run is healthy: degenerate completions, and the rule that stops a collapsing run.

A repulsion that is too strong (CDPO with a large ``|beta|``) sharpens the policy into degenerate text
within tens of steps: in the lab at beta -0.2 every completion became "......." by step 60, at -1
"no no no ...". The signs come before the accuracy falls: the format reward drops, the policy's token
entropy falls toward zero, and the share of completions with no answer tag or one token repeated
rises. `CollapseMonitor` compares each of them over the last ``window`` steps with the first
``window`` steps (docs/TRAINING.md, "Collapse") and names the rule that fired.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from videothinker.cdpo_config import CollapseConfig

_ANSWER = re.compile(r"<answer>.*?</answer>", re.DOTALL)
MIN_REPEAT_TOKENS = 8  # a completion shorter than this is never called repetitive


def is_degenerate(text: str, token_ids: list[int]) -> bool:
    """A completion with no ``<answer>...</answer>``, or of at least 8 tokens one of which makes up
    over half of it.

    >>> is_degenerate("<think>a</think><answer>B</answer>", [1, 2, 3])
    False
    >>> is_degenerate("no no no no no no no no", [7] * 8)
    True
    >>> is_degenerate("<answer>A</answer>" + "." * 20, [5, 6, 7] + [9] * 20)
    True
    """
    if not _ANSWER.search(text):
        return True
    if len(token_ids) >= MIN_REPEAT_TOKENS:
        return Counter(token_ids).most_common(1)[0][1] * 2 > len(token_ids)
    return False


def degenerate_share(texts: list[str], token_ids: list[list[int]]) -> float:
    """The share of degenerate completions (`is_degenerate`) among ``texts`` (0 for none)."""
    if not texts:
        return 0.0
    return sum(is_degenerate(t, ids) for t, ids in zip(texts, token_ids, strict=True)) / len(texts)


class CollapseMonitor:
    """Watches the per-step metrics ``reward/format``, ``entropy`` and ``degenerate`` and says when a
    rule of `CollapseConfig` fires.

    The start is the mean over the first ``window`` steps; each later step compares the mean over the
    last ``window`` steps with it (no comparison before 2 * window steps):

    - format: last < min_format_ratio * start (only when start >= 0.2);
    - entropy: last < min_entropy_ratio * start;
    - degenerate: last > start + max_degenerate_rise.
    """

    METRICS = ("reward/format", "entropy", "degenerate")

    def __init__(self, config: CollapseConfig):
        self.config = config
        self.history: dict[str, list[float]] = {name: [] for name in self.METRICS}

    def update(self, row: dict[str, Any]) -> str | None:
        """Take one step's metrics; return the rule that fired, in words, or None."""
        for name in self.METRICS:
            value = row.get(name)
            if isinstance(value, int | float):
                self.history[name].append(float(value))
        if not self.config.enabled:
            return None
        c, w = self.config, self.config.window
        for name, values in self.history.items():
            if len(values) < 2 * w:
                continue
            start, last = sum(values[:w]) / w, sum(values[-w:]) / w
            if name == "reward/format" and start >= 0.2 and last < c.min_format_ratio * start:
                return f"format reward fell to {last:.3f} (mean of the last {w} steps) from {start:.3f}"
            if name == "entropy" and last < c.min_entropy_ratio * start:
                return f"token entropy fell to {last:.4f} (mean of the last {w} steps) from {start:.4f}"
            if name == "degenerate" and last > start + c.max_degenerate_rise:
                return (
                    f"degenerate completions rose to {last:.0%} (mean of the last {w} steps) from {start:.0%}"
                )
        return None

    def state_dict(self) -> dict[str, list[float]]:
        return {name: list(values) for name, values in self.history.items()}

    def load_state_dict(self, state: dict[str, list[float]]) -> None:
        self.history = {name: list(state.get(name, [])) for name in self.METRICS}


def collapse_message(
    reason: str,
    step: int,
    window: int,
    checkpoints: list,
    stage: str,
    beta: float,
    learning_rate: float,
) -> tuple[str, str | None]:
    """The one line a collapsed run stops with: the step, the rule that fired, the likely cause, the
    last good checkpoint (the newest saved before the collapse window began; ``checkpoints`` oldest
    first) and how to go on. Returns the line and that checkpoint (None if there is none)."""
    good = [c for c in checkpoints if int(c.name.split("-")[-1]) <= step - window]
    kept = f"its last good checkpoint {good[-1]} is kept" if good else "no checkpoint precedes the collapse"
    if stage == "cdpo":
        cause = f"the repulsion from the bias model is too strong (beta {beta:g})"
        fix = (
            f"resume {'it' if good else 'from the start'} with a smaller |grpo.beta| (e.g. --set "
            f"grpo.beta={beta / 3:.3g}{f' --resume {good[-1]}' if good else ''}) or bound it "
            "(--set cdpo.kl_cap=0.2, docs/LOSS.md)"
        )
    else:
        cause = f"the updates are too large (learning rate {learning_rate:g})"
        fix = "go on with a smaller grpo.learning_rate"
    message = f"step {step}: training collapsed ({reason}); likely cause: {cause}; {kept}; {fix}"
    return message, str(good[-1]) if good else None
