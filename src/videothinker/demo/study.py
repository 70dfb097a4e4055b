"""A study of RL variants in the lab: many training settings on the same seeds, each seed's variants
sharing that seed's data, base model and bias model (docs/EXPERIMENT_GPU.md, `videothinker study`).

A variant is a stage (grpo or cdpo) with ``--set`` settings over the preset's RL recipe; a cdpo
variant names the bias model it repels from: ``bias`` (bias-aware training on the observational
questions) or ``bias_shuffle`` (all questions, each with another scene's video: no causal labels).
``data: balanced`` trains on a set of the same size with 50% observational questions (the data fix,
an oracle that needs the same labels as the bias model). ``curve: true`` keeps a checkpoint every
``curve_every`` steps and evaluates each.

Per seed S, under OUT/seed-S: the lab sets, the packaged base, the bias models, then per variant
train/<name> and eval/<name>-<split>; a variant whose run collapses is recorded as such
(collapsed.json) and not evaluated. Settings are chosen on the validation split (``--split val``) and
only then run on test seeds. Every task resumes: a rerun skips what finished.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

from videothinker.console import print0, warn
from videothinker.demo.pipeline import (
    DemoPaths,
    evaluate_model,
    make_base,
    make_data,
    train_stage,
)
from videothinker.demo.presets import DemoPreset

BIAS_MODELS = {
    "bias": {},
    "bias_shuffle": {"data.question_kind": None, "data.video_shuffle": True},
}


@dataclasses.dataclass(frozen=True)
class Variant:
    """One training setting of the study.

    Attributes:
        name: folder name of its run (train/<name>, eval/<name>-<split>).
        stage: grpo or cdpo.
        settings: ``--set`` keys over the preset's RL recipe and the stage's defaults.
        bias: the bias model a cdpo variant repels from (a key of `BIAS_MODELS`).
        data: ``train`` (the preset's training set) or ``balanced`` (50% observational).
        curve: evaluate a checkpoint every ``curve_every`` steps too.
    """

    name: str
    stage: str
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)
    bias: str = "bias"
    data: str = "train"
    curve: bool = False

    def __post_init__(self):
        if self.stage not in ("grpo", "cdpo"):
            raise ValueError(f"variant {self.name}: stage must be grpo or cdpo, got {self.stage!r}")
        if self.bias not in BIAS_MODELS:
            raise ValueError(f"variant {self.name}: bias must be one of {', '.join(BIAS_MODELS)}")
        if self.data not in ("train", "balanced"):
            raise ValueError(f"variant {self.name}: data must be train or balanced, got {self.data!r}")


def load_variants(path: str | Path) -> list[Variant]:
    """Variants from a YAML mapping ``name: {stage, set, bias, data, curve}``."""
    import yaml

    raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping of variant names to settings")
    out = []
    for name, spec in raw.items():
        spec = dict(spec or {})
        unknown = spec.keys() - {"stage", "set", "bias", "data", "curve"}
        if unknown or "stage" not in spec:
            raise ValueError(
                f"{path}: variant {name} needs a stage and takes set, bias, data, curve; got {spec}"
            )
        out.append(
            Variant(
                str(name),
                spec["stage"],
                dict(spec.get("set") or {}),
                spec.get("bias", "bias"),
                spec.get("data", "train"),
                bool(spec.get("curve", False)),
            )
        )
    return out


# --------------------------------------------------------------------------------------- one task


def _train(paths: DemoPaths, preset: DemoPreset, seed: int, name: str, stage: str, settings: dict) -> str:
    """Train one run into train/<name>; returns "done" or the collapse message."""
    from videothinker.rl.trainer import CollapseError

    out = paths.train(name)
    collapsed = out / "collapsed.json"
    if collapsed.is_file():
        return json.loads(collapsed.read_text())["message"]
    if (out / "final").is_dir():
        return "done"
    try:
        train_stage(paths, preset, stage, seed, name=name, settings=settings)
    except CollapseError as exc:
        collapsed.write_text(json.dumps({"message": str(exc)}) + "\n")
        return str(exc)
    return "done"


def run_task(root: str, preset: DemoPreset, seed: int, task: dict[str, Any], split: str, device: str) -> dict:
    """One task in a child process: a bias model, or a variant's training and evaluation."""
    import torch

    torch.set_num_threads(2)
    paths = DemoPaths(Path(root))
    started = time.perf_counter()
    name, stage = task["name"], task["stage"]
    settings = dict(task.get("settings", {}))
    if stage == "cdpo":
        settings["reference"] = str(paths.model(task["bias"]))
    if task.get("data") == "balanced":
        settings["data.path"] = str(DemoPaths(paths.root / "balanced").records("train"))
    if task.get("curve"):
        settings.update({"grpo.save_steps": task["curve_every"], "grpo.save_total_limit": None})
    status = _train(paths, preset, seed, name, stage, settings)
    result = {"seed": seed, "name": name, "status": status, "train_s": time.perf_counter() - started}
    if status == "done":
        evaluate_model(paths, preset, name, device, split=split)
        if task.get("curve"):
            for checkpoint in sorted(paths.train(name).glob("checkpoint-*")):
                step = checkpoint.name.split("-")[-1]
                evaluate_model(
                    paths, preset, name, device, split=split, model_dir=checkpoint, tag=f"{name}-step{step}"
                )
    result["seconds"] = time.perf_counter() - started
    return result


# --------------------------------------------------------------------------------------- the study


def bias_models_needed(variants: list[Variant]) -> list[str]:
    """The bias models the cdpo variants repel from, each trained once per seed (none without a
    cdpo variant: a GRPO-only study trains no bias model)."""
    return sorted({v.bias for v in variants if v.stage == "cdpo"})


def run_study(
    out: str | Path,
    preset: DemoPreset,
    seeds: list[int],
    variants: list[Variant],
    *,
    split: str = "val",
    jobs: int = 4,
    device: str = "auto",
    curve_every: int = 20,
    report_only: bool = False,
) -> Path:
    """Run every variant on every seed, ``jobs`` tasks at a time in child processes; write
    OUT/study.json (one row per seed and variant) and OUT/study.md; returns the JSON's path.
    ``report_only``: write the report of what has finished, running nothing."""
    import multiprocessing

    from videothinker.demo.study_report import write_study_report

    out = Path(out)
    needed_bias = bias_models_needed(variants)
    names = [*needed_bias, *(v.name for v in variants)]
    if report_only:
        return write_study_report(out, seeds, names, split, [])
    for seed in seeds:  # data and base in this process (the lab's own workers generate scenes)
        paths = DemoPaths(out / f"seed-{seed}")
        if not paths.records(split).is_file():
            make_data(paths, preset, seed, splits=("train", split))
        if any(v.data == "balanced" for v in variants):
            balanced = DemoPaths(paths.root / "balanced")
            if not balanced.records("train").is_file():
                make_data(
                    balanced, dataclasses.replace(preset, train_observational=0.5), seed, splits=("train",)
                )
        if not (paths.model("base") / "config.json").is_file():
            make_base(paths, preset, seed, device)
    tasks: list[tuple[int, dict]] = []
    for seed in seeds:
        tasks.append((seed, {"name": "base-eval", "stage": "none"}))
        for bias in needed_bias:
            tasks.append((seed, {"name": bias, "stage": "bias", "settings": BIAS_MODELS[bias]}))
        for v in variants:
            tasks.append((seed, {**dataclasses.asdict(v), "curve_every": curve_every}))
    rows: list[dict] = []
    started = time.perf_counter()
    context = multiprocessing.get_context("spawn")
    os.environ.setdefault("VIDEOTHINKER_PROGRESS", "0")
    with (
        ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool,
        _workers_stopped_on_exit(pool),
    ):
        running: dict[Future, tuple[int, dict]] = {}
        done_bias: set[tuple[int, str]] = set()

        def ready(seed: int, task: dict) -> bool:
            return task["stage"] != "cdpo" or (seed, task["bias"]) in done_bias

        while tasks or running:
            for item in [t for t in tasks if ready(*t)][: max(jobs * 2 - len(running), 0)]:
                tasks.remove(item)
                seed, task = item
                root = str(out / f"seed-{seed}")
                fn = _eval_base if task["name"] == "base-eval" else run_task
                running[pool.submit(fn, root, preset, seed, task, split, device)] = item
            finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for future in finished:
                seed, task = running.pop(future)
                try:
                    row = future.result()
                except Exception as exc:  # one failed task does not stop the others
                    warn(f"seed {seed} {task['name']}: failed: {exc}")
                    row = {"seed": seed, "name": task["name"], "status": f"failed: {exc}"}
                if task["stage"] == "bias":
                    done_bias.add((seed, task["name"]))
                rows.append(row)
                elapsed = time.perf_counter() - started
                print0(f"seed {seed} {task['name']}: {row['status'][:160]} ({elapsed:.0f}s in all)")
    return write_study_report(out, seeds, names, split, rows)


@contextlib.contextmanager
def _workers_stopped_on_exit(pool: ProcessPoolExecutor) -> Iterator[None]:
    """While the study runs, SIGTERM (a scheduler's or `kill`'s) raises SystemExit in this process
    instead of ending it at once; on any exit but a clean one the pool's workers are terminated, so no
    training keeps running as an orphan (Ctrl-C reaches them through the terminal anyway). What
    finished is on disk and a rerun resumes from it."""

    def stop(signum, frame):
        raise SystemExit(128 + signum)

    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, stop) if main else None
    try:
        yield
    except BaseException:
        stop_workers(pool)
        raise
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)


