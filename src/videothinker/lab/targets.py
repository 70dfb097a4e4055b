"""What the warm start teaches, read from a scene's annotation: answer targets with a short chain of
thought, open-ended descriptions of the clip, and the perception loss's labels.

Targets spell out a short chain of thought from the scene's annotation, then the answer::

    <think>Seen: A, C. Without it: A, D.</think><answer>A,D</answer>

"Seen" lists the choices whose collision the video shows; "Without it" those that happen once the
object is removed (the counterfactual, read from the question's correct choices); the answer is the
latter, or its complement for "what will *not* happen?". An observational question has the same two
lists; an inferential one does not. The shortcut the paper describes is answering from the first list.
The training loop that uses them is `videothinker.lab.warmstart`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from pathlib import Path

from videothinker.data.clevrer import COLORS, Annotation, parse_choice, parse_question, resolve
from videothinker.data.records import FREE_FORM, Record

# The unordered pairs of CLEVRER colours: the classes of the perception loss (`collision_colors`).
COLOR_PAIRS = [frozenset(pair) for pair in itertools.combinations(COLORS, 2)]


def _letters(letters: list[str]) -> str:
    return ", ".join(letters) if letters else "none"


@dataclass(frozen=True)
class ChoiceFacts:
    """What a counterfactual question's choices are, read from the scene's annotation.

    Attributes:
        seen: letters of the choices whose collision the video shows; unseen: the others.
        happens: letters of the choices that happen once the object is removed (the counterfactual).
        negated: the question asks what will *not* happen.
        colors: the colours of each choice's two objects, in the order the choice names them.
        pairs: each choice's pair named as `collision_names` names a collision ("blue-red").
    """

    seen: list[str]
    unseen: list[str]
    happens: list[str]
    negated: bool
    colors: list[tuple[str, str]] = field(default_factory=list)
    pairs: list[str] = field(default_factory=list)

    @property
    def shortcut_answer(self) -> str:
        """The answer read off the video (the perceptual shortcut): the seen collisions, or the unseen
        ones for "will not happen". Right for observational questions, wrong for inferential ones."""
        return ",".join(self.unseen if self.negated else self.seen)


def choice_facts(record: Record, annotation: Annotation) -> ChoiceFacts:
    """The `ChoiceFacts` of a lab (or CLEVRER) counterfactual record written by
    `videothinker.data.clevrer` (question text + lettered choices), with its scene's annotation. A
    perception probe (question_kind "seen") removes nothing: what happens is what the video shows."""
    if record.question_kind == "seen":
        removed, negated = None, False
    else:
        removed_text, negated = parse_question(record.problem)
        removed = resolve(removed_text, annotation.objects)
    answer = record.solution.split(",")
    seen, unseen, happens, colors, pairs = [], [], [], [], []
    for letter, option in zip(record.letters, record.options):
        a, b = (
            resolve(d, annotation.objects, exclude=removed) for d in parse_choice(option.split(".", 1)[1])
        )
        (seen if frozenset((a, b)) in annotation.collisions else unseen).append(letter)
        colors.append((annotation.objects[a]["color"], annotation.objects[b]["color"]))
        pairs.append(pair_name(annotation, a, b))
        if (letter in answer) != negated:
            happens.append(letter)
    return ChoiceFacts(seen, unseen, happens, negated, colors, pairs)


THINK_STYLES = ("letters", "pairs", "lookup")


def reasoning_target(
    record: Record, annotation: Annotation, style: str = "letters", describe: bool = False
) -> str:
    """The warm-start completion of a counterfactual record: what the video shows, what happens without
    the removed object, and the answer (see the module docstring).

    ``style`` "letters" lists the seen choices ("Seen: A, C."); "pairs" goes through every choice, its
    two objects' colours and whether the video shows their collision ("Seen: A cyan red yes, B blue
    red no, C purple cyan yes."): each verdict then follows the two colours it is about, so the model
    reads the video for one pair at a time, next to the words naming it. "lookup" names each choice's
    pair as the description does ("A cyan-red yes") and gives a verdict per choice for the
    counterfactual too ("Without it: A no, B yes, C yes."): with ``describe``, each seen verdict is
    then whether that exact name is in the description, and each counterfactual verdict sits next to
    the pair and the seen verdict it follows from. With ``describe`` the thinking opens with
    `describe_collisions` ("Collisions: blue-green, blue-red."): the video is read in words without
    the choices' text, and the letters follow from matching that list against them.
    """
    if style not in THINK_STYLES:
        raise ValueError(f"unknown reasoning style {style!r}; styles: {', '.join(THINK_STYLES)}")
    facts = choice_facts(record, annotation)

    def verdict(letter: str, happens: list[str]) -> str:
        return "yes" if letter in happens else "no"

    if style == "pairs":
        think = "Seen: " + ", ".join(
            f"{letter} {a} {b} {verdict(letter, facts.seen)}"
            for letter, (a, b) in zip(record.letters, facts.colors)
        )
    elif style == "lookup":
        think = "Seen: " + ", ".join(
            f"{letter} {pair} {verdict(letter, facts.seen)}"
            for letter, pair in zip(record.letters, facts.pairs)
        )
    else:
        think = f"Seen: {_letters(facts.seen)}"
    if describe:
        think = f"{describe_collisions(annotation)} {think}"
    if record.question_kind == "seen":  # a perception probe: the answer is the "Seen" list
        return f"<think>{think}.</think><answer>{record.solution}</answer>"
    if style == "lookup":
        without = ", ".join(f"{letter} {verdict(letter, facts.happens)}" for letter in record.letters)
    else:
        without = _letters(facts.happens)
    return f"<think>{think}. Without it: {without}.</think><answer>{record.solution}</answer>"


def collision_names(annotation: Annotation) -> list[str]:
    """The clip's colliding pairs, each as two object names joined by "-" and sorted, the pairs sorted:
    an object is named by its colour where no other object of the scene has it, else by colour,
    material and shape.

    >>> a = Annotation({0: {"color": "red", "material": "rubber", "shape": "cube"},
    ...                 1: {"color": "blue", "material": "metal", "shape": "sphere"},
    ...                 2: {"color": "green", "material": "rubber", "shape": "cube"}},
    ...                {frozenset((0, 1)), frozenset((1, 2))})
    >>> collision_names(a)
    ['blue-green', 'blue-red']
    """
    return sorted(pair_name(annotation, *pair) for pair in annotation.collisions)


def pair_name(annotation: Annotation, a: int, b: int) -> str:
    """Objects ``a`` and ``b`` of a scene as `collision_names` names their pair: each by its colour
    where no other object of the scene has it, else by colour, material and shape; sorted, joined by "-".

    >>> pair_name(Annotation({0: {"color": "red"}, 1: {"color": "blue"}}, set()), 0, 1)
    'blue-red'
    """
    colours = [o["color"] for o in annotation.objects.values()]

    def name(i: int) -> str:
        o = annotation.objects[i]
        return o["color"] if colours.count(o["color"]) == 1 else f"{o['color']} {o['material']} {o['shape']}"

    return "-".join(sorted((name(a), name(b))))


def collision_list(annotation: Annotation) -> str:
    """The `collision_names` joined by ", "; "none" without a collision."""
    return ", ".join(collision_names(annotation)) or "none"


def describe_collisions(annotation: Annotation) -> str:
    """The clip's collisions in a canonical order, from the annotation alone (not the question): the
    `collision_list` after "Collisions: ".

    >>> describe_collisions(Annotation({0: {"color": "red"}}, set()))
    'Collisions: none.'
    """
    return f"Collisions: {collision_list(annotation)}."


def read_collisions(text: str) -> frozenset[str] | None:
    """The pairs of the first "Collisions: ..." sentence of a completion (the `describe_collisions`
    format); None when the completion has none.

    >>> sorted(read_collisions("<think>Collisions: blue-red, green-red. Seen: A.</think>"))
    ['blue-red', 'green-red']
    >>> read_collisions("<think>Collisions: none. Seen: none.</think>")
    frozenset()
    """
    start = text.find("Collisions: ")
    if start < 0:
        return None
    body = text[start + len("Collisions: ") :].split(".", 1)[0]
    return frozenset() if body == "none" else frozenset(p.strip() for p in body.split(","))


def collisions_described(output: str, annotation: Annotation) -> bool:
    """Whether a completion describes the clip's collisions exactly (every pair, no other)."""
    said = read_collisions(output)
    return said is not None and said == frozenset(collision_names(annotation))


