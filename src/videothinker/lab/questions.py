"""Counterfactual questions of the lab, phrased as CLEVRER phrases them, and the selection that sets
the share of observational questions.

A question removes one object X and lists 3 or 4 collisions between the other objects; the correct
choices are those that happen (or, for "... will not happen ...", do not happen) when the scene is
simulated again without X. Each choice's pair falls in one of four classes:

- in the video and in the counterfactual (unchanged), in neither (unchanged),
- in the video only (X started the chain that caused it), in the counterfactual only (X was in the
  way: without it an object travels on and hits another one).

A question is *observational* when all its choices are unchanged (the video answers it) and
*inferential* otherwise: the answer rule of `videothinker.data.clevrer`. Every object gives at most one
candidate question:

- removing it changes some collision between the others: an inferential question listing a
  video-only and a counterfactual-only choice when both exist;
- it takes part in no collision: an observational question;
- it collides, but its removal changes no collision between the others (it ends a chain): none, so
  that in the lab "observational" means the same under both rules of the converter (the removed
  object takes part in no collision, and the video answers the question).

Each question has at least one correct and one wrong choice, except an inferential one whose removal
cancels every collision ("what will not happen?": all of them); `select_questions` keeps those under
10% of the questions while it picks among the candidates of all scenes so that the observational
share matches the requested ratio.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np

from videothinker.lab.scene import ObjectSpec

OBSERVATIONAL, INFERENTIAL = "observational", "inferential"
# Attribute subsets tried for a description, smallest first.
_SUBSETS = [s for k in (1, 2, 3) for s in combinations(("color", "material", "shape"), k)]
_QUESTION_TEMPLATES = {
    False: ("Which of the following will happen if {x} is removed?", "Without {x}, what will happen?"),
    True: ("Which of the following will not happen if {x} is removed?", "Without {x}, what will not happen?"),
}
_CHOICE_TEMPLATES = ("The {a} collides with the {b}", "The {a} and the {b} collide")


@dataclass(frozen=True)
class Description:
    """A description of one object by some of its attributes: "red metal cube", "cube", "red object"."""

    color: str | None = None
    material: str | None = None
    shape: str | None = None

    @property
    def words(self) -> str:
        parts = [w for w in (self.color, self.material) if w] + [self.shape or "object"]
        return " ".join(parts)

    def program(self) -> list[str]:
        """The CLEVRER program that selects the object: objects, red, filter_color, ..., unique."""
        out = ["objects"]
        for name in ("color", "material", "shape"):
            value = getattr(self, name)
            if value:
                out += [value, f"filter_{name}"]
        return out + ["unique"]

    def matches(self, obj: ObjectSpec) -> bool:
        return all(getattr(self, n) in (None, getattr(obj, n)) for n in ("color", "material", "shape"))


def minimal_description(
    obj: ObjectSpec, objects: list[ObjectSpec], rng: np.random.Generator, by_color: bool = False
) -> Description:
    """A shortest description that matches ``obj`` and no other object (one of the shortest, at random).
    With ``by_color`` (scenes whose objects all differ in colour): the colour alone, "the red object"."""
    if by_color:
        desc = Description(color=obj.color)
        if sum(desc.matches(o) for o in objects) != 1:
            raise ValueError(
                f"object {obj.object_id} shares its colour {obj.color}: cannot describe it by colour"
            )
        return desc
    for size in (1, 2, 3):
        options = []
        for subset in (s for s in _SUBSETS if len(s) == size):
            desc = Description(**{name: getattr(obj, name) for name in subset})
            if sum(desc.matches(o) for o in objects) == 1:
                options.append(desc)
        if options:
            return options[int(rng.integers(len(options)))]
    raise ValueError(f"object {obj.object_id} has no unique description: two objects share all attributes")


@dataclass(frozen=True)
class Choice:
    """One listed collision: the pair, its text and program, and whether it is a correct answer."""

    pair: tuple[int, int]
    text: str
    program: list[str]
    correct: bool
    changed: bool

    def to_json(self, choice_id: int) -> dict:
        return {
            "choice_id": choice_id,
            "choice": self.text,
            "program": self.program,
            "answer": "correct" if self.correct else "wrong",
        }


@dataclass(frozen=True)
class Question:
    """One counterfactual question about a scene (its id is given when it is written)."""

    scene_index: int
    removed: int
    negated: bool
    text: str
    program: list[str]
    choices: list[Choice]

    @property
    def all_correct(self) -> bool:
        return all(c.correct for c in self.choices)

    @property
    def kind(self) -> str:
        """Observational when no listed collision changes without the removed object."""
        return INFERENTIAL if any(c.changed for c in self.choices) else OBSERVATIONAL

    def to_json(self, question_id: int) -> dict:
        return {
            "question_id": question_id,
            "question": self.text,
            "question_type": "counterfactual",
            "program": self.program,
            "choices": [c.to_json(i) for i, c in enumerate(self.choices)],
        }


def _choice(
    pair: frozenset[int], desc: dict[int, Description], rng: np.random.Generator, correct: bool, changed: bool
) -> Choice:
    """A listed collision in one of CLEVRER's phrasings, with its program."""
    a, b = (int(i) for i in rng.permutation(sorted(pair)))
    template = _CHOICE_TEMPLATES[int(rng.integers(len(_CHOICE_TEMPLATES)))]
    program = [
        "all_events",
        *desc[a].program(),
        "filter_collision",
        *desc[b].program(),
        "filter_collision",
        "unique",
    ]
    return Choice(
        (min(a, b), max(a, b)), template.format(a=desc[a].words, b=desc[b].words), program, correct, changed
    )


