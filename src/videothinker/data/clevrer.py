"""CLEVRER counterfactual questions -> Video-R1-style training records labelled observational / inferential.

Input is the official release (or the causal lab, which writes the same format): a questions file (a
list of scenes, each with questions of all four types; only the counterfactual ones are kept), one
annotation per video (object_property, motion_trajectory, collision) and the mp4 videos. Annotations
and videos may sit flat in their folders or in the official sub-folders of 1000
(``annotation_10000-11000/annotation_10000.json``).

Each question is labelled by one of two rules:

- ``answer`` (default): observational iff, for every choice, "correct" == (the choice's collision
  occurs in the video) XOR (the question asks what will *not* happen), i.e. the video alone answers
  it. This needs the removed object and each choice's pair of objects, which are read from the
  natural-language text ("the red rubber cube", "the cylinder", "the cyan object") and resolved
  against the annotation's object_property; the choices' programs are not used.
- ``object``: observational iff the removed object takes part in no annotated collision (the count
  behind the paper's "74% observational").

The causal lab's perception probes (``seen.json``: question_type "descriptive" with choices, "Which of
the following collisions happen in the video?") convert the same way into records labelled
question_kind "seen", their answers checked against the annotation's collisions; the official
descriptive questions, which have no choices, are ignored like the other types.

Questions with no correct choice are dropped and counted. A description that matches no object or
several, an unreadable choice, a missing annotation or video raise `ClevrerError` naming the scene
and question, or, with ``skip_invalid``, are skipped and counted.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

COLORS = ("gray", "red", "blue", "green", "brown", "yellow", "cyan", "purple")
MATERIALS = ("metal", "rubber")
SHAPES = ("cube", "sphere", "cylinder")
RULES = ("answer", "object")
KINDS = ("observational", "inferential", "seen", "all")
_ATTRIBUTE = {
    **dict.fromkeys(COLORS, "color"),
    **dict.fromkeys(MATERIALS, "material"),
    **dict.fromkeys(SHAPES, "shape"),
}
_SYNONYMS = {"grey": "gray", "ball": "sphere", "block": "cube"}
_FILLER = {"the", "a", "an", "object", "thing"}
_NUMBERED_RE = re.compile(r"^(annotation|video)_(\d+)\.(json|mp4)$")

_REMOVED_RES = (
    re.compile(r"\bif (?P<obj>.+?) (?:is|were|was|gets|got) removed\b"),
    re.compile(r"\bwithout (?P<obj>.+?)(?:,|\?|$| what\b| which\b| will\b| would\b)"),
)
_NEGATION_RE = re.compile(r"\bnot\b|n't\b")
_CHOICE_RES = (
    re.compile(r"^(?:the )?collision between (?P<a>.+?) and (?P<b>.+?)(?: will)?(?: happens?| occurs?)?$"),
    re.compile(r"^(?P<a>.+?)(?:'s)? (?:will )?(?:collides?|colliding) with (?P<b>.+)$"),
    re.compile(r"^(?P<a>.+?) and (?P<b>.+?) (?:will )?collide(?: with each other)?$"),
)


class ClevrerError(ValueError):
    """A question (or file) the converter cannot use, with where it is: file, scene, question."""

    def __init__(
        self,
        message: str,
        *,
        source: str | Path | None = None,
        scene: int | None = None,
        question: Any = None,
        reason: str = "invalid",
    ):
        where = [str(source)] if source is not None else []
        if scene is not None:
            where.append(f"scene {scene}")
        if question is not None:
            where.append(f"question {question}")
        super().__init__((", ".join(where) + ": " if where else "") + message)
        self.message, self.source, self.scene, self.question, self.reason = (
            message,
            source,
            scene,
            question,
            reason,
        )

    def in_file(self, source: str | Path) -> ClevrerError:
        """The same error, naming the questions file it comes from."""
        return ClevrerError(
            self.message, source=source, scene=self.scene, question=self.question, reason=self.reason
        )


@dataclass
class Annotation:
    """The parts of one annotation the converter needs."""

    objects: dict[int, dict[str, str]]  # object_id -> {color, material, shape}
    collisions: set[frozenset[int]]  # pairs that collide at least once

    @classmethod
    def load(cls, path: Path, scene_index: int | None = None) -> Annotation:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            objects = {
                int(o["object_id"]): {k: str(o[k]).lower() for k in ("color", "material", "shape")}
                for o in raw["object_property"]
            }
            collisions = {frozenset(int(i) for i in c["object_ids"]) for c in raw.get("collision", [])}
        except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ClevrerError(
                f"annotation {path} is not in the CLEVRER schema: {exc!r}",
                scene=scene_index,
                reason="bad annotation",
            ) from None
        return cls(objects, collisions)


def parse_description(text: str) -> dict[str, str]:
    """Read an object description into attributes.

    >>> parse_description("the red rubber cube")
    {'color': 'red', 'material': 'rubber', 'shape': 'cube'}
    >>> parse_description("The cyan object")
    {'color': 'cyan'}
    """
    attributes: dict[str, str] = {}
    for word in text.lower().replace("'s", "").split():
        word = _SYNONYMS.get(word, word)
        if word in _FILLER:
            continue
        name = _ATTRIBUTE.get(word)
        if name is None or name in attributes:
            raise ValueError(f"cannot read object description {text!r} (at {word!r})")
        attributes[name] = word
    if not attributes:
        raise ValueError(f"object description {text!r} names no colour, material or shape")
    return attributes


def resolve(text: str, objects: dict[int, dict[str, str]], exclude: int | None = None) -> int:
    """The id of the one object a description matches. When several match and one of them is
    ``exclude`` (the removed object, which a choice cannot mean), the others are tried alone."""
    wanted = parse_description(text)
    matches = [i for i, o in objects.items() if all(o.get(k) == v for k, v in wanted.items())]
    if len(matches) > 1 and exclude in matches:
        matches.remove(exclude)
    if len(matches) != 1:
        found = "no object" if not matches else f"{len(matches)} objects ({', '.join(map(str, matches))})"
        raise ValueError(f"description {text!r} matches {found}")
    return matches[0]


def _normalise(text: str) -> str:
    return " ".join(text.strip().rstrip(".?!").lower().split())


def parse_question(text: str) -> tuple[str, bool]:
    """(description of the removed object, whether the question asks what will *not* happen).

    >>> parse_question("Which of the following will not happen if the red cube is removed?")
    ('the red cube', True)
    >>> parse_question("Without the cyan sphere, what will happen?")
    ('the cyan sphere', False)
    """
    normal = " ".join(text.strip().lower().split())
    for pattern in _REMOVED_RES:
        match = pattern.search(normal)
        if match:
            return match.group("obj").strip(), bool(_NEGATION_RE.search(normal))
    raise ValueError(f"cannot find the removed object in {text!r}")


def parse_choice(text: str) -> tuple[str, str]:
    """The two object descriptions of a collision choice.

    >>> parse_choice("The cyan sphere collides with the metal cube")
    ('the cyan sphere', 'the metal cube')
    >>> parse_choice("The red object and the cylinder collide")
    ('the red object', 'the cylinder')
    """
    normal = _normalise(text)
    for pattern in _CHOICE_RES:
        match = pattern.match(normal)
        if match:
            return match.group("a").strip(), match.group("b").strip()
    raise ValueError(f"cannot read choice {text!r} as a collision between two objects")


def _index_files(folder: Path, prefix: str, suffix: str, frame_folders: bool = False) -> dict[str, Path]:
    """File name -> path for every ``prefix_NNNNN.suffix`` under ``folder`` (flat or nested). With
    ``frame_folders``, a folder ``prefix_NNNNN/`` (a video stored as image frames) stands for
    ``prefix_NNNNN.suffix`` where no such file exists."""
    if not folder.is_dir():
        raise FileNotFoundError(f"folder not found: {folder}")
    found: dict[str, Path] = {}
    folders: dict[str, Path] = {}
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            m = _NUMBERED_RE.match(name)
            if m and m.group(1) == prefix and m.group(3) == suffix:
                found.setdefault(name, Path(root) / name)
        if frame_folders:
            for name in dirs:
                m = _NUMBERED_RE.match(f"{name}.{suffix}")
                if m and m.group(1) == prefix:
                    folders.setdefault(f"{name}.{suffix}", Path(root) / name)
    return {**folders, **found}


@dataclass
class ConversionReport:
    """Counts of a conversion: kept records per kind, and what was left out and why."""

    kept: Counter = field(default_factory=Counter)
    counterfactual: int = 0
    other_types: int = 0
    no_correct: int = 0
    other_kind: int = 0
    skipped: Counter = field(default_factory=Counter)
    first_errors: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.kept.values())

    def lines(self) -> list[str]:
        total = self.total
        out = [
            f"{self.counterfactual} counterfactual questions or lab probes read ({self.other_types} of other types ignored)"
        ]
        for kind in ("observational", "inferential", "seen"):
            if kind == "seen" and not self.kept[kind]:
                continue
            share = f" ({100 * self.kept[kind] / total:.1f}%)" if total else ""
            out.append(f"  {kind}: {self.kept[kind]}{share}")
        out.append(f"  records written: {total}")
        if self.no_correct:
            out.append(f"  dropped, no correct choice: {self.no_correct}")
        if self.other_kind:
            out.append(f"  left out by --kind: {self.other_kind}")
        for reason, count in sorted(self.skipped.items()):
            out.append(f"  skipped as invalid ({reason}): {count}")
        return out


def _label(
    removed: int,
    pairs: list[frozenset[int]],
    answers: list[bool],
    negated: bool,
    annotation: Annotation,
    rule: str,
) -> str:
    if rule == "object":
        observational = not any(removed in pair for pair in annotation.collisions)
    else:
        observational = all(
            ans == ((pair in annotation.collisions) != negated) for pair, ans in zip(pairs, answers)
        )
    return "observational" if observational else "inferential"


def is_seen_probe(question: dict) -> bool:
    """Whether a questions-file entry is one of the causal lab's perception probes: a "descriptive"
    question with choices (the official descriptive questions have none)."""
    return question.get("question_type") == "descriptive" and bool(question.get("choices"))


def question_record(
    scene_index: int,
    question: dict,
    annotation: Annotation,
    video: str,
    rule: str = "answer",
    frame_fps: float | None = None,
) -> dict | None:
    """The record of one counterfactual question, or None when it has no correct choice. With
    ``frame_fps``, ``video`` is a folder of frames played at that rate (data_type "frame", field fps).

    Raises ClevrerError when the question or its choices cannot be read.
    """
    qid = question.get("question_id")

    def fail(message: str, reason: str) -> ClevrerError:
        return ClevrerError(message, scene=scene_index, question=qid, reason=reason)

    choices = question.get("choices")
    text = question.get("question")
    if not isinstance(text, str) or not isinstance(choices, list) or not choices:
        raise fail("needs a 'question' text and a non-empty 'choices' list", "bad question")
    try:
        answers = [str(c["answer"]).lower() == "correct" for c in choices]
        texts = [str(c["choice"]).strip() for c in choices]
    except (KeyError, TypeError):
        raise fail("every choice needs 'choice' and 'answer'", "bad question") from None
    if not any(answers):
        return None
    probe = is_seen_probe(question)
    if probe:
        removed, negated = None, False
    else:
        try:
            removed_text, negated = parse_question(text)
        except ValueError as exc:
            raise fail(str(exc), "unreadable question") from None
        try:
            removed = resolve(removed_text, annotation.objects)
        except ValueError as exc:
            raise fail(f"removed object: {exc}", "unresolved description") from None
    pairs = []
    if rule == "answer" or probe:
        for choice_id, choice in enumerate(texts):
            try:
                descriptions = parse_choice(choice)
            except ValueError as exc:
                raise fail(f"choice {choice_id}: {exc}", "unreadable choice") from None
            try:
                a, b = (resolve(d, annotation.objects, exclude=removed) for d in descriptions)
            except ValueError as exc:
                raise fail(f"choice {choice_id}: {exc}", "unresolved description") from None
            if a == b:
                raise fail(f"choice {choice_id}: {choice!r} names the same object twice", "unreadable choice")
            pairs.append(frozenset((a, b)))
    if probe:
        wrong = [
            k for k, (pair, ans) in enumerate(zip(pairs, answers)) if ans != (pair in annotation.collisions)
        ]
        if wrong:
            raise fail(
                f"choice {wrong[0]}: the probe's answer disagrees with the annotation's collisions",
                "bad question",
            )
        kind = "seen"
    else:
        kind = _label(removed, pairs, answers, negated, annotation, rule)
    letters = [chr(ord("A") + i) for i in range(len(texts))]
    options = [f"{letter}. {choice}" for letter, choice in zip(letters, texts)]
    solution = ",".join(letter for letter, ans in zip(letters, answers) if ans)
    record = {
        "problem_id": f"{scene_index}_{qid}",
        "problem": text.strip() + "\nOptions:\n" + "\n".join(options),
        "options": options,
        "solution": f"<answer>{solution}</answer>",
        "video": video,
        "data_type": "video" if frame_fps is None else "frame",
        "problem_type": "multiple choice",
        "scene_index": scene_index,
        "question_id": qid,
        "question_kind": kind,
    }
    if frame_fps is not None:
        record["fps"] = frame_fps
    return record


def convert(
    questions: str | Path,
    annotations: str | Path,
    videos: str | Path,
    out: str | Path,
    *,
    rule: str = "answer",
    kind: str = "all",
    absolute_paths: bool = False,
    skip_invalid: bool = False,
    frame_fps: float | None = None,
) -> tuple[list[dict], ConversionReport]:
    """Records of every counterfactual question of an official questions file (see the module docstring).

    Video paths are relative to the folder of ``out`` (where the records will be written), so the file
    loads with no video root; ``absolute_paths`` writes absolute ones instead. With ``frame_fps``, a
    video may also be a folder of frames named like the video without its suffix (``video_00042/``, as
    `videothinker lab generate --video-format png` writes); its records get data_type "frame" and that fps.
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    questions = Path(questions)
    if not questions.is_file():
        raise FileNotFoundError(f"questions file not found: {questions}")
    try:
        scenes = json.loads(questions.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ClevrerError(f"{questions} is not valid JSON (line {exc.lineno}): {exc.msg}") from None
    if not isinstance(scenes, list):
        raise ClevrerError(f"{questions}: expected a list of scenes (the official questions schema)")
    annotation_files = _index_files(Path(annotations), "annotation", "json")
    if frame_fps is not None and not frame_fps > 0:
        raise ValueError(f"frame_fps must be positive, got {frame_fps}")
    video_files = _index_files(Path(videos), "video", "mp4", frame_folders=frame_fps is not None)
    out_dir = Path(out).resolve().parent
    report = ConversionReport()
    records = []

    for position, scene in enumerate(scenes):
        if not isinstance(scene, dict):
            raise ClevrerError(f"{questions}: scene entry {position} is not an object")
        counterfactual = [
            q
            for q in scene.get("questions", [])
            if q.get("question_type") == "counterfactual" or is_seen_probe(q)
        ]
        report.counterfactual += len(counterfactual)
        report.other_types += len(scene.get("questions", [])) - len(counterfactual)
        if not counterfactual:
            continue
        try:
            scene_index, annotation, video_path = _scene_inputs(scene, annotation_files, video_files)
        except ClevrerError as error:
            if not skip_invalid:
                raise error.in_file(questions) from None
            _skip(report, error.in_file(questions), len(counterfactual))
            continue
        video = str(video_path) if absolute_paths else os.path.relpath(video_path, out_dir)
        for question in counterfactual:
            try:
                record = question_record(
                    scene_index, question, annotation, video, rule, frame_fps if video_path.is_dir() else None
                )
            except ClevrerError as error:
                if not skip_invalid:
                    raise error.in_file(questions) from None
                _skip(report, error.in_file(questions), 1)
                continue
            if record is None:
                report.no_correct += 1
            elif kind not in ("all", record["question_kind"]):
                report.other_kind += 1
            else:
                report.kept[record["question_kind"]] += 1
                records.append(record)
    return records, report


def _scene_inputs(
    scene: dict,
    annotation_files: dict[str, Path],
    video_files: dict[str, Path],
) -> tuple[int, Annotation, Path]:
    """The scene index, annotation and video path of a questions-file entry."""
    try:
        scene_index = int(scene["scene_index"])
    except (KeyError, TypeError, ValueError):
        raise ClevrerError("a scene entry has no valid 'scene_index'", reason="bad question") from None
    name = f"annotation_{scene_index:05d}.json"
    if name not in annotation_files:
        raise ClevrerError(f"{name} not found", scene=scene_index, reason="missing annotation")
    video = scene.get("video_filename") or f"video_{scene_index:05d}.mp4"
    if video not in video_files:
        raise ClevrerError(f"{video} not found", scene=scene_index, reason="missing video")
    return scene_index, Annotation.load(annotation_files[name], scene_index), video_files[video].resolve()


def _skip(report: ConversionReport, error: ClevrerError, count: int) -> None:
    report.skipped[error.reason] += count
    if len(report.first_errors) < 5:
        report.first_errors.append(str(error))


def write_records(records: list[dict], out: str | Path) -> None:
    """Write raw records as a .jsonl file (one per line) or, for any other suffix, a .json list."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        if out.suffix == ".jsonl":
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        else:
            json.dump(records, f, ensure_ascii=False, indent=1)
    tmp.replace(out)
