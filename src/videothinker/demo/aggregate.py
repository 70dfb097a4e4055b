"""Several seeds of the demo: run them (one after another, or several at once in child processes) and
write DIR/report.md with the mean and spread over seeds of each model's accuracy per question kind,
how often each claim held, accuracy bars and training curves averaged over seeds.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from videothinker.console import print0, warn
from videothinker.demo.presets import MODELS, STAGES
from videothinker.demo.report import (
    KINDS,
    NAMES,
    PRIOR,
    accuracy,
    answer_prior,
    base_sentence,
    paired_difference,
    record_scores,
    shortcut_rate,
    verdict,
)

GROUPS = (*KINDS, "overall", "seen")  # seen: the perception probes (collisions read exactly)
# The lab's goals for the paper's direction (issue 14), in points: (text, a, b, group, threshold):
# holds when a - b >= threshold (GRPO's loss is base - GRPO >= 5; observational: |CDPO - GRPO| <= 2).
GOALS = (
    ("GRPO inferential <= base - 5", "base", "grpo", "inferential", 5.0),
    ("CDPO inferential >= GRPO + 10", "cdpo", "grpo", "inferential", 10.0),
    ("CDPO overall >= GRPO + 5", "cdpo", "grpo", "overall", 5.0),
    ("CDPO observational within 2 points of GRPO", "cdpo", "grpo", "observational", None),
)


def seed_dir(out: Path, seed: int) -> Path:
    return out / f"seed-{seed}"


def run_seeds_in_processes(out: Path, seeds: list[int], argv: list[str], jobs: int) -> None:
    """Run ``videothinker demo ARGV --seed S --out DIR/seed-S`` for each seed, ``jobs`` at a time,
    each child logging to DIR/seed-S.log; print each phase as a child finishes it."""
    env = {**os.environ, "VIDEOTHINKER_PROGRESS": "0"}
    src = str(Path(__file__).resolve().parents[2])  # so children import this copy (PYTHONPATH=src runs)
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    pending, running, failed = list(seeds), {}, []
    seen: dict[int, set[str]] = {s: set() for s in seeds}
    started = time.perf_counter()
    while pending or running:
        while pending and len(running) < jobs:
            seed = pending.pop(0)
            folder = seed_dir(out, seed)
            folder.mkdir(parents=True, exist_ok=True)
            log = (out / f"seed-{seed}.log").open("a", encoding="utf-8")
            cmd = [
                sys.executable,
                "-m",
                "videothinker.cli",
                "demo",
                *argv,
                "--seed",
                str(seed),
                "--out",
                str(folder),
            ]
            running[seed] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), log)
            print0(f"seed {seed}: started (log {out / f'seed-{seed}.log'})")
        time.sleep(2)
        for seed in list(running):
            phases_file = seed_dir(out, seed) / "phases.json"
            if phases_file.is_file():
                try:
                    done = json.loads(phases_file.read_text(encoding="utf-8"))
                except json.JSONDecodeError:
                    done = {}
                for name in done.keys() - seen[seed]:
                    seen[seed].add(name)
                    elapsed = int(time.perf_counter() - started)
                    print0(
                        f"seed {seed}: {name} done ({done[name]['seconds']:.0f}s; {elapsed // 60}m {elapsed % 60:02d}s in all)"
                    )
            process, log = running[seed]
            if process.poll() is not None:
                log.close()
                del running[seed]
                if process.returncode != 0:
                    failed.append(seed)
                    warn(f"seed {seed} failed (exit {process.returncode}); see {out / f'seed-{seed}.log'}")
    if failed:
        raise RuntimeError(f"seeds {failed} failed; rerun the same command to resume them")


def run_demo_seeds(
    out: Path,
    preset,
    seeds: list[int],
    *,
    device: str = "auto",
    jobs: int = 1,
    child_argv: list[str] | None = None,
) -> Path:
    """Run the demo for each seed into DIR/seed-S (one after another, or ``jobs`` at a time in child
    processes given ``child_argv``: the `videothinker demo` options that rebuild ``preset``), then
    write the aggregate DIR/report.md; returns it."""
    from videothinker.demo.pipeline import run_demo

    if jobs > 1:
        if child_argv is None:
            raise ValueError(
                "running seeds in child processes needs child_argv (the demo options of the preset)"
            )
        run_seeds_in_processes(out, seeds, child_argv, jobs)
    else:
        for seed in seeds:
            run_demo(seed_dir(out, seed), preset, seed=seed, device=device)
    report = write_aggregate_report(out, seeds, preset.name)
    print0(f"aggregate report: {report}")
    return report


def _mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    mean = 100 * statistics.fmean(values)
    spread = 100 * statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.1f} ± {spread:.1f}"


def _average_logs(logs: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per step, the mean over runs of every numeric key (keys a run lacks are left out of its mean)."""
    by_step: dict[float, dict[str, list[float]]] = {}
    for log in logs:
        for entry in log:
            row = by_step.setdefault(entry["step"], {})
            for key, value in entry.items():
                if key != "step" and isinstance(value, int | float) and not isinstance(value, bool):
                    row.setdefault(key, []).append(float(value))
    return [
        {"step": step, **{k: statistics.fmean(v) for k, v in row.items()}}
        for step, row in sorted(by_step.items())
    ]


