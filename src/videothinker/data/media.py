"""Bad media: one rule for training and evaluation, an up-front check of a record set, and its cache.

The rule: a record's media is *missing* when nothing exists where `load_visual` looks for it
(`media_path`), and *undecodable* when it exists but `probe_visual` or `load_visual` raises a
`VideoError` (a container that does not open, no video stream, no frame, an unreadable image, a clip
range with no frames). `bad_media_kind` names the kind of a `VideoError`.

Training checks every record before the first step and before any model loads: `check_media` probes
each distinct file once (`probe_visual`: exists, opens, first frame decodes), in a thread pool, with a
progress bar, and caches the results by (absolute path, data type, size, mtime) in a JSON file, so a
resumed run does not probe again. `keep_usable` then stops with a one-line report (`BadMediaError`)
or, with ``data.skip_invalid``, leaves those records out. A file that passes the probe and breaks
further in is met by `load_visual` during training (rl/prompt_loader.py skips and counts it).
Evaluation applies the same rule: missing media are found before the model loads, and a failed
decode counts the record as failed (eval/runner.py).
"""

from __future__ import annotations

import contextlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from videothinker.config import VideoConfig
from videothinker.console import progress, warn
from videothinker.data.records import Record
from videothinker.data.video import SampledVideo, VideoError, load_visual, media_path, probe_visual

if TYPE_CHECKING:
    from videothinker.config import TrainConfig

MISSING = "missing"
UNDECODABLE = "undecodable"
CACHE_FILE = "media_check.json"
"""Name of the probe cache in ``video.cache_dir`` (when set) or the run's output folder."""
_CACHE_VERSION = 1
_SHOWN = 3
_CHUNK = 4096  # probes submitted to the pool at a time (260k futures at once would hold much memory)


class BadMediaError(ValueError):
    """Training records whose media is missing or undecodable, and data.skip_invalid is off (or
    nothing usable is left)."""


def media_exists(path: str, data_type: str) -> bool:
    """Whether a record's media is there, where `load_visual` looks for it."""
    return media_path(path, data_type).exists()


def bad_media_kind(error: VideoError) -> str:
    """``missing`` or ``undecodable``: the kind of bad media a `VideoError` reports."""
    return MISSING if error.missing else UNDECODABLE


def load_record_visual(record: Record, config: VideoConfig, size_factor: int) -> SampledVideo | None:
    """A record's sampled frames (`load_visual` with the record's clip bounds and frame-folder fps);
    None for a text-only record. Raises `VideoError` for bad media."""
    if record.video is None:
        return None
    extra = record.extra
    return load_visual(
        record.video,
        record.data_type,
        config,
        size_factor,
        start=extra.get("start"),
        end=extra.get("end"),
        fps=extra.get("fps") if record.data_type == "frame" else None,
    )


class ProbeCache:
    """Probe results by (data type, absolute path, size, mtime) in one JSON file: None for media
    that passed, the error message for undecodable media. Missing media are not cached (a stat says
    so as fast). Any change to a file (size or mtime) makes its entry miss; for a frame folder the
    folder's own mtime counts, which changes when frames are added or removed.

    Args:
        file: the JSON file; None keeps results in memory only. An unreadable file starts empty.
    """

    def __init__(self, file: str | Path | None):
        self.file = Path(file) if file is not None else None
        self.entries: dict[str, str | None] = {}
        if self.file is not None and self.file.is_file():
            try:
                data = json.loads(self.file.read_text(encoding="utf-8"))
                if data.get("version") == _CACHE_VERSION:
                    self.entries = dict(data["entries"])
            except (OSError, ValueError, KeyError, AttributeError) as e:
                warn(f"media check cache {self.file} is unreadable ({type(e).__name__}: {e}); checking again")

    @staticmethod
    def key(path: str, data_type: str) -> str | None:
        """The entry's key, or None when the media does not exist."""
        try:
            p = media_path(path, data_type)
            stat = p.stat()
        except OSError:
            return None
        return f"{data_type}|{p.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"

    def save(self) -> None:
        """Write the entries under a temporary name, then rename (a reader never sees half a file)."""
        if self.file is None:
            return
        tmp = self.file.with_name(f".{self.file.name}.{os.getpid()}.tmp")
        try:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps({"version": _CACHE_VERSION, "entries": self.entries}), encoding="utf-8")
            os.replace(tmp, self.file)
        except OSError as e:
            with contextlib.suppress(OSError):
                tmp.unlink()
            warn(f"cannot write the media check cache {self.file} ({e}); the next run checks again")


