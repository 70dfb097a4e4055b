"""Where a model's lost inferential answers go: for each inferential question the base model answered
right and the trained model answers wrong, what the trained model answered instead.

Categories, checked in this order (each answer falls in the first that fits):

- ``format``: no answer could be read (no letters, no answer tag);
- ``video``: the answer the video shows (`ChoiceFacts.shortcut_answer`), the perceptual shortcut;
- ``prior``: the most common answer among the training questions of the same form (what a model that
  ignores the video would say; `videothinker.demo.report.answer_prior`);
- ``fewer``: a proper subset of the right letters (a hop dropped);
- ``more``: a proper superset of the right letters;
- ``between``: letters all from the right answer or the video's, neither whole (a counterfactual
  applied to some choices and the video read for the others);
- ``other``: a set naming a choice that neither happens nor is shown.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

CATEGORIES = ("format", "video", "prior", "fewer", "more", "between", "other")


def prior_answers(train_file: Path) -> dict[tuple[bool, int], str]:
    """The most common solution per question form (asks what will or will not happen; choices)."""
    from videothinker.data.records import load_records
    from videothinker.demo.report import _question_form

    counts: dict[tuple[bool, int], Counter] = defaultdict(Counter)
    for record in load_records(train_file):
        counts[_question_form(record)][record.solution] += 1
    return {form: c.most_common(1)[0][0] for form, c in counts.items()}


def lost_answers(
    records_file: Path, annotations: Path, train_file: Path, base_eval: Path, model_eval: Path
) -> dict[str, int]:
    """Counts of `CATEGORIES` over the inferential questions ``base_eval`` scored right and
    ``model_eval`` wrong, plus ``lost`` (their number) and ``gained`` (the reverse)."""
    from videothinker.answers import extract_answer, parse_choices
    from videothinker.demo.report import _question_form
    from videothinker.eval.benchmarks import load_benchmarks
    from videothinker.eval.predictions import SCORED, latest, read_predictions
    from videothinker.lab.targets import choice_facts, load_annotations

    (bench,) = load_benchmarks([records_file])
    records = [r for r in bench.records if r.question_kind == "inferential"]
    base = latest(read_predictions(base_eval / "predictions.jsonl"))
    model = latest(read_predictions(model_eval / "predictions.jsonl"))
    prior = prior_answers(train_file)
    out = {name: 0 for name in (*CATEGORIES, "lost", "gained")}
    for record, annotation in zip(records, load_annotations(records, annotations), strict=True):
        b, m = base.get((bench.name, record.id)), model.get((bench.name, record.id))
        if b is None or m is None or b.status != SCORED or m.status != SCORED:
            continue
        right = parse_choices(extract_answer(record.solution) or "")
        base_right = parse_choices(b.answer) == right
        answer = parse_choices(m.answer)
        if not base_right and answer == right:
            out["gained"] += 1
        if not base_right or answer == right:
            continue
        out["lost"] += 1
        guess = prior.get(_question_form(record))
        if answer is None:
            out["format"] += 1
        elif answer == (video := parse_choices(choice_facts(record, annotation).shortcut_answer)):
            out["video"] += 1
        elif guess is not None and answer == parse_choices(extract_answer(guess) or ""):
            out["prior"] += 1
        elif right is not None and answer < right:
            out["fewer"] += 1
        elif right is not None and answer > right:
            out["more"] += 1
        elif right is not None and answer <= right | (video or frozenset()):
            out["between"] += 1
        else:
            out["other"] += 1
    return out
