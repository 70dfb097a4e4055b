"""Shared fixtures: tiny real-architecture models, built once per test session per family."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Callable[[str], Path]:
    """``tiny_model_dir("qwen2_5_vl")`` -> folder of a tiny model of that family (built on first use,
    then shared by the whole session; treat it as read-only)."""
    built: dict[str, Path] = {}

    def get(arch: str = "qwen2_5_vl") -> Path:
        if arch not in built:
            from videothinker.models.tiny import build_tiny_model

            built[arch] = build_tiny_model(arch, tmp_path_factory.mktemp(f"tiny-{arch}") / "model")
        return built[arch]

    return get


@pytest.fixture(scope="session")
def tiny_qwen2_vl_dir(tiny_model_dir) -> Path:
    return tiny_model_dir("qwen2_vl")


@pytest.fixture(scope="session")
def tiny_qwen2_5_vl_dir(tiny_model_dir) -> Path:
    return tiny_model_dir("qwen2_5_vl")


@pytest.fixture(scope="session")
def tiny_qwen3_vl_dir(tiny_model_dir) -> Path:
    return tiny_model_dir("qwen3_vl")