def _pick_choices(
    rng: np.random.Generator,
    pairs: list[frozenset[int]],
    required: list[frozenset[int]],
    count: int,
    correct,
) -> list[frozenset[int]] | None:
    """``count`` pairs including ``required``, with at least one correct and one wrong pair, or None.

    With ``required`` pairs (an inferential question) and no wrong pair at all, every choice may be
    correct: "what will not happen if the striker is removed?" when it cancels every collision.
    """
    chosen = list(required)
    for want in (True, False):
        if not any(correct(p) == want for p in chosen):
            pool = [p for p in pairs if p not in chosen and correct(p) == want]
            if pool:
                chosen.append(pool[int(rng.integers(len(pool)))])
            elif want or not required:
                return None
    rest = [p for p in pairs if p not in chosen]
    extra = rng.permutation(len(rest))[: max(0, count - len(chosen))]
    chosen += [rest[int(i)] for i in extra]
    return [chosen[int(i)] for i in rng.permutation(len(chosen))]


def candidate_question(
    scene_index: int,
    objects: list[ObjectSpec],
    removed: int,
    factual: set[frozenset[int]],
    counterfactual: set[frozenset[int]],
    rng: np.random.Generator,
    by_color: bool = False,
) -> Question | None:
    """The candidate question that removes object ``removed``, or None when none can be asked.

    Args:
        factual: pairs that collide in the video.
        counterfactual: pairs that collide when the scene is simulated without ``removed``.
        by_color: name objects by colour alone (`minimal_description`).
    """
    others = [o.object_id for o in objects if o.object_id != removed]
    pairs = [frozenset(p) for p in combinations(others, 2)]
    if len(pairs) < 3:
        return None
    count = min(len(pairs), 4 if rng.random() < 0.7 else 3)
    gone = [p for p in pairs if p in factual and p not in counterfactual]
    new = [p for p in pairs if p in counterfactual and p not in factual]
    required = [group[int(rng.integers(len(group)))] for group in (gone, new) if group]
    participant = any(removed in pair for pair in factual)
    if participant and not required:
        return None  # the removed object collides but changes no listable collision: neither kind is clean
    # Observational candidates may only list unchanged pairs.
    pool = pairs if required else [p for p in pairs if (p in factual) == (p in counterfactual)]
    if len(pool) < 3:
        return None
    first = bool(rng.random() < 0.5)
    for negated in (first, not first):
        chosen = _pick_choices(rng, pool, required, count, lambda p, n=negated: (p in counterfactual) != n)
        if chosen is not None:
            break
    else:
        return None

    desc = {o.object_id: minimal_description(o, objects, rng, by_color) for o in objects}
    choices = [
        _choice(
            pair,
            desc,
            rng,
            correct=(pair in counterfactual) != negated,
            changed=(pair in factual) != (pair in counterfactual),
        )
        for pair in chosen
    ]
    templates = _QUESTION_TEMPLATES[negated]
    text = templates[int(rng.integers(len(templates)))].format(x="the " + desc[removed].words)
    program = ["all_events", *desc[removed].program(), "get_counterfact", "belong_to"] + (
        ["negate"] if negated else []
    )
    return Question(scene_index, removed, negated, text, program, choices)