def stop_workers(pool: ProcessPoolExecutor, grace: float = 10.0) -> None:
    """Terminate the pool's worker processes (SIGTERM; SIGKILL for any still running after ``grace``
    seconds) and cancel what has not started."""
    workers = list((getattr(pool, "_processes", None) or {}).values())  # shutdown forgets them
    if hasattr(pool, "terminate_workers"):  # Python 3.14
        pool.terminate_workers()
    else:
        pool.shutdown(wait=False, cancel_futures=True)
        for process in workers:
            process.terminate()
    for process in running_after(workers, grace):
        process.kill()


def running_after(processes: list, seconds: float) -> list:
    """Those of ``processes`` still running after waiting up to ``seconds`` for them to end. Read from
    each process's sentinel (closed when it exits), not from ``is_alive()``: that reads waitpid, and a
    library's SIGCHLD handler in this process may already have reaped the child."""
    from multiprocessing.connection import wait

    pending = {process.sentinel: process for process in processes}
    deadline = time.monotonic() + seconds
    while pending and (left := deadline - time.monotonic()) > 0:
        for sentinel in wait(list(pending), timeout=left):
            pending.pop(sentinel)
    return list(pending.values())


def _eval_base(root: str, preset: DemoPreset, seed: int, task: dict, split: str, device: str) -> dict:
    import torch

    torch.set_num_threads(2)
    started = time.perf_counter()
    evaluate_model(DemoPaths(Path(root)), preset, "base", device, split=split)
    return {"seed": seed, "name": "base", "status": "done", "seconds": time.perf_counter() - started}
