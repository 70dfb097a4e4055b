"""Records of the Video-R1 JSON family: one typed record, loaded from .json or .jsonl and validated.

The family has many members in the wild; this loader reads all of them into one shape:

- options as a list of "A. ..." strings, as a bare list ("red", "blue"), or embedded in ``problem``
  (with a bare list or no list at all); embedded options are moved out of ``problem`` into ``options``;
- ``problem_type`` missing (multiple choice), or any of the known types and their spelling variants;
- the answer in ``solution`` ("<answer>A</answer>", "A", "A,C") or, failing that, in ``answer``
  (a letter, a letter set, or the text of one option);
- ``data_type`` video, image or frame (a folder of frames);
- every other field kept verbatim in ``extra``.

Video paths resolve against a video root: a leading "/" in the file is relative to that root, as the
family uses it ("/MVBench/clevrer/video_validation/video_12600.mp4").
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from videothinker.answers import extract_answer, parse_choices, parse_number

MULTIPLE_CHOICE = "multiple choice"
NUMERICAL = "numerical"
REGRESSION = "regression"
OCR = "OCR"
FREE_FORM = "free-form"
PROBLEM_TYPES = (MULTIPLE_CHOICE, NUMERICAL, REGRESSION, OCR, FREE_FORM)
_PROBLEM_TYPE_ALIASES = {
    "multiple choice": MULTIPLE_CHOICE,
    "multiple-choice": MULTIPLE_CHOICE,
    "multiple_choice": MULTIPLE_CHOICE,
    "multi-choice": MULTIPLE_CHOICE,
    "mc": MULTIPLE_CHOICE,
    "numerical": NUMERICAL,
    "numeric": NUMERICAL,
    "regression": REGRESSION,
    "ocr": OCR,
    "free-form": FREE_FORM,
    "free form": FREE_FORM,
    "free_form": FREE_FORM,
    "open-ended": FREE_FORM,
}
DATA_TYPES = ("video", "image", "frame")
# observational / inferential: counterfactual questions (docs/DATA.md); seen: the causal lab's perception
# probes, "which of these collisions does the video show?" (docs/LAB.md).
QUESTION_KINDS = ("observational", "inferential", "seen")

# An option line inside a problem: "A. text", "(B) text", "C) text", "D: text".
_OPTION_LINE_RE = re.compile(r"^\s*\(?([A-Z])[.):]\s*(.+?)\s*$")
_OPTIONS_HEADER_RE = re.compile(r"^\s*(options|choices)\s*:?\s*$", re.IGNORECASE)
_LETTERED_OPTION_RE = re.compile(r"^\s*([A-Z])\.\s")
# Fields the record consumes; everything else lands in `extra`.
_CONSUMED = {"problem", "options", "solution", "problem_type", "data_type", "question_kind"}
_ID_FIELDS = ("problem_id", "question_id", "id", "qid")
_MEDIA_FIELDS = ("video", "path", "image", "video_path")


class RecordError(ValueError):
    """A record that cannot be used, with the file, the record index and the field at fault."""

    def __init__(self, source: str, index: int | None, field_name: str | None, message: str):
        where = source if index is None else f"{source}, record {index}"
        if field_name:
            where += f", field '{field_name}'"
        super().__init__(f"{where}: {message}")
        self.source, self.index, self.field_name = source, index, field_name


@dataclass
class Record:
    """One question of the Video-R1 family, normalised.

    Attributes:
        problem: the question text, without embedded options.
        options: "A. ..." strings for multiple choice; empty for other types.
        solution: the bare correct answer: "A", "A,C" (sorted letters), "3.5", or text.
        problem_type: one of PROBLEM_TYPES.
        video: resolved path of the video, image or frame folder (None for text-only records).
        data_type: "video", "image" or "frame".
        question_kind: "observational", "inferential", or None when the file does not say.
        id: the record's id (problem_id / question_id / id, else its index), as a string.
        extra: every other field of the file, verbatim.
        source: the file the record came from; index: its position there.
    """

    problem: str
    options: list[str]
    solution: str
    problem_type: str
    video: str | None
    data_type: str
    question_kind: str | None = None
    id: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    index: int = 0

    @property
    def letters(self) -> list[str]:
        """The option letters, in order ("A", "B", ...)."""
        return [opt.split(".", 1)[0].strip() for opt in self.options]

    @property
    def tagged_solution(self) -> str:
        """The solution as the family writes it: "<answer>A,C</answer>"."""
        return f"<answer>{self.solution}</answer>"

    def to_json(self) -> dict[str, Any]:
        """The record as a Video-R1-style JSON object (extra fields first, then the normalised ones)."""
        out = dict(self.extra)
        out.update(
            problem=self.problem,
            options=list(self.options),
            solution=self.tagged_solution,
            problem_type=self.problem_type,
            data_type=self.data_type,
        )
        if self.video is not None:
            out.setdefault("video", self.video)
        if self.question_kind is not None:
            out["question_kind"] = self.question_kind
        return out


def split_embedded_options(problem: str) -> tuple[str, list[tuple[str, str]]]:
    """Split trailing lettered option lines (and an "Options:" header) off a problem text.

    Returns the problem without them and the (letter, text) pairs; letters must run A, B, C, ...

    >>> split_embedded_options("Which one?\\nOptions:\\nA. red\\nB. blue")
    ('Which one?', [('A', 'red'), ('B', 'blue')])
    """
    lines = problem.rstrip().split("\n")
    options: list[tuple[str, str]] = []
    while lines:
        match = _OPTION_LINE_RE.match(lines[-1])
        if not match:
            break
        options.insert(0, (match.group(1), match.group(2)))
        lines.pop()
    expected = [chr(ord("A") + i) for i in range(len(options))]
    if len(options) < 2 or [letter for letter, _ in options] != expected:
        return problem.strip(), []
    while lines and (_OPTIONS_HEADER_RE.match(lines[-1]) or not lines[-1].strip()):
        lines.pop()
    return "\n".join(lines).strip(), options


def _as_lettered(options: Iterable[str]) -> list[str]:
    """Give bare options their letters: ["red", "blue"] -> ["A. red", "B. blue"]."""
    options = [str(opt).strip() for opt in options]
    if options and all(_LETTERED_OPTION_RE.match(opt) for opt in options):
        return options
    return [f"{chr(ord('A') + i)}. {opt}" for i, opt in enumerate(options)]


def resolve_media_path(path: str, video_root: str | Path | None, base_dir: Path) -> str:
    """Resolve a media path of the family: relative to ``video_root`` (a leading "/" included) when
    given, else relative to the data file's folder (absolute paths stay absolute)."""
    if video_root is not None:
        return str(Path(video_root) / path.lstrip("/"))
    p = Path(path)
    return str(p if p.is_absolute() else base_dir / p)