def collision_colors(annotation: Annotation) -> list[float]:
    """Which colour pairs collide in a scene: 1.0 at the index in `COLOR_PAIRS` of each colliding
    pair's two colours, 0.0 elsewhere (a pair of one colour, possible only when colours repeat, is
    left out). The targets of the warm start's perception loss.

    >>> objects = {i: {"color": c} for i, c in enumerate(["red", "blue", "green"])}
    >>> labels = collision_colors(Annotation(objects, {frozenset((0, 1))}))
    >>> [sorted(COLOR_PAIRS[i]) for i, v in enumerate(labels) if v]
    [['blue', 'red']]
    """
    labels = [0.0] * len(COLOR_PAIRS)
    for pair in annotation.collisions:
        colors = frozenset(annotation.objects[i]["color"] for i in pair)
        if colors in COLOR_PAIRS:
            labels[COLOR_PAIRS.index(colors)] = 1.0
    return labels


DESCRIBE_COLORS = "What colors are the objects in the video?"
DESCRIBE_COLLISIONS = "Which objects collide in the video? Name each pair by its colors."


def description_records(records: list[Record], annotations: str | Path) -> tuple[list[Record], list[str]]:
    """Two open-ended descriptive questions per scene of ``records`` (free-form, with their targets):
    the colours of its objects, and the colour pairs that collide. Their text holds nothing of the
    answer, so only the video can lower their loss: they make the warm start read the frames, where
    a multiple-choice probe also lets the choices' text be learnt (the warm start's own probes and
    questions alone led to models whose loss did not depend on the video, docs/DEMO.md).

    Colours are listed in `COLORS` order; pairs as `collision_list` writes them ("blue-green,
    blue-red", "none" when nothing collides). The records keep the scene's video and scene_index.
    """
    order = {c: i for i, c in enumerate(COLORS)}
    out, targets, scenes = [], [], set()
    for record, annotation in zip(records, load_annotations(records, annotations)):
        scene = int(record.extra["scene_index"])
        if scene in scenes or record.video is None:
            continue
        scenes.add(scene)
        colors = sorted({o["color"] for o in annotation.objects.values()}, key=order.get)
        said = collision_list(annotation)
        for problem, answer, think in (
            (DESCRIBE_COLORS, ", ".join(colors), f"Seen: {', '.join(colors)}."),
            (DESCRIBE_COLLISIONS, said, f"Seen: {said}."),
        ):
            out.append(
                replace(
                    record,
                    problem=problem,
                    options=[],
                    solution=answer,
                    problem_type=FREE_FORM,
                    question_kind=None,
                    id=f"{record.id}-describe-{len(out)}",
                )
            )
            targets.append(f"<think>{think}</think><answer>{answer}</answer>")
    return out, targets


def load_annotations(records: list[Record], annotations: str | Path) -> list[Annotation]:
    """The annotation of each record's scene, from the flat folder ``annotations``
    (``annotation_<scene_index:05d>.json``, the lab's layout)."""
    cache: dict[int, Annotation] = {}
    for record in records:
        index = int(record.extra["scene_index"])
        if index not in cache:
            cache[index] = Annotation.load(Path(annotations) / f"annotation_{index:05d}.json", index)
    return [cache[int(r.extra["scene_index"])] for r in records]


def reasoning_targets(
    records: list[Record], annotations: str | Path, style: str = "letters", describe: bool = False
) -> list[str]:
    """`reasoning_target` of each record (annotations as `load_annotations` reads them)."""
    return [
        reasoning_target(r, a, style, describe)
        for r, a in zip(records, load_annotations(records, annotations))
    ]
