"""The prompt loader: the same batches with and without the decoding pool, bad media skipped and
replaced from the sampler (B kept, the data position one integer), failures in a row bounded, resume,
and several processes agreeing on replacements."""

from __future__ import annotations

import pickle
import threading
import time

import pytest

from videothinker.data.media import BadMediaError
from videothinker.data.records import Record
from videothinker.data.video import VideoError
from videothinker.rl.prompt_loader import PromptLoader
from videothinker.rl.sampler import PromptSampler

N = 10


def records(n: int = N) -> list[Record]:
    return [
        Record(
            problem=f"q{i}",
            options=[],
            solution="1",
            problem_type="numerical",
            video=f"v{i}.mp4",
            data_type="video",
            index=i,
        )
        for i in range(n)
    ]


def loader_of(bad=(), workers: int = 0, batch_size: int = 3, n: int = N, **kw) -> PromptLoader:
    def load(record: Record) -> str:
        time.sleep(0.001)  # let the pool's threads finish out of order
        if record.index in bad:
            raise VideoError(record.video, "cannot decode video (broken mid-stream)")
        return f"frames of {record.video}"

    return PromptLoader(records(n), PromptSampler(n, 0), load, batch_size, workers=workers, **kw)


def batches(loader: PromptLoader, n: int) -> list[list[int]]:
    out = []
    for _ in range(n):
        recs, media = loader.next_batch()
        assert media == [f"frames of {r.video}" for r in recs]
        out.append([r.index for r in recs])
    return out


def test_the_pool_changes_no_batch():
    plain, pooled = loader_of(workers=0), loader_of(workers=3)
    assert batches(plain, 8) == batches(pooled, 8)  # 24 prompts: over two epochs
    assert pooled.sampler.consumed == plain.sampler.consumed == 24
    pooled.close()


def test_the_pool_decodes_the_next_batch_ahead():
    loader = loader_of(workers=2)
    loader.next_batch()
    assert sorted(loader._ahead) == sorted(loader.sampler.peek(3))
    loader.close()


@pytest.mark.parametrize("workers", [0, 2])
def test_a_bad_record_is_replaced_by_the_next_prompt(workers):
    order = PromptSampler(N, 0).peek(2 * N)
    bad = {order[1], order[4]}
    loader = loader_of(bad=bad, workers=workers)
    got = batches(loader, 3)
    # The order without the bad ones, three at a time: each batch keeps B = 3 prompts.
    expected = [i for i in order if i not in bad][:9]
    assert got == [expected[0:3], expected[3:6], expected[6:9]]
    assert loader.sampler.consumed == 9 + 2 and loader.failures == 2  # a replacement takes a position
    loader.close()


def test_failures_in_a_row_stop_the_run():
    order = PromptSampler(N, 0).peek(N)
    loader = loader_of(bad=set(order[1:4]), max_failures=4)
    batches(loader, 2)  # three in a row: under the bound
    assert (loader.failures, loader.failures_in_a_row) == (3, 0)  # a good one since
    every = loader_of(bad=set(range(N)), max_failures=4)
    with pytest.raises(BadMediaError, match="4 prompts in a row failed to decode"):
        every.next_batch()


def test_resume_continues_with_the_same_batches():
    order = PromptSampler(N, 0).peek(3 * N)
    bad = {order[2], order[7]}
    straight_loader = loader_of(bad=bad)
    straight = batches(straight_loader, 6)
    first = loader_of(bad=bad, workers=2)
    head = batches(first, 2)
    sampler_state, loader_state = first.sampler.state_dict(), first.state_dict()
    first.close()
    resumed = loader_of(bad=bad, workers=2)
    resumed.sampler.load_state_dict(sampler_state)
    resumed.load_state_dict(loader_state)
    assert head + batches(resumed, 4) == straight
    assert resumed.bad == bad and resumed.failures == straight_loader.failures
    resumed.close()


def run_processes(bad: set[int], n: int, steps: int, P: int = 2, batch_size: int = 2):
    """P loaders in threads, their gather a barrier exchange of pickled copies (as processes get them)."""
    box: list = [None] * P
    barrier = threading.Barrier(P)

    def gather_for(rank):
        def gather(obj):
            barrier.wait()
            box[rank] = obj
            barrier.wait()
            out = pickle.loads(pickle.dumps(box))
            barrier.wait()
            return out

        return gather

    loaders = [
        loader_of(bad, 1, batch_size, n, num_processes=P, process_index=r, gather=gather_for(r))
        for r in range(P)
    ]
    results: list = [None] * P

    def run(rank):
        results[rank] = batches(loaders[rank], steps)

    threads = [threading.Thread(target=run, args=(r,)) for r in range(P)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for loader in loaders:
        loader.close()
    return loaders, results


def test_processes_agree_on_replacements():
    """Each process decodes its slice of the global batch; a failure on one is replaced in rank
    order, and every process's sampler stays in step."""
    order = PromptSampler(30, 0).peek(30)  # one epoch
    bad = {order[1], order[2], order[6]}  # process 1's first prompt, process 0's second, ...
    loaders, results = run_processes(bad, n=30, steps=3)
    assert all(len(b) == 2 for r in results for b in r)
    assert loaders[0].sampler.consumed == loaders[1].sampler.consumed == 3 * 2 * 2 + len(bad)
    assert loaders[0].failures == loaders[1].failures == len(bad)  # every process counts every failure
    used = [i for step in zip(*results) for part in step for i in part]
    assert not bad & set(used) and sorted(used) == sorted(i for i in order[: 3 * 2 * 2 + 3] if i not in bad)
    # Step 1: the global batch is order[0:4] = process 0: order[0], order[2]; process 1: order[1], order[3].
    # order[1] (process 1) and order[2] (process 0) fail; replacements order[4] -> process 0, order[5] -> 1.
    assert results[0][0] == [order[0], order[4]] and results[1][0] == [order[3], order[5]]


def test_processes_pass_over_known_bad_records_alike(monkeypatch):
    from videothinker.rl import prompt_loader

    warned = []
    monkeypatch.setattr(prompt_loader, "warn", warned.append)
    order = PromptSampler(N, 0).peek(3 * N)
    bad = {order[0], order[5]}
    loaders, results = run_processes(bad, n=N, steps=6)  # 24 prompts and more: three epochs
    consumed = loaders[0].sampler.consumed
    assert consumed == loaders[1].sampler.consumed
    skipped = sum(i in bad for i in order[:consumed])
    assert all(loader.failures == skipped and loader.bad == bad for loader in loaders)
    assert all(loader.failures_in_a_row == 0 for loader in loaders)
    assert len(warned) == 2 * len(bad)  # each process warns once per bad record (only the main one prints)


def test_a_bad_record_is_decoded_once_and_passed_over_in_later_epochs():
    order = PromptSampler(N, 0).peek(N)
    tried = []
    loader = loader_of(bad={order[0]})
    real = loader.load
    loader.load = lambda record: tried.append(record.index) or real(record)
    batches(loader, 9)  # 27 prompts: the bad record comes up in three epochs
    assert tried.count(order[0]) == 1 and loader.failures == 3 and loader.bad == {order[0]}


def test_a_closed_loader_goes_on():
    loader = loader_of(workers=2)
    head = batches(loader, 2)
    loader.close()
    loader.close()
    assert head + batches(loader, 2) == batches(loader_of(), 4)
    loader.close()
