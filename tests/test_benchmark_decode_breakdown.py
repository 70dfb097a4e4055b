"""benchmarks/decode_breakdown.py at tiny widths on a CPU: every attention variant that claims to
compute the decode attention agrees with the step's own SDPA call, the one that drops the mask does
not, and the kernel kinds are told apart."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

pytestmark = pytest.mark.slow


def test_tiny_run(run_benchmark):
    result = run_benchmark("decode_breakdown.py", "--tiny")
    attention = result["attention"]
    assert attention["sdpa"]["max_abs_diff_to_sdpa"] == 0.0
    for name in (
        "sdpa_bool_mask",
        "sdpa_math",
        "matmul_softmax",
        "baddbmm (the step's matmul)",
        "flex (the step's block mask)",
    ):
        assert attention[name]["max_abs_diff_to_sdpa"] < 0.05, name  # bf16 rounding only
    assert attention["sdpa_no_mask (wrong; lower bound)"]["max_abs_diff_to_sdpa"] > 0.05
    assert result["profile"]["kernels_per_step"] > 0
    assert set(result["products"]) == {"qkv", "o", "gate_up", "down", "lm_head"}


def test_kernel_kinds():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from decode_breakdown import kind_of
    finally:
        sys.path.remove(str(BENCHMARKS))
    assert kind_of("void cutlass::Kernel2<cutlass_80_wmma_tensorop_bf16_s161616gemm>") == "matrix product"
    assert kind_of("fmha_cutlassF_bf16_aligned_64x64_rf_sm80") == "attention"
    assert kind_of("void at::native::(anonymous)::rms_norm_kernel") == "norm"
    assert kind_of("void at::native::index_elementwise_kernel") == "copy"
    assert kind_of("void at::native::vectorized_elementwise_kernel<4, AddFunctor>") == "elementwise/other"
    # the CPU stand-ins of --tiny runs: aten ops by name
    for name in ("aten::mm", "aten::addmm", "aten::bmm", "aten::linear", "aten::matmul"):
        assert kind_of(name) == "matrix product", name
    assert kind_of("aten::scaled_dot_product_attention") == "attention"
    assert kind_of("aten::mul") == "elementwise/other"
