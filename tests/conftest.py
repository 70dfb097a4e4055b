"""Shared fixtures: tiny real-architecture models, built once per test session per family."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def run_benchmark(tmp_path) -> Callable[..., dict]:
    """Runs ``benchmarks/<script> <args> --out <json>`` (src/ on the path) and returns its JSON."""

    def run(script: str, *args: str) -> dict:
        out = tmp_path / f"{Path(script).stem}.json"
        paths = [str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
        cmd = [sys.executable, script, *args, "--out", str(out)]
        subprocess.run(cmd, cwd=ROOT / "benchmarks", env=env, check=True, capture_output=True, timeout=600)
        return json.loads(out.read_text())

    return run


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


@pytest.fixture(scope="session")
def media_set(tmp_path_factory) -> dict[str, Path]:
    """Small media files, good and bad, of a training set from the wild (treat them as read-only):
    ``good`` and ``good2`` (8-frame 56x56 mp4), ``corrupt`` (random bytes), ``damaged`` (a good mp4
    whose header bytes are overwritten), ``truncated`` (a good mp4 cut to half its bytes: its index,
    at the end, is gone), ``cut`` (an mp4 with its index in front cut to 60% of its bytes: it opens
    and its first frame decodes, it breaks further in), ``missing`` (a path where nothing is)."""
    import numpy as np

    from videothinker.data.video import write_video

    root = tmp_path_factory.mktemp("media")
    rng = np.random.default_rng(0)
    for name in ("good", "good2"):
        write_video(root / f"{name}.mp4", rng.integers(0, 255, size=(8, 56, 56, 3), dtype=np.uint8), fps=4)
    data = (root / "good.mp4").read_bytes()
    (root / "corrupt.mp4").write_bytes(rng.integers(0, 256, size=4096, dtype=np.uint8).tobytes())
    (root / "damaged.mp4").write_bytes(bytes(64) + data[64:])
    (root / "truncated.mp4").write_bytes(data[: len(data) // 2])
    write_video(
        root / "streamed.mp4", rng.integers(0, 255, size=(8, 56, 56, 3), dtype=np.uint8), 4, faststart=True
    )
    streamed = (root / "streamed.mp4").read_bytes()
    (root / "cut.mp4").write_bytes(streamed[: len(streamed) * 6 // 10])
    names = ("good", "good2", "corrupt", "damaged", "truncated", "cut", "missing")
    return {name: root / f"{name}.mp4" for name in names}
