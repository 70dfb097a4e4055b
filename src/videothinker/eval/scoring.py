"""Scoring one model output against one record: the evaluation rules, one function per problem type.

Every rule reads the answer through `videothinker.answers` (the parser the training rewards use), so
reported accuracy and training reward cannot drift apart:

- multiple choice: the predicted letters compare as a set with the correct letters ("A, C" == "C,A");
  the exact set scores 1, anything else 0. The partial credit of the training reward (a proper subset
  S of the correct set G earns |S|/|G|) is reported beside it as ``partial``. An untagged output that
  is a bare letter ("C") or starts with one ("C. The cube") counts as that letter.
- numerical: numeric equality ("3.0" == "3", "1,000" == "1000").
- regression: mean relative accuracy (MRA, VSI-Bench): the mean over thresholds 0.50, 0.55, ..., 0.95
  of 1[|pred - gt| / |gt| < 1 - threshold].
- OCR and free-form: exact match after normalisation (lower case, no punctuation or articles).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from videothinker.answers import extract_answer, parse_number
from videothinker.data.records import MULTIPLE_CHOICE, REGRESSION, Record
from videothinker.rl.rewards import answer_credit

# 0.50, 0.55, ..., 0.95 (VSI-Bench), as exact fractions: see `mean_relative_accuracy`.
MRA_THRESHOLDS = tuple(Fraction(p, 100) for p in range(50, 100, 5))


@dataclass(frozen=True)
class Score:
    """The verdict on one output.

    Attributes:
        answer: what the output answers (content of its first <answer></answer>, else the whole text).
        score: the figure accuracy averages: 0 or 1, or the MRA in [0, 1] for regression.
        partial: partial credit (differs from ``score`` only for multi-answer multiple choice).
    """

    answer: str
    score: float
    partial: float


def mean_relative_accuracy(predicted: float, gold: float) -> float:
    """MRA of a predicted number (VSI-Bench): the fraction of thresholds t in 0.50, 0.55, ..., 0.95
    with relative error |pred - gt| / |gt| < 1 - t. A gold value of 0 has relative error 0 for an
    exact prediction and infinity otherwise.

    The comparison is exact (fractions of the given floats), so a case on a boundary follows the
    definition rather than float rounding: 9.5 against 10 has error exactly 0.05, which is not below
    1 - 0.95.

    >>> mean_relative_accuracy(12.0, 10.0)  # error 0.2 < 1 - t for t in 0.50 .. 0.75: 6 of 10
    0.6
    >>> mean_relative_accuracy(9.5, 10.0)  # error 0.05 < 1 - t for t in 0.50 .. 0.90: 9 of 10
    0.9
    """
    if gold == 0:
        return 1.0 if predicted == 0 else 0.0
    error = abs(Fraction(predicted) - Fraction(gold)) / abs(Fraction(gold))
    return sum(error < 1 - t for t in MRA_THRESHOLDS) / len(MRA_THRESHOLDS)


def score_answer(output: str, solution: str, problem_type: str) -> Score:
    """Score a raw model output against a bare solution ("A,C", "3.5", text) of a problem type.

    >>> score_answer("<think>..</think><answer>C, A</answer>", "A,C", "multiple choice")
    Score(answer='C, A', score=1.0, partial=1.0)
    >>> score_answer("<answer>A</answer>", "A,C", "multiple choice")
    Score(answer='A', score=0.0, partial=0.5)
    """
    answer = extract_answer(output)
    if problem_type == REGRESSION:
        predicted, gold = parse_number(answer), parse_number(solution)
        if gold is None:
            raise ValueError(f"regression solution {solution!r} is not a number")
        value = 0.0 if predicted is None else mean_relative_accuracy(predicted, gold)
        return Score(answer, value, value)
    credit = answer_credit(output, solution, problem_type)
    if problem_type == MULTIPLE_CHOICE:
        return Score(answer, float(credit == 1.0), credit)
    return Score(answer, credit, credit)


def score_record(output: str, record: Record) -> Score:
    """Score a raw model output against a record (its solution and problem type)."""
    return score_answer(output, record.solution, record.problem_type)