def _normalise_problem_type(raw: Any, err) -> str:
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return MULTIPLE_CHOICE
    key = str(raw).strip().lower()
    if key not in _PROBLEM_TYPE_ALIASES:
        raise err("problem_type", f"unknown problem type {raw!r}; expected one of {', '.join(PROBLEM_TYPES)}")
    return _PROBLEM_TYPE_ALIASES[key]


def _choice_solution(raw: dict[str, Any], options: list[str], err) -> str:
    letters = [opt.split(".", 1)[0] for opt in options]
    candidates: list[tuple[str, Any]] = [("solution", raw.get("solution")), ("answer", raw.get("answer"))]
    for name, value in candidates:
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        text = extract_answer(str(value))
        chosen = parse_choices(text)
        if chosen is None and options:
            # An answer given as the text of one option ("answer": "Piling something up").
            texts = {opt.split(".", 1)[1].strip().lower(): opt.split(".", 1)[0] for opt in options}
            if text.lower() in texts:
                chosen = frozenset(texts[text.lower()])
        if chosen is None:
            if name == "solution":
                raise err(name, f"cannot read {value!r} as option letters")
            continue
        if not chosen:
            raise err(name, "no correct choice")
        if options and not chosen <= set(letters):
            raise err(name, f"answer {','.join(sorted(chosen))} is not among the options {''.join(letters)}")
        return ",".join(sorted(chosen))
    raise err("solution", "no correct choice: neither 'solution' nor 'answer' gives one")


def parse_record(
    raw: Any,
    *,
    source: str = "<memory>",
    index: int = 0,
    video_root: str | Path | None = None,
    base_dir: Path | None = None,
) -> Record:
    """Validate and normalise one raw record of the family. Raises RecordError naming the field."""

    def err(field_name: str | None, message: str) -> RecordError:
        return RecordError(source, index, field_name, message)

    if not isinstance(raw, dict):
        raise err(None, f"expected a JSON object, got {type(raw).__name__}")
    problem = raw.get("problem", raw.get("question"))
    if not isinstance(problem, str) or not problem.strip():
        raise err("problem", "missing or empty")
    problem_type = _normalise_problem_type(raw.get("problem_type"), err)

    options: list[str] = []
    if problem_type == MULTIPLE_CHOICE:
        listed = raw.get("options")
        if listed is not None and not isinstance(listed, list):
            raise err("options", f"expected a list, got {type(listed).__name__}")
        problem, embedded = split_embedded_options(problem)
        if listed:
            options = _as_lettered(listed)
        elif embedded:
            options = [f"{letter}. {text}" for letter, text in embedded]
        else:
            raise err("options", "a multiple-choice record needs options (a list, or lines in 'problem')")
        solution = _choice_solution(raw, options, err)
    else:
        value = raw.get("solution", raw.get("answer"))
        if value is None or not str(value).strip():
            raise err("solution", "missing or empty")
        solution = extract_answer(str(value))
        if problem_type in (NUMERICAL, REGRESSION) and parse_number(solution) is None:
            raise err("solution", f"{problem_type} answer {solution!r} is not a number")

    data_type = str(raw.get("data_type", "video")).strip().lower() or "video"
    if data_type not in DATA_TYPES:
        raise err("data_type", f"unknown data type {data_type!r}; expected one of {', '.join(DATA_TYPES)}")
    media = next((raw[k] for k in _MEDIA_FIELDS if isinstance(raw.get(k), str) and raw[k]), None)
    video = None if media is None else resolve_media_path(media, video_root, base_dir or Path("."))

    kind = raw.get("question_kind")
    if kind is not None and kind not in QUESTION_KINDS:
        raise err("question_kind", f"expected one of {', '.join(QUESTION_KINDS)}, got {kind!r}")
    record_id = next((str(raw[k]) for k in _ID_FIELDS if raw.get(k) is not None), str(index))
    extra = {k: v for k, v in raw.items() if k not in _CONSUMED}
    return Record(
        problem=problem,
        options=options,
        solution=solution,
        problem_type=problem_type,
        video=video,
        data_type=data_type,
        question_kind=kind,
        id=record_id,
        extra=extra,
        source=source,
        index=index,
    )


