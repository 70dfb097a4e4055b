"""Rewards: plain functions over plain strings behind a name -> function registry.

Every reward has the signature ``(completions: list[str], solutions: list[str], **kw) -> list[float]``
(``format_reward`` ignores ``solutions``) and returns values in [0, 1]. Extra keyword arguments carry
per-completion batch fields (``problem_type``, ``question_kind``, ...), lists aligned with completions.

User rewards plug in by import path: ``get_reward("my_pkg.rewards:length_penalty")``.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Sequence

from videothinker.answers import (
    choice_credit,
    extract_answer,
    normalize_text,
    numbers_equal,
    parse_choices,
    parse_number,
)

RewardFn = Callable[..., list[float]]

_FORMAT_RE = re.compile(r"\s*<think>.*?</think>\s*<answer>.*?</answer>\s*", re.DOTALL)
_TAGS = ("<think>", "</think>", "<answer>", "</answer>")


def answer_credit(completion: str, solution: str, problem_type: str | None = None) -> float:
    """Accuracy credit of one completion against one solution, in [0, 1].

    The answer is the content of the first <answer></answer> (the whole text when there is none).
    Option letters compare as sets (the exact set earns 1, a proper subset S of the correct set G earns
    |S|/|G|); numbers compare numerically; other answers by normalised exact match.

    >>> answer_credit("<think>..</think><answer>C, A</answer>", "<answer>A,C</answer>")
    1.0
    >>> answer_credit("<answer>A</answer>", "A,C")
    0.5
    >>> answer_credit("<answer>3.0</answer>", "3", "numerical")
    1.0
    """
    predicted, gold = extract_answer(completion), extract_answer(solution)
    if problem_type in (None, "multiple choice"):
        gold_letters = parse_choices(gold)
        if gold_letters is not None:
            return choice_credit(parse_choices(predicted), gold_letters)
    if problem_type in (None, "numerical", "regression"):
        gold_number = parse_number(gold)
        if gold_number is not None:
            value = parse_number(predicted)
            return float(value is not None and numbers_equal(value, gold_number))
    return float(bool(normalize_text(gold)) and normalize_text(predicted) == normalize_text(gold))


def accuracy_reward(completions: list[str], solutions: list[str], **kw) -> list[float]:
    """Accuracy of each completion (see `answer_credit`); ``problem_type`` may be passed per item.

    >>> accuracy_reward(["<answer>B</answer>", "<answer>A</answer>"], ["A", "A"])
    [0.0, 1.0]
    """
    types: Sequence[str | None] = kw.get("problem_type") or [None] * len(completions)
    return [answer_credit(c, s, t) for c, s, t in zip(completions, solutions, types, strict=True)]


def exact_accuracy_reward(completions: list[str], solutions: list[str], **kw) -> list[float]:
    """1 when a completion's answer is exactly right, else 0: `accuracy_reward` without the partial
    credit for a correct proper subset of the letters, i.e. the evaluation's score. The partial credit
    can be gamed by answering fewer letters; this reward cannot.

    >>> exact_accuracy_reward(["<answer>A</answer>", "<answer>C, A</answer>"], ["A,C", "A,C"])
    [0.0, 1.0]
    """
    return [float(credit == 1.0) for credit in accuracy_reward(completions, solutions, **kw)]


def format_reward(completions: list[str], solutions: list[str] | None = None, **kw) -> list[float]:
    """1 when a completion is exactly one <think>...</think> followed by exactly one
    <answer>...</answer> that ends the text (white space around allowed), else 0.

    >>> format_reward(["<think>a</think> <answer>B</answer>\\n", "<answer>B</answer>"])
    [1.0, 0.0]
    """
    return [
        float(all(c.count(tag) == 1 for tag in _TAGS) and _FORMAT_RE.fullmatch(c) is not None)
        for c in completions
    ]


REWARDS: dict[str, RewardFn] = {
    "accuracy": accuracy_reward,
    "exact_accuracy": exact_accuracy_reward,
    "format": format_reward,
}


def get_reward(name: str) -> RewardFn:
    """A reward by registry name, or by import path ``package.module:function`` (or dotted)."""
    if name in REWARDS:
        return REWARDS[name]
    module_name, sep, attr = name.partition(":")
    if not sep:
        module_name, _, attr = name.rpartition(".")
    if not module_name or not attr:
        raise KeyError(
            f"unknown reward {name!r}; known: {', '.join(REWARDS)}, or an import path 'pkg.mod:fn'"
        )
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise KeyError(f"cannot import reward {name!r}: {exc}") from None
    if not callable(fn):
        raise KeyError(f"reward {name!r} is not callable")
    return fn


def compute_rewards(
    names: Sequence[str], completions: list[str], solutions: list[str], **batch
) -> dict[str, list[float]]:
    """Every named reward over a batch: {name: [reward per completion]}."""
    return {name: [float(r) for r in get_reward(name)(completions, solutions, **batch)] for name in names}
