"""Rewards: hand-worked cases of the reference rules, the registry, and properties over any string."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from videothinker.rl.rewards import REWARDS, accuracy_reward, compute_rewards, format_reward, get_reward

THINK = "<think>the cube hits the sphere</think>"


@pytest.mark.parametrize(
    ("completion", "solution", "expected"),
    [
        (f"{THINK}<answer>A</answer>", "<answer>A</answer>", 1.0),
        (f"{THINK}<answer>B</answer>", "<answer>A</answer>", 0.0),
        (f"{THINK}<answer>C,A</answer>", "<answer>A,C</answer>", 1.0),  # order does not matter
        (f"{THINK}<answer> A , C </answer>", "A,C", 1.0),  # nor spaces
        (f"{THINK}<answer>A</answer>", "A,C", 0.5),  # proper subset: |S|/|G| = 1/2
        (f"{THINK}<answer>A,B</answer>", "A,B,C,D", 0.5),  # 2/4
        (f"{THINK}<answer>A,C,D</answer>", "A,B,C,D", 0.75),  # 3/4
        (f"{THINK}<answer>A,B</answer>", "A,C", 0.0),  # a wrong letter voids the answer
        (f"{THINK}<answer>A,C,D</answer>", "A,C", 0.0),  # a superset is wrong
        ("<answer>A</answer><answer>B</answer>", "B", 0.0),  # the first answer counts
        ("B", "B", 1.0),  # no tags: the whole text is the answer
        ("The answer is B", "B", 0.0),
        ("<answer></answer>", "A", 0.0),
    ],
)
def test_accuracy_choice_letters(completion, solution, expected):
    assert accuracy_reward([completion], [solution]) == [expected]


@pytest.mark.parametrize(
    ("completion", "solution", "ptype", "expected"),
    [
        ("<answer>3.0</answer>", "3", "numerical", 1.0),
        ("<answer>3</answer>", "<answer>3.00</answer>", None, 1.0),
        ("<answer>1,000</answer>", "1000", "numerical", 1.0),
        ("<answer>2.9</answer>", "3", "numerical", 0.0),
        ("<answer>three</answer>", "3", "regression", 0.0),
        ("<answer>the Stop.</answer>", "STOP", "OCR", 1.0),
        ("<answer>go</answer>", "STOP", "free-form", 0.0),
    ],
)
def test_accuracy_numbers_and_text(completion, solution, ptype, expected):
    assert accuracy_reward([completion], [solution], problem_type=[ptype]) == [expected]


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("<think>x</think><answer>A</answer>", 1.0),
        ("<think>x</think>\n\n<answer>A</answer>  \n", 1.0),  # trailing white space allowed
        ("  <think>x</think><answer>A</answer>", 1.0),
        ("<answer>A</answer>", 0.0),  # no think
        ("<think>x</think>", 0.0),  # no answer
        ("<think>x</think><answer>A</answer> and more", 0.0),  # the answer must end the text
        ("<answer>A</answer><think>x</think>", 0.0),  # wrong order
        ("<think>x</think><think>y</think><answer>A</answer>", 0.0),
        ("<think>x</think><answer>A</answer><answer>B</answer>", 0.0),
        ("<think>x<think></think><answer>A</answer>", 0.0),
        ("hello <think>x</think><answer>A</answer>", 0.0),
    ],
)
def test_format_reward(completion, expected):
    assert format_reward([completion]) == [expected]


def test_registry_and_import_path():
    assert get_reward("accuracy") is accuracy_reward and set(REWARDS) == {
        "accuracy",
        "exact_accuracy",
        "format",
    }
    assert get_reward("videothinker.rl.rewards:format_reward") is format_reward
    assert get_reward("videothinker.rl.rewards.format_reward") is format_reward
    for bad in ("nope", "no.such.module:fn", "videothinker.rl.rewards:missing"):
        with pytest.raises(KeyError):
            get_reward(bad)
    out = compute_rewards(["accuracy", "format"], ["<think>a</think><answer>B</answer>"], ["B"])
    assert out == {"accuracy": [1.0], "format": [1.0]}


def test_mismatched_lengths_raise():
    with pytest.raises(ValueError):
        accuracy_reward(["A", "B"], ["A"])


text = st.text(
    alphabet=st.sampled_from(list("ABCD ,.0123456789-e<>/answerthink\n")) | st.characters(), max_size=80
)


@settings(max_examples=300, deadline=None)
@given(
    completion=text,
    solution=text,
    ptype=st.sampled_from([None, "multiple choice", "numerical", "regression", "OCR", "free-form"]),
)
def test_no_string_makes_a_reward_raise_and_rewards_lie_in_unit_interval(completion, solution, ptype):
    for name, fn in REWARDS.items():
        value = fn([completion], [solution], problem_type=[ptype])[0]
        assert 0.0 <= value <= 1.0, name


@settings(max_examples=200, deadline=None)
@given(
    gold=st.sets(st.sampled_from("ABCDEF"), min_size=1),
    pred=st.sets(st.sampled_from("ABCDEF"), min_size=1),
    sep=st.sampled_from([",", ", ", " , "]),
)
def test_choice_credit_property(gold, pred, sep):
    value = accuracy_reward(
        [f"<answer>{sep.join(sorted(pred, reverse=True))}</answer>"], [",".join(sorted(gold))]
    )[0]
    expected = len(pred) / len(gold) if pred <= gold else 0.0
    assert value == pytest.approx(expected)


@settings(max_examples=200, deadline=None)
@given(
    gold=st.sets(st.sampled_from("ABCD"), min_size=1),
    pred=st.sets(st.sampled_from("ABCD"), min_size=1),
)
def test_exact_accuracy_is_the_evaluation_score(gold, pred):
    """No partial credit: 1 only for the exact letter set, as `videothinker.eval.scoring` scores it."""
    from videothinker.eval.scoring import score_answer
    from videothinker.rl.rewards import exact_accuracy_reward

    completion, solution = f"<answer>{','.join(sorted(pred))}</answer>", ",".join(sorted(gold))
    value = exact_accuracy_reward([completion], [solution])[0]
    assert value == float(pred == gold) == score_answer(completion, solution, "multiple choice").score
