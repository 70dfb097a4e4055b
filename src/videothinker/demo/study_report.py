"""The report of a study (demo/study.py): OUT/study.json (one row per seed and model) and OUT/study.md
(mean and spread over seeds per model, each seed's inferential accuracy, and each model's paired
difference to GRPO over seeds with a 95% interval)."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

from videothinker.demo.pipeline import DemoPaths
from videothinker.demo.report import accuracy, shortcut_rate
from videothinker.eval.report import read_training_log

GROUPS = ("observational", "inferential", "overall", "seen", "shortcut")
# t quantiles (0.975) for the 95% interval of a mean over n seeds: n - 1 degrees of freedom
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def _difference_cell(d: dict | None) -> str:
    """A paired difference with its 95% interval; one seed has no interval (it says so)."""
    if d is None:
        return "-"
    if math.isnan(d["ci95"][0]):
        return f"{d['mean']:+.1f} (one seed: no interval)"
    return f"{d['mean']:+.1f} [{d['ci95'][0]:+.1f}, {d['ci95'][1]:+.1f}]"


def _late(rows: list[dict[str, Any]], key: str, last: int = 20) -> float | None:
    """Mean of ``key`` over the last ``last`` logged steps of a training log's rows."""
    values = [r[key] for r in rows if isinstance(r.get(key), int | float) and "event" not in r]
    return statistics.fmean(values[-last:]) if values else None


def model_row(paths: DemoPaths, name: str, split: str) -> dict[str, Any]:
    """Accuracies (%) of one model of one seed, its shortcut rate, and its run's late training metrics."""
    from videothinker.eval.metrics import read_metrics

    row: dict[str, Any] = {"name": name}
    collapsed = paths.train(name) / "collapsed.json"
    if collapsed.is_file():
        return {**row, "collapsed": json.loads(collapsed.read_text())["message"]}
    folder = paths.eval(name, split)
    if not (folder / "metrics.json").is_file():
        return {**row, "missing": True}
    metrics = read_metrics(folder)
    for group in ("observational", "inferential", "overall", "seen"):
        value = accuracy(metrics, group)
        row[group] = None if value is None else 100 * value
    rate = shortcut_rate(folder, paths.records(split), paths.lab(split) / "annotations")
    row["shortcut"] = None if rate is None else 100 * rate
    log = paths.train(name) / "log.jsonl"
    rows = read_training_log(log) if log.is_file() else []
    for key in ("kl_bias", "kl_init", "entropy", "degenerate", "repel_share", "beta", "reward"):
        row[f"late_{key}"] = _late(rows, key)
    return row


def _mean_sd(values: list[float], digits: int = 1) -> str:
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.{digits}f} ± {sd:.{digits}f}"


def paired(rows: dict[int, dict[str, dict]], a: str, b: str, group: str) -> dict[str, Any] | None:
    """a - b on ``group`` over the seeds where both were measured: mean, sd, 95% interval, per seed."""
    diffs = {
        seed: models[a][group] - models[b][group]
        for seed, models in rows.items()
        if models.get(a, {}).get(group) is not None and models.get(b, {}).get(group) is not None
    }
    if not diffs:
        return None
    values = list(diffs.values())
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else math.nan
    half = _T975.get(len(values) - 1, 1.96) * sd / math.sqrt(len(values)) if len(values) > 1 else math.nan
    return {"mean": mean, "sd": sd, "ci95": [mean - half, mean + half], "per_seed": diffs}


def lost_answer_lines(out: Path, seeds: list[int], names: list[str], split: str) -> list[str]:
    """Markdown: per model, where the inferential answers the base got right and it gets wrong went
    (`videothinker.demo.lost_answers`), summed over seeds; [] when a seed's lab files are absent."""
    from videothinker.demo.lost_answers import CATEGORIES, lost_answers

    lines = [
        "",
        "Where the lost inferential answers go (base right, model wrong; summed over seeds; % of lost):",
        "",
        f"| model | lost | gained | {' | '.join(CATEGORIES)} |",
        "|" + " --- |" * (len(CATEGORIES) + 3),
    ]
    for name in names[1:]:
        total: dict[str, int] = {}
        for seed in seeds:
            p = DemoPaths(out / f"seed-{seed}")
            folder = p.eval(name, split)
            needed = (
                p.records(split),
                p.lab(split) / "annotations",
                p.records("train"),
                folder / "predictions.jsonl",
            )
            if not all(path.exists() for path in needed):
                return []
            base = p.eval("base", split)
            for key, value in lost_answers(*needed[:3], base, folder).items():
                total[key] = total.get(key, 0) + value
        lost = max(total["lost"], 1)
        cells = " | ".join(f"{total[c]} ({100 * total[c] / lost:.0f}%)" for c in CATEGORIES)
        lines.append(f"| {name} | {total['lost']} | {total['gained']} | {cells} |")
    return lines


