"""The next B prompts of a process with their decoded media: decoded ahead, bad media skipped.

Two jobs, both kept out of the training loop:

- **Decode off the critical path.** After handing out a micro-batch, the loader submits the media of
  the next one (the sampler's order is known ahead, `PromptSampler.peek`) to a small thread pool, so
  it decodes while the current micro-batch samples and trains. Results are keyed by record and
  collected in the sampler's order, so the batches are the same with or without the pool.
- **Skip and count.** A record whose media fails to load (a `VideoError`: media that passed the
  up-front check, data/media.py, and break further in) is skipped with a warning and the next prompt
  of the sampler takes its place, so every micro-batch keeps B prompts. The record is remembered and
  passed over without a decode in later epochs. ``max_failures`` failures in a row (in the sampler's
  order) stop the run with `BadMediaError`.

Replacements come from the sampler, so the data position (``PromptSampler.consumed``) stays one
integer that a resumed run continues from. Under several processes each decodes its own slice of
the global batch; the failures are gathered (one small all-gather per micro-batch) so that every
process draws the same replacements, in rank order, and stops at the same moment.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from videothinker.console import warn
from videothinker.data.media import BadMediaError
from videothinker.data.records import Record
from videothinker.data.video import VideoError
from videothinker.rl.sampler import PromptSampler

_KNOWN_BAD = "<known bad>"  # the error of a record whose media already failed (no path: no real message)


class PromptLoader:
    """Micro-batches of ``batch_size`` records of one process, with what ``load`` makes of each.

    Args:
        records: the training records (the sampler indexes them).
        sampler: the shared order; the loader takes from it (``batch_size * num_processes`` per
            micro-batch, plus one per failure).
        load: record -> its media (e.g. a `SampledVideo`, or None for text); raises `VideoError`
            for bad media. Runs in worker threads when ``workers > 0``.
        batch_size: B, prompts per process and micro-batch.
        workers: threads decoding ahead; 0 decodes in the caller's thread, when asked.
        max_failures: failed loads in a row that stop the run.
        num_processes / process_index: this process's slice of the global batch (``[rank::P]``).
        gather: all-gather of a picklable object over processes (one list item per process); needed
            with ``num_processes > 1``.
    """

    def __init__(
        self,
        records: list[Record],
        sampler: PromptSampler,
        load: Callable[[Record], Any],
        batch_size: int,
        *,
        workers: int = 2,
        max_failures: int = 8,
        num_processes: int = 1,
        process_index: int = 0,
        gather: Callable[[Any], list[Any]] | None = None,
    ):
        if num_processes > 1 and gather is None:
            raise ValueError("PromptLoader with several processes needs a gather function")
        self.records, self.sampler, self.load = records, sampler, load
        self.batch_size, self.max_failures = batch_size, max_failures
        self.num_processes, self.process_index = num_processes, process_index
        self.gather = gather or (lambda obj: [obj])
        self.workers = workers
        self.pool: ThreadPoolExecutor | None = None  # started on first use, again after close()
        self.failures = 0  # prompts skipped for bad media, over the run
        self.failures_in_a_row = 0  # loads that failed in a row (records known bad are passed over)
        self.bad: set[int] = set()  # records whose media failed: skipped without a decode from then on
        self._ahead: dict[int, Future] = {}

    # ------------------------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {
            "failures": self.failures,
            "failures_in_a_row": self.failures_in_a_row,
            "bad": sorted(self.bad),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.failures = int(state.get("failures", 0))
        self.failures_in_a_row = int(state.get("failures_in_a_row", 0))
        self.bad = {int(i) for i in state.get("bad", [])}

    def close(self) -> None:
        """Drop the decodes done ahead and stop the pool (a later batch starts it again)."""
        for future in self._ahead.values():
            future.cancel()
        self._ahead.clear()
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = None

    # ------------------------------------------------------------------------------------ batches
    def next_batch(self) -> tuple[list[Record], list[Any]]:
        """This process's next B records and their loaded media, in the sampler's order."""
        P, rank = self.num_processes, self.process_index
        indices = self.sampler.take(self.batch_size * P)
        owners = [j % P for j in range(len(indices))]
        records: list[Record] = []
        media: list[Any] = []
        while True:
            errors: list[str | None] = []  # per index of this process: None, or why it failed
            for index in (i for i, owner in zip(indices, owners) if owner == rank):
                if index in self.bad:
                    errors.append(_KNOWN_BAD)
                    continue
                try:
                    loaded = self._result(index)
                except VideoError as e:
                    errors.append(str(e))
                else:
                    errors.append(None)
                    records.append(self.records[index])
                    media.append(loaded)
            per_process = self.gather(errors)  # [P] lists
            failed = self._count(indices, owners, per_process)
            if not any(failed):
                break
            # Replacements, in rank order: process p takes the next failed[p] prompts after those of p - 1.
            indices = self.sampler.take(sum(failed))
            owners = [p for p in range(P) for _ in range(failed[p])]
        self._decode_ahead()
        return records, media

    def _result(self, index: int) -> Any:
        """The media of a record: decoded ahead, or now."""
        future = self._ahead.pop(index, None)
        return future.result() if future is not None else self.load(self.records[index])

    def _count(self, indices: list[int], owners: list[int], per_process: list[list[str | None]]) -> list[int]:
        """Walk this round's prompts in the sampler's order (the same on every process): warn about
        each failure, keep the counts, stop at ``max_failures`` in a row. Returns failures per process."""
        seen = [0] * self.num_processes
        failed = [0] * self.num_processes
        for index, owner in zip(indices, owners):
            error = per_process[owner][seen[owner]]
            seen[owner] += 1
            if error is None:
                self.failures_in_a_row = 0
                continue
            failed[owner] += 1
            self.failures += 1
            if error == _KNOWN_BAD:  # warned about when it first failed (by value: gathered lists are copies)
                continue
            self.bad.add(index)
            self.failures_in_a_row += 1
            record = self.records[index]
            if self.failures_in_a_row >= self.max_failures:
                raise BadMediaError(
                    f"{self.failures_in_a_row} prompts in a row failed to decode (last: {error}); stopping. "
                    "Check the media (they passed the up-front check, so they break further in), or raise "
                    "data.max_decode_failures"
                )
            warn(
                f"{record.source}, record {record.index}: {error}; skipped, the next prompt takes its place "
                f"({self.failures} skipped so far)"
            )
        return failed

    def _decode_ahead(self) -> None:
        """Submit the media of the next micro-batch (assuming no failures) to the pool; drop the rest."""
        if not self.workers:
            return
        if self.pool is None:
            self.pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="decode")
        upcoming = self.sampler.peek(self.batch_size * self.num_processes)[
            self.process_index :: self.num_processes
        ]
        for index in set(self._ahead) - set(upcoming):
            self._ahead.pop(index).cancel()
        for index in upcoming:
            if index not in self._ahead and index not in self.bad:
                self._ahead[index] = self.pool.submit(self.load, self.records[index])
