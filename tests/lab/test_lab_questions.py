"""Lab questions: minimal unique descriptions, choices built from the factual and counterfactual
collisions of a hand-made chain, and the selection that tracks the observational ratio."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from videothinker.data.clevrer import parse_choice, parse_question, resolve
from videothinker.lab.questions import (
    INFERENTIAL,
    OBSERVATIONAL,
    Choice,
    Description,
    Question,
    candidate_question,
    minimal_description,
    seen_question,
    select_questions,
)
from videothinker.lab.scene import ObjectSpec

OBJECTS = [
    ObjectSpec(0, "red", "rubber", "cube"),
    ObjectSpec(1, "red", "metal", "cube"),
    ObjectSpec(2, "blue", "metal", "sphere"),
    ObjectSpec(3, "green", "rubber", "cylinder"),
    ObjectSpec(4, "green", "metal", "cylinder"),
]


def _pairs(*pairs) -> set[frozenset[int]]:
    return {frozenset(p) for p in pairs}


def test_minimal_description_is_unique_and_shortest():
    rng = np.random.default_rng(0)
    for obj in OBJECTS:
        for _ in range(5):
            desc = minimal_description(obj, OBJECTS, rng)
            assert [o for o in OBJECTS if desc.matches(o)] == [obj]
            size = sum(v is not None for v in (desc.color, desc.material, desc.shape))
            shorter = [
                Description(**{k: getattr(obj, k) for k in s})
                for n in range(1, size)
                for s in combinations(("color", "material", "shape"), n)
            ]
            assert not any(sum(d.matches(o) for o in OBJECTS) == 1 for d in shorter)
    # The blue sphere is the only blue object and the only sphere; the red cubes need their material.
    assert minimal_description(OBJECTS[2], OBJECTS, rng).words in ("blue object", "sphere")
    assert minimal_description(OBJECTS[0], OBJECTS, rng).words == "rubber cube"
    assert Description(color="red", shape="cube").program() == [
        "objects",
        "red",
        "filter_color",
        "cube",
        "filter_shape",
        "unique",
    ]


def _answer_key(question: Question) -> dict[frozenset[int], bool]:
    """Read a question back the way the converter does: removed object and choice pairs from the text."""
    objects = {o.object_id: {"color": o.color, "material": o.material, "shape": o.shape} for o in OBJECTS}
    removed = resolve(parse_question(question.text)[0], objects)
    assert removed == question.removed
    key = {}
    for c in question.choices:
        pair = frozenset(resolve(d, objects) for d in parse_choice(c.text))
        assert pair == frozenset(c.pair)  # the text names the pair the choice was built for
        key[pair] = c.correct
    return key


def test_chain_striker_removal_is_inferential_and_lists_a_changed_collision():
    # The video: 0 hits 1, 1 hits 2 (a chain); 3 hits 4 elsewhere. Without 0 only 3-4 remains.
    factual = _pairs((0, 1), (1, 2), (3, 4))
    for seed in range(20):
        q = candidate_question(7, OBJECTS, 0, factual, _pairs((3, 4)), np.random.default_rng(seed))
        assert q is not None and q.kind == INFERENTIAL and q.removed == 0
        key = _answer_key(q)
        assert frozenset((1, 2)) in key  # the collision of the video that the removal cancels
        assert key[frozenset((1, 2))] is q.negated  # wrong for "will happen", correct for "will not happen"
        assert 3 <= len(q.choices) <= 4 and any(key.values()) and not all(key.values())
        assert q.to_json(3)["choices"][0]["answer"] in ("correct", "wrong")
    # When the removal cancels every collision, only "will not happen" has a correct choice (all are).
    q = candidate_question(7, OBJECTS, 0, _pairs((0, 1), (1, 2)), set(), np.random.default_rng(0))
    assert q.negated and q.kind == INFERENTIAL and all(_answer_key(q).values())


def test_middle_removal_lists_the_new_collision():
    # Without 1, 0 travels on and hits 2: a collision that is not in the video.
    factual, counterfactual = _pairs((0, 1), (1, 2)), _pairs((0, 2))
    for seed in range(20):
        q = candidate_question(7, OBJECTS, 1, factual, counterfactual, np.random.default_rng(seed))
        key = _answer_key(q)
        assert q.kind == INFERENTIAL and key[frozenset((0, 2))] is not q.negated


def test_bystander_removal_is_observational_and_answered_by_the_video():
    factual = _pairs((0, 1), (1, 2))
    for seed in range(20):
        q = candidate_question(7, OBJECTS, 4, factual, factual, np.random.default_rng(seed))
        assert q.kind == OBSERVATIONAL
        for pair, correct in _answer_key(q).items():
            assert correct == ((pair in factual) != q.negated)
    # An object that collides but whose removal changes no listable collision gives no question.
    assert candidate_question(7, OBJECTS, 2, factual, _pairs((0, 1)), np.random.default_rng(0)) is None


def _fake(kind: str, all_correct: bool = False) -> Question:
    changed = kind == INFERENTIAL
    choices = [
        Choice((0, 1), "The cube and the sphere collide", [], correct=True, changed=changed),
        Choice((1, 2), "The sphere and the cylinder collide", [], correct=all_correct, changed=False),
    ]
    return Question(0, 0, False, "", [], choices)


@settings(max_examples=60, deadline=None)
@given(
    scenes=st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4)), min_size=1, max_size=120),
    ratio=st.floats(0.0, 1.0),
    per_scene=st.integers(1, 4),
)
def test_selection_never_strays_more_than_one_question_from_the_ratio(scenes, ratio, per_scene):
    candidates = [[_fake(OBSERVATIONAL)] * n_obs + [_fake(INFERENTIAL)] * n_inf for n_obs, n_inf in scenes]
    selected = select_questions(candidates, ratio, per_scene)
    assert len(selected) == len(scenes)
    assert all(len(s) <= per_scene for s in selected)
    total = sum(len(s) for s in selected)
    observational = sum(q.kind == OBSERVATIONAL for s in selected for q in s)
    assert abs(observational - ratio * total) <= 1.0


def test_selection_fills_scenes_when_both_kinds_are_plentiful():
    candidates = [[_fake(OBSERVATIONAL)] * 3 + [_fake(INFERENTIAL)] * 3 for _ in range(100)]
    selected = select_questions(candidates, 0.74, 2)
    observational = sum(q.kind == OBSERVATIONAL for s in selected for q in s)
    assert sum(len(s) for s in selected) == 200 and observational == 148
    with pytest.raises(ValueError):
        select_questions(candidates, 1.5, 2)


def test_selection_caps_questions_whose_every_choice_is_correct():
    # Half the candidates are all-correct and come first: at most 10% of the picks may be.
    candidates = [[_fake(OBSERVATIONAL, all_correct=True), _fake(OBSERVATIONAL)] * 2 for _ in range(100)]
    selected = [q for s in select_questions(candidates, 1.0, 2) for q in s]
    assert len(selected) == 200
    assert sum(q.all_correct for q in selected) == 20


DISTINCT = [
    ObjectSpec(0, "red", "rubber", "cube"),
    ObjectSpec(1, "blue", "metal", "sphere"),
    ObjectSpec(2, "green", "rubber", "cylinder"),
    ObjectSpec(3, "yellow", "metal", "cube"),
]


def test_seen_question_lists_every_collision_and_answers_with_them():
    # A chain red -> blue -> green; yellow rests. 6 pairs: 2 collide, so 3 choices: both and one other.
    factual = _pairs((0, 1), (1, 2))
    for seed in range(20):
        probe = seen_question(9, DISTINCT, factual, np.random.default_rng(seed), by_color=True)
        listed = {c.pair: c.correct for c in probe.choices}
        assert len(listed) == 3 and {p for p, ok in listed.items() if ok} == {(0, 1), (1, 2)}
        for c in probe.choices:
            assert all(d.endswith(" object") for d in parse_choice(c.text))  # by colour alone
        entry = probe.to_json()
        assert entry["question_type"] == "descriptive" and len(entry["choices"]) == 3
    # Nothing collides: no probe (it would have no correct choice).
    assert seen_question(9, DISTINCT, set(), np.random.default_rng(0)) is None
    # Colour descriptions need distinct colours.
    with pytest.raises(ValueError, match="shares its colour"):
        minimal_description(OBJECTS[0], OBJECTS, np.random.default_rng(0), by_color=True)
