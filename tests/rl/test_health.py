"""The collapse guard: degenerate completions and the rules that stop a run (hand-worked histories)."""

from __future__ import annotations

import doctest

import pytest

from videothinker.cdpo_config import CollapseConfig
from videothinker.rl import health
from videothinker.rl.health import CollapseMonitor, degenerate_share, is_degenerate


def test_doctests():
    assert doctest.testmod(health).failed == 0


def test_degenerate_by_hand():
    good = "<think>Collisions: red-cyan.</think><answer>A,B</answer>"
    assert not is_degenerate(good, list(range(12)))
    assert is_degenerate("<think>no answer tag</think>", [1, 2, 3])  # no answer
    assert is_degenerate(
        "<answer>A</answer> no no no no no no", [4, 5, 6] + [9] * 6
    )  # 6 of 9 tokens: over half
    assert not is_degenerate("<answer>A</answer> no no no", [4, 5, 6, 7] + [9] * 4)  # 4 of 8: not over half
    assert not is_degenerate("<answer>A</answer>", [9] * 7)  # shorter than 8 tokens: never repetitive
    # 2 of 4 completions degenerate
    assert degenerate_share([good, "....", good, ""], [[1, 2], [3] * 9, [1, 2], []]) == 0.5
    assert degenerate_share([], []) == 0.0


def _feed(monitor, rows):
    fired = [monitor.update(row) for row in rows]
    return next(((i + 1, f) for i, f in enumerate(fired) if f), None)


def test_format_rule_fires_when_the_window_mean_halves():
    # window 2: start = mean(1, 1) = 1; the last two steps' mean must fall below 0.5 * 1.
    # steps 3, 4: 0.6, 0.5 -> mean 0.55 (no); step 5: 0.3 -> mean(0.5, 0.3) = 0.4 < 0.5 (fires at step 5)
    monitor = CollapseMonitor(CollapseConfig(window=2))
    rows = [{"reward/format": v, "entropy": 1.0, "degenerate": 0.0} for v in (1, 1, 0.6, 0.5, 0.3)]
    step, why = _feed(monitor, rows)
    assert step == 5 and "format reward fell to 0.400" in why and "from 1.000" in why


def test_format_rule_needs_a_start_worth_keeping():
    # an untrained model that never earns the format reward (start 0.1 < 0.2) is not collapsing
    monitor = CollapseMonitor(CollapseConfig(window=2))
    assert _feed(monitor, [{"reward/format": v} for v in (0.1, 0.1, 0.0, 0.0, 0.0)]) is None


def test_entropy_and_degenerate_rules():
    # entropy: start 2.0, last mean 0.05 < 0.05 * 2.0 = 0.1
    monitor = CollapseMonitor(CollapseConfig(window=2))
    step, why = _feed(monitor, [{"entropy": v} for v in (2.0, 2.0, 1.0, 0.06, 0.04)])
    assert step == 5 and "token entropy fell to 0.0500" in why
    # degenerate: start 0.1, rises to a last mean of 0.7 > 0.1 + 0.5
    monitor = CollapseMonitor(CollapseConfig(window=2))
    step, why = _feed(monitor, [{"degenerate": v} for v in (0.1, 0.1, 0.5, 0.6, 0.8)])
    assert step == 5 and "degenerate completions rose to 70%" in why
    # a healthy run: nothing fires
    monitor = CollapseMonitor(CollapseConfig(window=2))
    rows = [{"reward/format": 1.0, "entropy": 0.5 + 0.01 * i, "degenerate": 0.02} for i in range(20)]
    assert _feed(monitor, rows) is None


def test_disabled_monitor_records_but_never_fires_and_state_round_trips():
    monitor = CollapseMonitor(CollapseConfig(window=1, enabled=False))
    assert _feed(monitor, [{"reward/format": v} for v in (1.0, 0.0, 0.0)]) is None
    again = CollapseMonitor(CollapseConfig(window=1))
    again.load_state_dict(monitor.state_dict())
    assert again.update({"reward/format": 0.0}) is not None  # resumes with the same history


@pytest.mark.parametrize(
    "field, value, message",
    [("window", 0, "collapse.window"), ("min_format_ratio", 1.5, "collapse.min_format_ratio")],
)
def test_config_problems(field, value, message):
    assert any(message in p for p in CollapseConfig(**{field: value}).problems())
