"""Fixtures of the training tests: a small set of lab-style records over three tiny videos."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from videothinker.data.video import write_video


@pytest.fixture(scope="module")
def lab_records(tmp_path_factory) -> Path:
    """Six records over three small videos, both question kinds."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    records = []
    for i in range(3):
        frames = rng.integers(0, 255, size=(8, 56, 56, 3), dtype=np.uint8)
        write_video(root / f"videos/v{i}.mp4", frames, fps=4)
        for j, kind in enumerate(("observational", "inferential")):
            records.append(
                {
                    "problem_id": 2 * i + j,
                    "problem": f"Which of the following will happen if the red cube number {i} is removed?",
                    "options": ["A. The sphere and the cylinder collide", "B. The cube moves", "C. Nothing"],
                    "solution": "<answer>A,C</answer>" if j else "<answer>B</answer>",
                    "problem_type": "multiple choice",
                    "data_type": "video",
                    "video": f"videos/v{i}.mp4",
                    "question_kind": kind,
                }
            )
    path = root / "train.json"
    path.write_text(json.dumps(records))
    return path
