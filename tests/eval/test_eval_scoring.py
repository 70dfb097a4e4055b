"""Scoring rules, case by case, with the arithmetic worked by hand in comments."""

from __future__ import annotations

import pytest

from videothinker.data.records import parse_record
from videothinker.eval.scoring import MRA_THRESHOLDS, mean_relative_accuracy, score_answer, score_record
from videothinker.rl.rewards import accuracy_reward

MC = "multiple choice"


@pytest.mark.parametrize(
    "output",
    [
        "<think>hmm</think><answer>A,C</answer>",
        "<answer>A, C</answer>",
        "<answer>C,A</answer>",
        "<answer> C ,  A </answer>",
        "<answer>c, a</answer>",
        "A,C",  # untagged
        "C A",
        "(A), (C)",
    ],
)
def test_multi_answer_is_a_set_whatever_the_spacing_and_order(output):
    assert score_answer(output, "A,C", MC).score == 1.0


@pytest.mark.parametrize(
    ("output", "score", "partial"),
    [
        ("<answer>A</answer>", 0.0, 0.5),  # proper subset {A} of {A, C}: partial 1/2, score 0
        ("<answer>A,B</answer>", 0.0, 0.0),  # B is wrong: no credit at all
        ("<answer>A,B,C</answer>", 0.0, 0.0),  # superset: no credit
        ("<answer></answer>", 0.0, 0.0),
    ],
)
def test_multi_answer_exact_set_scores_one_partial_credit_is_second_figure(output, score, partial):
    result = score_answer(output, "A,C", MC)
    assert (result.score, result.partial) == (score, partial)


def test_partial_credit_of_three_correct_letters():
    # {A, B} of {A, B, D}: 2/3 partial, 0 exact.
    result = score_answer("<answer>B,A</answer>", "A,B,D", MC)
    assert result.score == 0.0
    assert result.partial == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("C", 1.0),  # a bare letter, untagged
        ("C. The cube collides with the sphere", 1.0),  # "C. text", untagged
        ("(C) the cube", 1.0),
        ("<answer>C. The cube</answer>", 1.0),
        ("<answer>(C)</answer>", 1.0),
        ("B", 0.0),
        ("The answer is C", 0.0),  # prose is not a letter
        ("", 0.0),
    ],
)
def test_single_answer_untagged_and_prefixed_letters(output, expected):
    assert score_answer(output, "C", MC).score == expected


def test_extracted_answer_is_reported():
    assert score_answer("<think>x</think><answer> B </answer>", "B", MC).answer == "B"
    assert score_answer("B. red", "B", MC).answer == "B. red"


@pytest.mark.parametrize(
    ("output", "solution", "expected"),
    [
        ("<answer>3.0</answer>", "3", 1.0),
        ("<answer>1,000</answer>", "1000", 1.0),
        ("<answer>-2e3</answer>", "-2000", 1.0),
        ("<answer>0.30</answer>", "0.3", 1.0),
        ("<answer>3.5</answer>", "3", 0.0),
        ("<answer>three</answer>", "3", 0.0),
        ("7", "7", 1.0),  # untagged number
    ],
)
def test_numerical_is_numeric_equality(output, solution, expected):
    assert score_answer(output, solution, "numerical").score == expected


@pytest.mark.parametrize(
    ("predicted", "gold", "expected"),
    [
        (10.0, 10.0, 1.0),  # error 0 < 1 - t for all 10 thresholds
        (9.5, 10.0, 0.9),  # error 0.05 < 1 - t for t <= 0.90: 9 of 10
        (12.0, 10.0, 0.6),  # error 0.20: t in 0.50 .. 0.75: 6 of 10
        (7.0, 10.0, 0.4),  # error 0.30: t in 0.50 .. 0.65: 4 of 10
        (14.9, 10.0, 0.1),  # error 0.49: only t = 0.50 (0.49 < 0.50)
        (15.0, 10.0, 0.0),  # error 0.50 is not < 0.50
        (-12.0, -10.0, 0.6),  # relative to |gt|
        (0.0, 0.0, 1.0),  # gt 0: exact only
        (0.1, 0.0, 0.0),
    ],
)
def test_mean_relative_accuracy_by_hand(predicted, gold, expected):
    assert mean_relative_accuracy(predicted, gold) == pytest.approx(expected)


def test_mra_thresholds_are_the_vsi_bench_ones():
    assert [float(t) for t in MRA_THRESHOLDS] == pytest.approx([0.5 + 0.05 * i for i in range(10)])


def test_regression_scores_mra_and_zero_for_no_number():
    result = score_answer("<think>about</think><answer>12</answer>", "10", "regression")
    assert (result.score, result.partial) == (pytest.approx(0.6), pytest.approx(0.6))
    assert score_answer("<answer>a dozen</answer>", "10", "regression").score == 0.0


@pytest.mark.parametrize("problem_type", ["OCR", "free-form"])
@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("<answer>Hello, World!</answer>", 1.0),  # case and punctuation do not count
        ("<answer>the hello   world</answer>", 1.0),  # nor articles and spacing
        ("<answer>hello</answer>", 0.0),
        ("<answer></answer>", 0.0),
    ],
)
def test_text_answers_by_normalised_exact_match(problem_type, output, expected):
    assert score_answer(output, "hello world", problem_type).score == expected


def test_score_record_uses_the_records_solution_and_type():
    record = parse_record(
        {"problem": "How many?", "problem_type": "regression", "solution": "<answer>20</answer>"}
    )
    # error 2 / 20 = 0.1 < 1 - t for t in 0.50 .. 0.85: 8 of 10
    assert score_record("<answer>22</answer>", record).score == pytest.approx(0.8)


def test_multiple_choice_partial_equals_the_training_reward():
    """The evaluation scorer and the accuracy reward read answers through the same parser."""
    outputs = ["<answer>A</answer>", "<answer>C, A</answer>", "A", "C. x", "<answer>B</answer>", "nothing"]
    rewards = accuracy_reward(outputs, ["A,C"] * len(outputs), problem_type=[MC] * len(outputs))
    assert [score_answer(o, "A,C", MC).partial for o in outputs] == rewards


def test_docstring_examples_of_the_eval_modules():
    import doctest

    from videothinker.eval import benchmarks, scoring

    for module in (scoring, benchmarks):
        result = doctest.testmod(module)
        assert result.attempted > 0
        assert result.failed == 0, module.__name__
