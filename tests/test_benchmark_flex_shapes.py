"""benchmarks/flex_shapes.py at tiny widths on a CPU: every timing is there, and flex attention at
a fixed cache length (static kernel) and after a second length (dynamic kernel) computes what the
step's matmul form computes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SRC = Path(__file__).resolve().parents[1] / "src"

pytestmark = pytest.mark.slow


def test_tiny_run(tmp_path):
    out = tmp_path / "flex_shapes.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "flex_shapes.py", "--tiny", "--out", str(out)]
    subprocess.run(cmd, cwd=BENCHMARKS, env=env, check=True, capture_output=True, timeout=600)
    result = json.loads(out.read_text())
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