def curve_rows(paths: DemoPaths, split: str) -> dict[str, list[dict[str, float]]]:
    """A seed's curve evaluations (eval/<name>-step<k>-<split>, demo/study.py): per variant, one row per
    step with its inferential accuracy and shortcut rate (%)."""
    import re

    from videothinker.eval.metrics import read_metrics

    found: dict[str, list[dict[str, float]]] = {}
    for folder in sorted(paths.root.glob(f"eval/*-step*-{split}")):
        match = re.fullmatch(rf"(.+)-step(\d+)-{split}", folder.name)
        if not match or not (folder / "metrics.json").is_file():
            continue
        rate = shortcut_rate(folder, paths.records(split), paths.lab(split) / "annotations")
        found.setdefault(match.group(1), []).append(
            {
                "step": int(match.group(2)),
                "inferential": 100 * (accuracy(read_metrics(folder), "inferential") or 0.0),
                "shortcut": None if rate is None else 100 * rate,
            }
        )
    return {name: sorted(rows, key=lambda r: r["step"]) for name, rows in found.items()}


def curve_plot(path: Path, curves: dict[str, list[dict[str, float]]], title: str) -> Path | None:
    """Inferential accuracy and shortcut rate against the training step, one line per variant."""
    from matplotlib.figure import Figure

    if not curves:
        return None
    fig = Figure(figsize=(9, 3.6), layout="constrained")
    for ax, key, label in zip(fig.subplots(1, 2), ("inferential", "shortcut"), ("inferential accuracy (%)",
                              "inferential answered as the video shows (%)"), strict=True):  # fmt: skip
        for name, rows in curves.items():
            points = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name)
        ax.set_xlabel("RL step")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    fig.axes[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.savefig(path, dpi=110)
    return path


def write_study_report(out: Path, seeds: list[int], names: list[str], split: str, runs: list[dict]) -> Path:
    """OUT/study.json and OUT/study.md from each seed's evaluations; returns the JSON's path."""
    names = ["base", *names]
    rows = {s: {n: model_row(DemoPaths(out / f"seed-{s}"), n, split) for n in names} for s in seeds}
    lines = [
        f"# Study on the {split} split, seeds {', '.join(map(str, seeds))}",
        "",
        "Accuracy in %, mean ± sd over seeds; shortcut: inferential questions answered as the video shows;"
        " late: mean of the last 20 training steps.",
        "",
        "| model | observational | inferential | overall | seen | shortcut | late KL to bias | late entropy |"
        " collapsed | inferential per seed |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in names:
        got = [rows[s][name] for s in seeds]
        cells = [_mean_sd([r[g] for r in got if r.get(g) is not None]) for g in GROUPS]
        late = [
            _mean_sd([r[k] for r in got if r.get(k) is not None], 3) for k in ("late_kl_bias", "late_entropy")
        ]
        collapsed = sum("collapsed" in r for r in got)
        per_seed = ", ".join("C" if "collapsed" in r else f"{r.get('inferential') or 0:.1f}" for r in got)
        lines.append(
            f"| {name} | {' | '.join(cells)} | {' | '.join(late)} | {collapsed} of {len(got)} | {per_seed} |"
        )
    comparisons = {}
    if "grpo" in names:
        lines += ["", "Paired difference to GRPO over seeds (points; 95% interval, t over seeds):", ""]
        lines += [
            "| model | inferential | overall | observational | inferential ahead in |",
            "| --- | --- | --- | --- | --- |",
        ]
        for name in names:
            if name == "grpo":
                continue
            found = {g: paired(rows, name, "grpo", g) for g in ("inferential", "overall", "observational")}
            comparisons[name] = found
            cells = [_difference_cell(d) for d in found.values()]
            inf = found["inferential"]
            ahead = (
                "-"
                if inf is None
                else f"{sum(v > 0 for v in inf['per_seed'].values())} of {len(inf['per_seed'])}"
            )
            lines.append(f"| {name} | {' | '.join(cells)} | {ahead} |")
    lines += lost_answer_lines(out, seeds, names, split)
    curves = {s: curve_rows(DemoPaths(out / f"seed-{s}"), split) for s in seeds}
    for seed, found in curves.items():
        plot = curve_plot(
            out / f"curves_seed{seed}.png", found, f"{split} split, seed {seed}, every checkpoint"
        )
        if plot is not None:
            lines += ["", f"![curves of seed {seed}]({plot.name})"]
            for name, rows_ in found.items():
                steps = ", ".join(
                    f"{r['step']}: {r['inferential']:.1f} / {r['shortcut'] or 0:.1f}" for r in rows_
                )
                lines.append(f"- {name} (step: inferential / shortcut): {steps}")
    (out / "study.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    path = out / "study.json"
    payload = {
        "split": split, "seeds": seeds, "rows": rows, "paired_to_grpo": comparisons, "curves": curves, "runs": runs,
    }  # fmt: skip
    path.write_text(json.dumps(payload, indent=1, default=str) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return path
