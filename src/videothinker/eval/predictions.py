"""The predictions store: one JSON line per evaluated record, appended as results come.

Appending as it goes is what makes evaluation resumable: a rerun reads the file, keeps every record
whose latest line is final (``scored``, or ``failed`` unless failures are retried) and evaluates only
the rest. Lines are keyed by (benchmark, record id); when a key has several lines the last one wins,
so the file only ever grows. A crash in the middle of a write leaves a truncated last line; opening the
store cuts it off (it holds nothing usable) so that the next line starts cleanly.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from videothinker.console import warn

SCORED, FAILED, SKIPPED = "scored", "failed", "skipped"
STATUSES = (SCORED, FAILED, SKIPPED)
Key = tuple[str, str]


@dataclass
class Prediction:
    """One line of predictions.jsonl.

    Attributes:
        benchmark: benchmark name (see `videothinker.eval.benchmarks.benchmark_name`).
        id: the record's id within its benchmark.
        status: "scored" (the model answered), "failed" (its video could not be decoded) or "skipped"
            (its video is missing and --skip-missing was given).
        output: the raw model output ("" unless scored).
        answer: what the output answers (see `videothinker.answers.extract_answer`).
        score: its score when it was written (metrics always re-score ``output``); None unless scored.
        partial: its partial credit when it was written; None unless scored.
        problem_type, question_kind, task: copied from the record, for reading the file on its own.
        video: the record's media path.
        error: why the record failed or was skipped.
    """

    benchmark: str
    id: str
    status: str
    output: str = ""
    answer: str = ""
    score: float | None = None
    partial: float | None = None
    problem_type: str = ""
    question_kind: str | None = None
    task: str | None = None
    video: str | None = None
    error: str = ""

    @property
    def key(self) -> Key:
        return (self.benchmark, self.id)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict, where: str) -> Prediction:
        """Build from a parsed line; ``where`` names the file and line in errors."""
        if not isinstance(data, dict):
            raise ValueError(f"{where}: expected a JSON object")
        missing = [name for name in ("benchmark", "id", "status") if name not in data]
        if missing:
            raise ValueError(f"{where}: missing field(s) {', '.join(missing)}")
        if data["status"] not in STATUSES:
            raise ValueError(
                f"{where}: field 'status' must be one of {', '.join(STATUSES)}, got {data['status']!r}"
            )
        known = {f.name for f in dataclasses.fields(cls)}
        fields = {k: v for k, v in data.items() if k in known}
        fields["benchmark"], fields["id"] = str(data["benchmark"]), str(data["id"])
        return cls(**fields)


def _parse_lines(path: Path) -> tuple[list[Prediction], int]:
    """Parse a predictions file; returns the predictions and the byte length of its valid part
    (shorter than the file when the last line is truncated)."""
    parts = path.read_bytes().split(b"\n")
    predictions: list[Prediction] = []
    valid = 0
    for lineno, part in enumerate(parts, start=1):
        complete = lineno < len(parts)  # ended by a newline
        if part.strip():
            try:
                item = json.loads(part)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                if complete:
                    raise ValueError(f"{path}, line {lineno}: not valid JSON ({exc})") from None
                warn(f"{path}: line {lineno} is truncated (an interrupted write); it is dropped")
                break
            predictions.append(Prediction.from_dict(item, f"{path}, line {lineno}"))
        valid += len(part) + complete
    return predictions, valid


def read_predictions(path: str | Path) -> list[Prediction]:
    """Every line of a predictions file, in order (a truncated last line is dropped with a warning)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"predictions file not found: {path}")
    return _parse_lines(path)[0]


def latest(predictions: Iterable[Prediction]) -> dict[Key, Prediction]:
    """The last prediction per (benchmark, id)."""
    return {p.key: p for p in predictions}


class PredictionStore:
    """An append-only predictions.jsonl with the latest line per key in memory.

    Opening an existing file reads it (cutting off a truncated last line); `append` writes one line,
    flushed and synced, so a killed run loses at most the record it was writing.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.latest: dict[Key, Prediction] = {}
        if self.path.is_file():
            predictions, valid_bytes = _parse_lines(self.path)
            with self.path.open("r+b") as f:
                f.truncate(valid_bytes)
                if valid_bytes:  # a last line without its newline gets one, so appends start cleanly
                    f.seek(valid_bytes - 1)
                    if f.read(1) != b"\n":
                        f.write(b"\n")
            self.latest = latest(predictions)

    def is_done(self, key: Key, retry_failed: bool = False) -> bool:
        """True when a record needs no more work: scored, or failed (unless failures are retried)."""
        prediction = self.latest.get(key)
        if prediction is None:
            return False
        return prediction.status == SCORED or (prediction.status == FAILED and not retry_failed)

    def append(self, prediction: Prediction) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write(prediction.to_json() + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.latest[prediction.key] = prediction