def _take(pool: list[Question], all_correct_ok: bool) -> Question | None:
    """Remove and return the first question of ``pool`` that may be taken now, or None."""
    for i, question in enumerate(pool):
        if all_correct_ok or not question.all_correct:
            return pool.pop(i)
    return None


def select_questions(
    candidates: list[list[Question]], ratio: float, per_scene: int, max_all_correct: float = 0.1
) -> list[list[Question]]:
    """Pick up to ``per_scene`` candidates per scene so that the observational share tracks ``ratio``.

    Greedy over scenes in order: each pick takes the kind that brings the running observational count
    nearest to ``ratio`` x the running total; when the scene has none of that kind, the other kind is
    taken only if the count stays within 0.75 questions of the ideal. The count therefore never
    strays more than one question from ``ratio`` x total, whatever the number of scenes. Questions
    whose every choice is correct are taken only while they stay within ``max_all_correct`` of the
    total, so that answering "every option" rarely pays.

    Args:
        candidates: per scene, its candidate questions in a random order.
    """
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"observational ratio must be in [0, 1], got {ratio}")
    n_obs = n_total = n_all_correct = 0
    selected = []
    for scene in candidates:
        pools = {kind: [q for q in scene if q.kind == kind] for kind in (OBSERVATIONAL, INFERENTIAL)}
        chosen: list[Question] = []
        while len(chosen) < per_scene:
            ideal = ratio * (n_total + 1)
            want = OBSERVATIONAL if n_obs + 0.5 <= ideal else INFERENTIAL
            other = INFERENTIAL if want == OBSERVATIONAL else OBSERVATIONAL
            all_correct_ok = n_all_correct + 1 <= max_all_correct * (n_total + 1)
            question = _take(pools[want], all_correct_ok)
            if question is None and abs(n_obs + (other == OBSERVATIONAL) - ideal) <= 0.75:
                question = _take(pools[other], all_correct_ok)
            if question is None:
                break
            chosen.append(question)
            n_obs += question.kind == OBSERVATIONAL
            n_all_correct += question.all_correct
            n_total += 1
        selected.append(chosen)
    return selected


SEEN_QUESTION = "Which of the following collisions happen in the video?"
SEEN_TYPE = "descriptive"


@dataclass(frozen=True)
class SeenQuestion:
    """The perception probe of a scene: which of the listed collisions the video shows.

    It lists every pair that collides in the clip (up to ``max_choices``) and pairs that do not, so
    answering it exactly means reading all of the clip's collisions; the correct choices are the
    collisions the video shows. It is written to ``seen.json`` (question_type "descriptive", with
    choices), never to the counterfactual questions, and the converter labels its record
    question_kind "seen" (`videothinker.data.clevrer`).
    """

    scene_index: int
    choices: list[Choice]

    def to_json(self, question_id: int = 0) -> dict:
        return {
            "question_id": question_id,
            "question": SEEN_QUESTION,
            "question_type": SEEN_TYPE,
            "program": ["all_events", "filter_collision", "belong_to"],
            "choices": [c.to_json(i) for i, c in enumerate(self.choices)],
        }


def seen_question(
    scene_index: int,
    objects: list[ObjectSpec],
    factual: set[frozenset[int]],
    rng: np.random.Generator,
    by_color: bool = False,
    max_choices: int = 4,
) -> SeenQuestion | None:
    """The perception probe of a scene (see `SeenQuestion`), or None when nothing collides (a question
    with no correct choice) or the scene has fewer than 3 pairs."""
    pairs = [frozenset(p) for p in combinations([o.object_id for o in objects], 2)]
    seen = [p for p in pairs if p in factual]
    unseen = [p for p in pairs if p not in factual]
    if not seen or len(pairs) < 3:
        return None
    count = min(len(pairs), max(3, min(max_choices, len(seen) + 1)))
    chosen = [seen[int(i)] for i in rng.permutation(len(seen))[:count]]
    chosen += [unseen[int(i)] for i in rng.permutation(len(unseen))[: count - len(chosen)]]
    chosen = [chosen[int(i)] for i in rng.permutation(len(chosen))]
    desc = {o.object_id: minimal_description(o, objects, rng, by_color) for o in objects}
    return SeenQuestion(
        scene_index, [_choice(p, desc, rng, correct=p in factual, changed=False) for p in chosen]
    )
