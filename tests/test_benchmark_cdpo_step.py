"""benchmarks/cdpo_step.py at tiny widths on a CPU: every path runs, the shared prompt sends fewer
positions through the text model, and --profile splits a policy pass into forward and backward
kernels; the floor's arithmetic by hand."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.slow
def test_tiny_run_with_the_profile(run_benchmark):
    args = [
        "--tiny",
        "--completion-tokens",
        "8",
        "--repeats",
        "1",
        "--paths",
        "lean,shared,shared_dense,naive",
    ]
    result = run_benchmark("cdpo_step.py", *args, "--profile")
    for path in ("lean", "shared", "shared_dense", "naive"):
        assert result[path]["update_s"] > 0, path
        phases = result[path]["profile"]["phases"]
        assert set(phases) == {"forward", "backward"}, path
        assert all(p["kernels"] > 0 and "matrix product" in p["by_kind"] for p in phases.values()), path
    P, G, T = result["prompt_tokens"], result["G"], result["T"]
    assert result["lean"]["profile"]["text_positions"] == G * (P + T - 1)
    assert result["shared"]["profile"]["text_positions"] == P + G * (T - 1)
    assert set(result["ratios"]) == {"shared", "shared_dense", "naive"}


def test_linear_floor_by_hand():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from fullsize import qwen2_5_vl_3b_config
        from update_profile import linear_floor_ms, text_linear_params
    finally:
        sys.path.remove(str(BENCHMARKS))
    # hidden 4, 2 heads of 2, 1 kv head, MLP 8, 3 layers: q 16 + k, v 16 + o 16 + MLP 96 = 144 a layer
    small = SimpleNamespace(
        hidden_size=4,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=2,
        intermediate_size=8,
        num_hidden_layers=3,
    )
    assert text_linear_params(small) == 432
    # 10 positions, checkpointing: (2 + 4 + 2) x 432 x 10 FLOP at 1000 FLOP/s = 34.56 s
    assert linear_floor_ms(small, 10, True, 1e3) == pytest.approx(34560)
    assert linear_floor_ms(small, 10, False, 1e3) == pytest.approx(25920)
    # half the layers recompute: (2 + 4 + 1) x 432 x 10 FLOP at 1000 FLOP/s
    assert linear_floor_ms(small, 10, 0.5, 1e3) == pytest.approx(30240)
    # Qwen2.5-VL-3B: 36 x (2048^2 + 2 x 2048 x 256 + 2048^2 + 3 x 2048 x 11008)
    assert text_linear_params(qwen2_5_vl_3b_config()) == 2_774_532_096
