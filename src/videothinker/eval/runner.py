"""Batched, resumable evaluation: benchmark records -> greedy generations -> predictions.jsonl -> metrics.

`evaluate` is the loop: it finds the records still to do (nothing, for a finished run), checks that
their videos exist before any model is loaded (bad media follow the rule of data/media.py, shared with
training: missing media stop the run or are skipped, a failed decode counts the record as failed), decodes each batch's videos in worker threads while the
previous batch generates, and appends one prediction per record as soon as it is scored. The model sits
behind a small `Generator` interface (`ModelGenerator` for a real checkpoint), so the loop is the same
for every model and testable without one.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from videothinker.config import VideoConfig
from videothinker.console import print0, progress, warn
from videothinker.data.media import load_record_visual, media_exists
from videothinker.data.prompts import eval_prompt
from videothinker.data.records import Record
from videothinker.data.video import SampledVideo, VideoError
from videothinker.eval.benchmarks import Benchmark, record_task
from videothinker.eval.metrics import compute_metrics, write_metrics
from videothinker.eval.predictions import FAILED, SCORED, SKIPPED, Prediction, PredictionStore
from videothinker.eval.scoring import score_record

PREDICTIONS_FILE = "predictions.jsonl"
RUN_FILE = "run.json"
_MISSING_SHOWN = 5


class Generator(Protocol):
    """What the loop needs of a model: its frame size factor and greedy completions of a batch."""

    size_factor: int

    def __call__(self, prompts: list[str], visuals: list[SampledVideo | None]) -> list[str]: ...


@dataclass
class EvalSettings:
    """Settings of one evaluation run (the `videothinker eval` options).

    Attributes:
        model: checkpoint folder; recorded in run.json (resolved), and a rerun into the same folder
            must name the same one.
        batch_size: records per generate call.
        max_new_tokens: completion length limit (the reference evaluation allows 1024).
        limit: evaluate only the first N records of each benchmark (None: all).
        skip_missing: score the records whose video exists and list the others as skipped, instead of
            stopping with an error.
        retry_failed: evaluate again records that failed (an undecodable video) in an earlier run.
        video: frame sampling settings.
    """

    model: str
    batch_size: int = 8
    max_new_tokens: int = 1024
    limit: int | None = None
    skip_missing: bool = False
    retry_failed: bool = False
    video: VideoConfig = field(default_factory=VideoConfig)

    def run_identity(self) -> dict[str, Any]:
        """The settings that make predictions comparable: a rerun into a folder must share them (the
        frame cache folder changes no prediction, so it is left out)."""
        video = dataclasses.asdict(self.video)
        video.pop("cache_dir")
        return {
            "model": str(Path(self.model).resolve()),
            "max_new_tokens": self.max_new_tokens,
            "video": video,
        }


@dataclass
class _Item:
    benchmark: Benchmark
    record: Record

    def prediction(self, status: str, **fields: Any) -> Prediction:
        record = self.record
        return Prediction(
            benchmark=self.benchmark.name,
            id=record.id,
            status=status,
            problem_type=record.problem_type,
            question_kind=record.question_kind,
            task=record_task(record, self.benchmark.name),
            video=record.video,
            **fields,
        )


def check_run_folder(out_dir: Path, settings: EvalSettings, has_predictions: bool) -> None:
    """Record the run's settings in run.json; where the folder already holds predictions, first check
    that they were made with the same settings."""
    identity = settings.run_identity()
    path = out_dir / RUN_FILE
    if has_predictions and path.is_file():
        previous = json.loads(path.read_text(encoding="utf-8"))
        changed = sorted(k for k in identity if previous.get(k) != identity[k])
        if changed:
            raise ValueError(
                f"{out_dir} holds predictions made with other settings ({', '.join(changed)} differ from "
                f"{path}); evaluate into another --out folder, or delete it to start over"
            )
    out_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(identity, indent=2) + "\n", encoding="utf-8")


def _pending(benchmarks: list[Benchmark], store: PredictionStore, settings: EvalSettings) -> list[_Item]:
    items = []
    for bench in benchmarks:
        for record in bench.records[: settings.limit]:
            if not store.is_done((bench.name, record.id), settings.retry_failed):
                items.append(_Item(bench, record))
    return items


def _drop_missing(items: list[_Item], store: PredictionStore, skip_missing: bool) -> list[_Item]:
    """Stop on missing videos, or (``skip_missing``) record them as skipped and return the others."""
    missing = [
        i
        for i in items
        if i.record.video is not None and not media_exists(i.record.video, i.record.data_type)
    ]
    if not missing:
        return items
    shown = "\n  ".join(i.record.video for i in missing[:_MISSING_SHOWN])
    more = f"\n  ... and {len(missing) - _MISSING_SHOWN} more" if len(missing) > _MISSING_SHOWN else ""
    message = f"{len(missing)} of {len(items)} records to evaluate have no video:\n  {shown}{more}"
    if not skip_missing:
        raise ValueError(f"{message}\ncheck --video-root, or pass --skip-missing to score the others")
    warn(f"{message}\nthey are skipped (listed in metrics.json, counted neither right nor wrong)")
    for item in missing:
        previous = store.latest.get((item.benchmark.name, item.record.id))
        if previous is None or previous.status != SKIPPED:
            store.append(item.prediction(SKIPPED, error=f"video not found: {item.record.video}"))
    skipped = {id(i) for i in missing}
    return [i for i in items if id(i) not in skipped]


def _load(item: _Item, video: VideoConfig, size_factor: int) -> SampledVideo | None:
    return load_record_visual(item.record, video, size_factor)


def _batches(items: list[_Item], size: int) -> Iterator[list[_Item]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def evaluate(
    benchmarks: list[Benchmark],
    out_dir: str | Path,
    settings: EvalSettings,
    make_generator: Callable[[], Generator],
) -> dict[str, Any]:
    """Evaluate the records of the benchmarks not yet done in ``out_dir``; returns the metrics.

    Appends to ``out_dir``/predictions.jsonl as it goes and writes ``out_dir``/metrics.json at the end.
    ``make_generator`` is called only when there is work (after the videos are checked).

    Raises:
        ValueError: videos missing (without ``skip_missing``), or ``out_dir`` holds a run with other settings.
    """
    out_dir = Path(out_dir)
    store = PredictionStore(out_dir / PREDICTIONS_FILE)
    check_run_folder(out_dir, settings, has_predictions=bool(store.latest))
    pending = _pending(benchmarks, store, settings)
    considered = sum(len(bench.records[: settings.limit]) for bench in benchmarks)
    items = _drop_missing(pending, store, settings.skip_missing)
    if items:
        print0(f"evaluating {len(items)} of {considered} records ({considered - len(pending)} done earlier)")
        _generate_all(items, store, settings, make_generator())
    else:
        print0(f"nothing left to evaluate (predictions in {store.path})")
    metrics = compute_metrics(benchmarks, store.latest)
    write_metrics(metrics, out_dir)
    return metrics


def _generate_all(
    items: list[_Item], store: PredictionStore, settings: EvalSettings, generator: Generator
) -> None:
    total = correct = 0.0
    batches = list(_batches(items, settings.batch_size))

    def submit(pool: ThreadPoolExecutor, batch: list[_Item]) -> list[Future]:
        return [pool.submit(_load, item, settings.video, generator.size_factor) for item in batch]

    with progress() as bar, ThreadPoolExecutor(max_workers=min(4, settings.batch_size)) as pool:
        task = bar.add_task("eval", total=len(items), info="")
        upcoming = submit(pool, batches[0])
        for index, batch in enumerate(batches):
            loading = upcoming
            if index + 1 < len(batches):  # decode the next batch's videos while this one generates
                upcoming = submit(pool, batches[index + 1])
            ready: list[tuple[_Item, SampledVideo | None]] = []
            for item, future in zip(batch, loading):
                try:
                    ready.append((item, future.result()))
                except VideoError as exc:
                    warn(f"{item.benchmark.name} record {item.record.id}: {exc}; counted as failed")
                    store.append(item.prediction(FAILED, error=str(exc)))
            if ready:
                outputs = generator([eval_prompt(item.record) for item, _ in ready], [v for _, v in ready])
                for (item, _), output in zip(ready, outputs, strict=True):
                    score = score_record(output, item.record)
                    store.append(
                        item.prediction(
                            SCORED,
                            output=output,
                            answer=score.answer,
                            score=score.score,
                            partial=score.partial,
                        )
                    )
                    total, correct = total + 1, correct + score.score
            bar.update(task, advance=len(batch), info=f"acc {correct / total:.1%}" if total else "")
