"""Benchmark files: a name per file and a task (sub-category) per record, for per-task accuracy.

- The benchmark name is the file stem with a leading "eval_" stripped: ``eval_mvbench.json`` ->
  ``mvbench``. Predictions are keyed by (benchmark, record id), since ids repeat across files.
- A record's task is the first of its fields ``task``, ``task_type`` (VideoMME), ``question_type``
  (Video-Holmes), ``sub_category``, ``category``, ``source``, ``dimension`` that holds a non-empty
  string. Files with none of them (the shipped MVBench and MMVU files) get it from the media path: the
  folder below the one named like the benchmark, skipping generic folder names ("videos", "video",
  "frames"): ``/MVBench/clevrer/video_validation/video_1.mp4`` -> ``clevrer``,
  ``/yale-nlp/MMVU/videos/Chemistry/0.mp4`` -> ``Chemistry``. Otherwise the record has no task.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from videothinker.data.records import Record, RecordError, load_records

TASK_FIELDS = ("task", "task_type", "question_type", "sub_category", "category", "source", "dimension")
_GENERIC_FOLDERS = {"video", "videos", "frame", "frames", "data"}


@dataclass
class Benchmark:
    """The records of one benchmark file.

    Attributes:
        name: benchmark name (the file stem without a leading "eval_").
        path: the file.
        records: its records, in file order; ids are unique within the file.
    """

    name: str
    path: str
    records: list[Record]


def benchmark_name(path: str | Path) -> str:
    """The benchmark name of a file.

    >>> benchmark_name("data/eval_mvbench.json")
    'mvbench'
    >>> benchmark_name("videomme.jsonl")
    'videomme'
    """
    stem = Path(path).stem
    return stem[len("eval_") :] if stem.startswith("eval_") and len(stem) > len("eval_") else stem


def _media_path(record: Record) -> str | None:
    """The media path as the file writes it (before resolution against a video root)."""
    for key in ("video", "path", "image", "video_path"):
        value = record.extra.get(key)
        if isinstance(value, str) and value:
            return value
    return record.video


def record_task(record: Record, benchmark: str) -> str | None:
    """The task (sub-category) of a record: an explicit field, else derived from the media path.

    >>> from videothinker.data.records import parse_record
    >>> r = parse_record({"problem": "?", "options": ["A. x", "B. y"], "solution": "A",
    ...                   "video": "/MVBench/clevrer/video_validation/video_1.mp4"})
    >>> record_task(r, "mvbench")
    'clevrer'
    """
    for key in TASK_FIELDS:
        value = record.extra.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    media = _media_path(record)
    if not media:
        return None
    folders = PurePosixPath(media.replace("\\", "/")).parts[:-1]
    lowered = [part.lower() for part in folders]
    if benchmark.lower() not in lowered:
        return None
    for part in folders[lowered.index(benchmark.lower()) + 1 :]:
        if part.lower() not in _GENERIC_FOLDERS:
            return part
    return None


def load_benchmark(path: str | Path, video_root: str | Path | None = None) -> Benchmark:
    """Load a benchmark file (see `videothinker.data.records.load_records`); ids must be unique."""
    records = load_records(path, video_root)
    first: dict[str, int] = {}
    for record in records:
        if record.id in first:
            raise RecordError(
                str(path),
                record.index,
                None,
                f"duplicate record id {record.id!r} (also record {first[record.id]}); predictions are keyed by id",
            )
        first[record.id] = record.index
    return Benchmark(benchmark_name(path), str(path), records)


def load_benchmarks(paths: list[str | Path], video_root: str | Path | None = None) -> list[Benchmark]:
    """Load several benchmark files; two files may not share a benchmark name."""
    benchmarks = [load_benchmark(p, video_root) for p in paths]
    seen: dict[str, str] = {}
    for bench in benchmarks:
        if bench.name in seen:
            raise ValueError(
                f"{bench.path} and {seen[bench.name]} have the same benchmark name {bench.name!r}"
            )
        seen[bench.name] = bench.path
    return benchmarks
