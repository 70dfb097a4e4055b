"""benchmarks/flex_shapes.py at tiny widths on a CPU: every timing is there, and flex attention at
a fixed cache length (static kernel) and after a second length (dynamic kernel) computes what the
step's matmul form computes."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


def test_tiny_run(run_benchmark):
    result = run_benchmark("flex_shapes.py", "--tiny")
    assert (result["slots"], result["written"], result["other"]) == (320, 200, 192)
    timed = result["us_per_call"]
    assert set(timed) == {
        "flex, first length (static)",
        "flex, after a second length (dynamic)",
        "flex, static again",
        "flex_block_mask (once a step)",
        "baddbmm",
        "flex at 284 slots",
        "baddbmm at 284 slots",
    }
    assert all(us > 0 for us in timed.values())
    diffs = result["max_abs_diff_to_baddbmm"]
    assert 0 <= diffs["flex (static)"] < 0.02 and 0 <= diffs["flex (dynamic)"] < 0.02  # bf16 rounding
