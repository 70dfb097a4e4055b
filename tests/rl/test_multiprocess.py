"""Two training processes on CPU (torchrun, gloo): each takes its slice of the global batch, gradients
are averaged by the explicit all-reduce, and only the main process logs and writes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.slow

HERE = Path(__file__).parent


@pytest.mark.skipif(
    shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
    reason="torchrun is not installed",
)
def test_two_processes_train_in_step(tiny_qwen2_5_vl_dir, tmp_path):
    from videothinker.data.video import write_video

    records = []
    for i in range(4):
        frames = torch.randint(
            0, 255, (8, 56, 56, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(i)
        )
        write_video(tmp_path / f"v{i}.mp4", frames.numpy(), fps=4)
        records.append(
            {
                "problem": f"Which will happen {i}?",
                "options": ["A. x", "B. y", "C. z"],
                "solution": "<answer>B</answer>",
                "video": f"v{i}.mp4",
            }
        )
    (tmp_path / "train.json").write_text(json.dumps(records))
    out = tmp_path / "run"
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    env = {**os.environ, "PYTHONPATH": str(HERE), "OMP_NUM_THREADS": "1", "VIDEOTHINKER_PROGRESS": "0"}
    cmd = [
        torchrun,
        "--nproc_per_node",
        "2",
        "-m",
        "videothinker.cli",
        "train",
        "--stage",
        "grpo",
        "--config",
        "tiny_cpu",
        "--model",
        str(tiny_qwen2_5_vl_dir),
        "--data",
        str(tmp_path / "train.json"),
        "--out",
        str(out),
        "--set",
        "grpo.max_steps=2",
        "--set",
        "grpo.max_completion_length=8",
        "--set",
        "grpo.reward_funcs=[accuracy, 'toy_rewards:character_variety']",
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r.get("step") for r in rows] == [None, 1, 2]  # one header, each step once: main process only
    assert all(r["grad_norm"] > 0 for r in rows[1:])
    before, after = (
        load_file(str(tiny_qwen2_5_vl_dir / "model.safetensors")),
        load_file(str(out / "final" / "model.safetensors")),
    )
    assert any(not torch.equal(before[k], after[k]) for k in before)