def write_aggregate_report(out: Path, seeds: list[int], preset_name: str) -> Path:
    """DIR/report.md over the seeds' runs in DIR/seed-S (each with its own report.md)."""
    from videothinker.demo.pipeline import DemoPaths
    from videothinker.eval.metrics import read_metrics
    from videothinker.eval.plots import bar_chart, training_curves
    from videothinker.eval.report import read_training_log

    runs = {seed: DemoPaths(seed_dir(out, seed)) for seed in seeds}
    metrics = {seed: {name: read_metrics(p.eval(name)) for name in MODELS} for seed, p in runs.items()}
    header = (
        "| model | "
        + " | ".join(f"{g} (mean ± sd)" for g in GROUPS)
        + " | inferential answered as the video shows | per seed: "
        + " / ".join(KINDS[::-1])
        + " |"
    )
    lines = [header, "|" + " --- |" * (len(GROUPS) + 3)]
    for name in MODELS:
        cells = [
            _mean_std(
                [accuracy(metrics[s][name], g) for s in seeds if accuracy(metrics[s][name], g) is not None]
            )
            for g in GROUPS
        ]
        rates = [
            shortcut_rate(p.eval(name), p.records("test"), p.lab("test") / "annotations")
            for p in runs.values()
        ]
        cells.append(_mean_std([r for r in rates if r is not None]))
        per_seed = ", ".join(
            "/".join(f"{100 * (accuracy(metrics[s][name], k) or 0):.1f}" for k in KINDS[::-1]) for s in seeds
        )
        lines.append(f"| {NAMES[name]} | " + " | ".join(cells) + f" | {per_seed} |")

    priors = [answer_prior([p.records("warm"), p.records("train")], p.records("test")) for p in runs.values()]
    cells = [_mean_std([prior[g] for prior in priors if g in prior]) for g in GROUPS]
    per_seed = ", ".join("/".join(f"{100 * prior.get(k, 0):.1f}" for k in KINDS[::-1]) for prior in priors)
    lines.append(f"| {PRIOR} | " + " | ".join(cells) + f" | - | {per_seed} |")

    scores = {
        seed: {name: record_scores(p.eval(name), p.records("test")) for name in MODELS}
        for seed, p in runs.items()
    }
    diffs = [
        ("GRPO lowers inferential accuracy (base - GRPO, inferential)", "base", "grpo", "inferential"),
        ("CDPO raises inferential accuracy (CDPO - base, inferential)", "cdpo", "base", "inferential"),
        ("CDPO beats GRPO overall (CDPO - GRPO, overall)", "cdpo", "grpo", "overall"),
    ]  # fmt: skip
    claim_lines = []
    for text, a, b, group in diffs:
        found = [paired_difference(scores[s][a].get(group, {}), scores[s][b].get(group, {})) for s in seeds]
        values = [d for d, _, _ in found]
        holds = sum(verdict(d, se) == "holds" for d, se, _ in found)
        over = "not measured"
        if len(values) > 1:  # over seeds: the mean against its standard error sd / sqrt(seeds)
            over = verdict(statistics.fmean(values), statistics.stdev(values) / math.sqrt(len(values)))
        claim_lines.append(
            f"- {text}: {_mean_std(values)} points over seeds, **{over}** over seeds; holds (difference over "
            f"twice its standard error) in {holds} of {len(seeds)} seeds "
            f"(per seed: {', '.join(f'{100 * v:+.1f}' for v in values)})"
        )

    goal_lines = []
    for text, a, b, group, threshold in GOALS:
        values = [
            100 * ((accuracy(metrics[s][a], group) or 0.0) - (accuracy(metrics[s][b], group) or 0.0))
            for s in seeds
        ]
        holds = sum(abs(v) <= 2.0 if threshold is None else v >= threshold for v in values)
        mean = statistics.fmean(values)
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        goal_lines.append(
            f"- {text}: {NAMES[a]} - {NAMES[b]} ({group}) = {mean:+.1f} ± {spread:.1f} points; holds in {holds} of "
            f"{len(seeds)} seeds (per seed: {', '.join(f'{v:+.1f}' for v in values)})"
        )

    figures = []
    series = {
        NAMES[n]: [statistics.fmean([accuracy(metrics[s][n], g) or 0.0 for s in seeds]) for g in GROUPS]
        for n in MODELS
    }
    if bar_chart(
        out / "accuracy_per_kind.png", f"accuracy, mean over {len(seeds)} seeds", list(GROUPS), series
    ):
        figures.append("![accuracy per question kind](accuracy_per_kind.png)")
    logs = {
        NAMES[stage]: _average_logs([read_training_log(runs[s].train(stage) / "log.jsonl") for s in seeds])
        for stage in STAGES
    }
    if training_curves(out / "training_curves.png", logs):
        figures.append("![training curves, mean over seeds](training_curves.png)")

    n_test = {s: metrics[s]["base"]["overall"]["scored"] for s in seeds}  # questions and probes
    settings = seed_dir(out, seeds[0]) / "demo.json"
    preset = json.loads(settings.read_text(encoding="utf-8"))["preset"] if settings.is_file() else {}
    if preset.get("base_model"):
        replicates = (
            "Each seed is a replicate of the RL stages from one given base model: its own lab sets (training "
            "with 74% observational questions, held-out test with both kinds), then bias-aware training, CDPO "
            "and GRPO. " + base_sentence(preset)
        )
    else:
        replicates = (
            "Each seed is an independent replicate: its own lab sets (warm start, training with 74% "
            "observational questions, held-out test with both kinds), its own tiny random-init Qwen2.5-VL with "
            "a short supervised warm start (the base model: a stand-in for a pretrained lightweight model, not "
            "one), then bias-aware training, CDPO and GRPO."
        )
    text = [
        f"# videothinker demo: preset `{preset_name}`, {len(seeds)} seeds",
        "",
        replicates
        + " Test questions (and perception probes) per seed: "
        + ", ".join(f"{s}: {n}" for s, n in n_test.items())
        + ".",
        "",
        "## Accuracy on the held-out test sets (%)",
        "",
        *lines,
        "",
        "## The paper's claims over seeds",
        "",
        *claim_lines,
        "",
        "## The lab's goals (the paper's direction, in points of accuracy)",
        "",
        *goal_lines,
        "",
        *(line for f in figures for line in (f, "")),
        "## Per seed",
        "",
        *(f"- seed {s}: [seed-{s}/report.md](seed-{s}/report.md)" for s in seeds),
        "",
    ]
    path = out / "report.md"
    path.write_text("\n".join(text), encoding="utf-8")
    return path
