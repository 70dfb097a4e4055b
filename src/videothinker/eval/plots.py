"""PNG plots of the report: accuracy bars across runs and training curves from training logs.

Figures are built with ``matplotlib.figure.Figure`` directly (the Agg canvas, no pyplot): no display
is needed and no global backend state is touched, so plotting works on headless machines and inside
other programs. Every function returns the path written, or None when it had nothing to draw.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from videothinker.data.records import QUESTION_KINDS

# Panels of the training figure: title -> the log keys drawn in it (each key missing from a log is
# simply absent from the panel; a panel with no data is left out).
TRAINING_PANELS: dict[str, tuple[str, ...]] = {
    "reward": ("reward", "reward/accuracy", "reward/exact_accuracy", "reward/format"),
    "reward per question kind": tuple(f"reward/{kind}" for kind in QUESTION_KINDS),
    "KL to the reference model": ("kl", "kl_bias", "kl_init"),
    "policy health": ("entropy", "degenerate", "repel_share"),
    "completion length (tokens)": ("completion_length",),
}


def bar_chart(
    path: str | Path, title: str, groups: Sequence[str], series: dict[str, Sequence[float | None]]
) -> Path | None:
    """Grouped bars: one group per x label, one bar per series (run); None values leave a gap.

    Args:
        groups: x labels (benchmarks, question kinds).
        series: run name -> one accuracy in [0, 1] (or None) per group.
    """
    from matplotlib.figure import Figure

    if not groups or not series:
        return None
    width = 0.8 / len(series)
    fig = Figure(
        figsize=(max(5.0, 1.2 * len(groups) * max(1, len(series)) ** 0.5 + 2), 4), layout="constrained"
    )
    ax = fig.subplots()
    for i, (name, values) in enumerate(series.items()):
        xs = [g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))]
        heights = [100 * v if v is not None else 0.0 for v in values]
        bars = ax.bar(xs, heights, width, label=name)
        for bar, value in zip(bars, values):
            if value is not None:
                ax.annotate(
                    f"{100 * value:.1f}",
                    (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center",
                    va="bottom",
                    fontsize=7,
                )
    ax.set_xticks(range(len(groups)), groups, rotation=20 if len(groups) > 4 else 0)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 105)
    ax.set_title(title)
    ax.legend(fontsize=8)
    path = Path(path)
    fig.savefig(path, dpi=120)
    return path


def _smooth(values: list[float]) -> list[float]:
    """Trailing moving average over about 5% of the points (none for short curves)."""
    window = len(values) // 20
    if window < 2:
        return values
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def training_curves(path: str | Path, logs: dict[str, list[dict]]) -> Path | None:
    """One panel per entry of TRAINING_PANELS that has data; a line per (run, key): raw values faint,
    a moving average solid.

    Args:
        logs: run name -> training log entries (dicts with a numeric "step").
    """
    from matplotlib.figure import Figure

    panels = []
    for title, keys in TRAINING_PANELS.items():
        lines = []
        for run, entries in logs.items():
            for key in keys:
                points = [(e["step"], float(e[key])) for e in entries if isinstance(e.get(key), int | float)]
                if points:
                    lines.append((f"{run}: {key}" if len(logs) > 1 else key, points))
        if lines:
            panels.append((title, lines))
    if not panels:
        return None
    cols = 2 if len(panels) > 1 else 1
    rows = (len(panels) + cols - 1) // cols
    fig = Figure(figsize=(6 * cols, 3.5 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, (title, lines) in zip(axes, panels):
        for label, points in lines:
            steps = [s for s, _ in points]
            values = [v for _, v in points]
            smoothed = _smooth(values)
            (line,) = ax.plot(steps, smoothed, label=label)
            if smoothed is not values:
                ax.plot(steps, values, color=line.get_color(), alpha=0.25, linewidth=0.8)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    path = Path(path)
    fig.savefig(path, dpi=120)
    return path
