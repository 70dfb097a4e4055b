"""The one answer parser, shared by the training rewards and the evaluation scorer.

Training reward and reported accuracy must not drift apart, so both call the functions here:
`extract_answer` takes what a completion answers, `parse_choices` reads it as a set of option letters,
`parse_number` as a number, `normalize_text` as free text.
"""

from __future__ import annotations

import math
import re
import string

_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
# "A", "A,C", "a, c", "(B)", "A and C" is *not* accepted: only comma/space separated letters.
_LETTER_LIST_RE = re.compile(r"^\(?([A-Za-z])\)?(?:\s*[,;/\s]\s*\(?([A-Za-z])\)?)*\.?$")
_LETTER_TOKEN_RE = re.compile(r"[A-Za-z]")
# "C. text", "C) text", "(C) text", "C: text" -> C (upper case only: a lower-case "a." is a word).
_LETTER_PREFIX_RE = re.compile(r"^\(?([A-Z])[.):]\s+\S")
_NUMBER_RE = re.compile(r"^[-+]?(?:\d+(?:,\d{3})*(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?$")


def extract_answer(text: str) -> str:
    """Return the content of the first ``<answer>...</answer>``, or the whole text when there is none.

    >>> extract_answer("<think>hmm</think><answer> B </answer>")
    'B'
    >>> extract_answer("C")
    'C'
    """
    match = _ANSWER_RE.search(text)
    return (match.group(1) if match else text).strip()


def parse_choices(answer: str) -> frozenset[str] | None:
    """Read an answer as a set of option letters, or None when it is not one.

    Letters compare as sets, so spacing and order do not matter; an untagged "C. text" counts as C.

    >>> sorted(parse_choices("C, a"))
    ['A', 'C']
    >>> sorted(parse_choices("B. The cube moves"))
    ['B']
    >>> parse_choices("The cube") is None
    True
    """
    answer = answer.strip()
    if not answer:
        return None
    if _LETTER_LIST_RE.match(answer):
        return frozenset(letter.upper() for letter in _LETTER_TOKEN_RE.findall(answer))
    prefix = _LETTER_PREFIX_RE.match(answer)
    if prefix:
        return frozenset(prefix.group(1))
    return None


def parse_number(answer: str) -> float | None:
    """Read an answer as a finite number ("3", "3.0", "1,000", "-2e3"), or None.

    >>> parse_number("3.0") == parse_number("3")
    True
    >>> parse_number("three") is None
    True
    """
    text = answer.strip().rstrip(".")
    if not _NUMBER_RE.match(text):
        return None
    value = float(text.replace(",", ""))
    return value if math.isfinite(value) else None


def normalize_text(answer: str) -> str:
    """Lower-case, drop punctuation and articles, collapse white space (SQuAD-style normalisation).

    >>> normalize_text("  The Red-Cube! ")
    'redcube'
    """
    text = answer.lower()
    text = "".join(ch for ch in text if ch not in string.punctuation)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def choice_credit(predicted: frozenset[str] | None, gold: frozenset[str]) -> float:
    """Credit of a predicted letter set against the correct set.

    The exact set earns 1, a non-empty proper subset S of the correct set G earns |S| / |G|, anything
    else 0 (the partial-credit rule of the reference training code).

    >>> choice_credit(frozenset("A"), frozenset("AC"))
    0.5
    >>> choice_credit(frozenset("AB"), frozenset("AC"))
    0.0
    """
    if not predicted or not gold:
        return 0.0
    if predicted == gold:
        return 1.0
    if predicted < gold:
        return len(predicted) / len(gold)
    return 0.0


def numbers_equal(a: float, b: float, rel_tol: float = 1e-6) -> bool:
    """Numeric equality with a small relative tolerance (so 3.0 == 3 and 0.1 + 0.2 == 0.3)."""
    return math.isclose(a, b, rel_tol=rel_tol, abs_tol=1e-9)