@dataclass
class MediaReport:
    """What `check_media` found.

    Attributes:
        records: records with media that were checked.
        media: distinct media (path, data type) among them.
        bad: (path, data type) -> its `VideoError`, in record order.
        cached: results that came from the cache.
        bad_records: how many of the records have bad media.
    """

    records: int
    media: int
    bad: dict[tuple[str, str], VideoError] = field(default_factory=dict)
    cached: int = 0
    bad_records: int = 0

    def is_bad(self, record: Record) -> bool:
        return record.video is not None and (record.video, record.data_type) in self.bad

    def count(self, kind: str) -> int:
        return sum(bad_media_kind(e) == kind for e in self.bad.values())

    def first(self, n: int = _SHOWN) -> list[str]:
        return [path for path, _ in list(self.bad)[:n]]

    def describe(self) -> str:
        """``"2 missing and 1 undecodable media (first: a.mp4 (missing), ...)"``."""
        shown = ", ".join(f"{path} ({bad_media_kind(e)})" for (path, _), e in list(self.bad.items())[:_SHOWN])
        more = ", ..." if len(self.bad) > _SHOWN else ""
        return f"{self.count(MISSING)} missing and {self.count(UNDECODABLE)} undecodable media (first: {shown}{more})"

    def left_out(self) -> str:
        """The note of the run's first log line when records were left out."""
        return f"{self.bad_records} records left out for bad media: {self.describe()}"

    def to_row(self) -> dict:
        """The ``skipped_media`` entry of log.jsonl's start row (records left out, distinct media by
        kind, the first paths)."""
        return {
            "records": self.bad_records,
            "missing": self.count(MISSING),
            "undecodable": self.count(UNDECODABLE),
            "first": self.first(5),
        }


def _probe(item: tuple[str, str]) -> VideoError | None:
    try:
        probe_visual(*item)
    except VideoError as e:
        return e
    return None


def check_media(
    records: list[Record], cache_file: str | Path | None = None, workers: int | None = None
) -> MediaReport:
    """Probe the media of every record (`probe_visual`), each distinct file once, in parallel.

    Args:
        records: the records; text-only ones are passed over.
        cache_file: a `ProbeCache` file (None: no cache).
        workers: threads probing at once (default: twice the CPU count, at most 32; probing waits on disk).

    Returns:
        A MediaReport; nothing is raised for bad media (`keep_usable` decides).
    """
    items = list(dict.fromkeys((r.video, r.data_type) for r in records if r.video is not None))
    cache = ProbeCache(cache_file)
    results: dict[tuple[str, str], VideoError | None] = {}
    todo: list[tuple[tuple[str, str], str | None]] = []
    for item in items:
        key = ProbeCache.key(*item)
        if key is not None and key in cache.entries:
            message = cache.entries[key]
            results[item] = None if message is None else VideoError(item[0], message)
        else:
            todo.append((item, key))
    cached = len(results)
    workers = workers or min(32, 2 * (os.cpu_count() or 1))
    if todo:
        with progress() as bar, ThreadPoolExecutor(max_workers=workers) as pool:
            task = bar.add_task("media check", total=len(items), completed=cached, info="")
            bad = sum(e is not None for e in results.values())
            for start in range(0, len(todo), _CHUNK):
                chunk = todo[start : start + _CHUNK]
                for (item, key), error in zip(chunk, pool.map(_probe, [item for item, _ in chunk])):
                    results[item] = error
                    if key is not None and (error is None or not error.missing):
                        cache.entries[key] = (
                            None if error is None else str(error).removeprefix(f"{item[0]}: ")
                        )
                    bad += error is not None
                    bar.update(task, advance=1, info=f"{bad} bad")
        cache.save()
    report = MediaReport(
        records=sum(r.video is not None for r in records),
        media=len(items),
        bad={item: e for item in items if (e := results[item]) is not None},
        cached=cached,
    )
    report.bad_records = sum(report.is_bad(r) for r in records)
    return report


def keep_usable(records: list[Record], report: MediaReport, skip: bool) -> list[Record]:
    """The records whose media passed the check.

    Raises:
        BadMediaError: some media are bad and ``skip`` is off, or none of the records is usable.
    """
    if not report.bad:
        return records
    kept = [r for r in records if not report.is_bad(r)]
    what = f"{report.bad_records} of {len(records)} training records have bad media: {report.describe()}"
    if not skip:
        raise BadMediaError(
            f"{what}; fix or remove them, or set data.skip_invalid=true to train on the others"
        )
    if not kept:
        raise BadMediaError(f"{what}: no training record is left")
    return kept


def check_training_media(
    records: list[Record], config: TrainConfig
) -> tuple[list[Record], MediaReport | None]:
    """The training records with usable media, and the report (None with ``data.check_media`` off).

    The probe cache lives in ``video.cache_dir`` when set (shared by runs on the same videos), else
    in the run's output folder.
    """
    if not config.data.check_media:
        return records, None
    folder = config.video.cache_dir or config.output_dir
    report = check_media(records, Path(folder) / CACHE_FILE)
    return keep_usable(records, report, config.data.skip_invalid), report