def read_raw(path: str | Path) -> list[Any]:
    """Read the raw objects of a .json (a list) or .jsonl (one object per line) file."""
    path = Path(path)
    if not path.is_file():
        raise RecordError(str(path), None, None, "file not found")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        items = []
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                items.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise RecordError(
                    str(path), None, None, f"line {lineno} is not valid JSON: {exc.msg}"
                ) from None
        return items
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RecordError(str(path), None, None, f"not valid JSON (line {exc.lineno}): {exc.msg}") from None
    if isinstance(data, dict):  # {"data": [...]} or {"questions": [...]}
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise RecordError(str(path), None, None, "expected a list of records (or an object holding one)")
        data = lists[0]
    if not isinstance(data, list):
        raise RecordError(str(path), None, None, "expected a list of records")
    return data


def load_records(
    path: str | Path,
    video_root: str | Path | None = None,
    *,
    skip_invalid: bool = False,
    question_kind: str | None = None,
) -> list[Record]:
    """Load and validate every record of a .json / .jsonl file of the Video-R1 family.

    Args:
        path: the data file.
        video_root: folder the media paths are relative to (default: the data file's folder).
        skip_invalid: drop invalid records instead of raising (`load_records_report` also returns
            the errors, so that the caller can report how many were dropped and why).
        question_kind: keep only records of this kind ("observational" or "inferential").
    """
    return load_records_report(path, video_root, skip_invalid=skip_invalid, question_kind=question_kind)[0]


def load_records_report(
    path: str | Path,
    video_root: str | Path | None = None,
    *,
    skip_invalid: bool = False,
    question_kind: str | None = None,
) -> tuple[list[Record], list[RecordError]]:
    """Like `load_records`, also returning the errors of skipped records."""
    path = Path(path)
    if question_kind is not None and question_kind not in QUESTION_KINDS:
        raise ValueError(f"question_kind must be one of {QUESTION_KINDS}, got {question_kind!r}")
    records, errors = [], []
    for index, raw in enumerate(read_raw(path)):
        try:
            record = parse_record(
                raw, source=str(path), index=index, video_root=video_root, base_dir=path.parent
            )
        except RecordError as exc:
            if not skip_invalid:
                raise
            errors.append(exc)
            continue
        if question_kind is None or record.question_kind == question_kind:
            records.append(record)
    return records, errors


def save_records(records: Iterable[Record], path: str | Path) -> None:
    """Write records as a .json list or .jsonl file, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    items = [r.to_json() for r in records]
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        if path.suffix == ".jsonl":
            for item in items:
                f.write(json.dumps(item, ensure_ascii=False) + "\n")
        else:
            json.dump(items, f, ensure_ascii=False, indent=1)
    tmp.replace(path)


def shuffle_videos(records: list[Record], seed: int) -> list[Record]:
    """The records with each video replaced by another one of the same media type from the same list: a
    seeded derangement of the distinct video paths (no video keeps its place when there are two or
    more), applied to every record showing it, so questions about one scene all get the same other
    scene. Text-only records are unchanged. What a model learns from such records cannot come from
    the clip (a bias model without causal labels, VideoThinker's "shortcut" learnt from text alone).

    >>> rs = [Record("q", [], "1", "numerical", v, "video") for v in ("a", "b", "a", None)]
    >>> [r.video for r in shuffle_videos(rs, seed=0)]
    ['b', 'a', 'b', None]
    """
    import random
    from dataclasses import replace

    rng = random.Random(seed)
    mapping: dict[tuple[str, str], str] = {}
    for data_type in sorted({r.data_type for r in records if r.video is not None}):
        paths = sorted({r.video for r in records if r.video is not None and r.data_type == data_type})
        rng.shuffle(paths)
        for i, path in enumerate(paths):  # each to the next in a shuffled cycle: no fixed point
            mapping[(data_type, path)] = paths[(i + 1) % len(paths)]
    return [r if r.video is None else replace(r, video=mapping[(r.data_type, r.video)]) for r in records]
