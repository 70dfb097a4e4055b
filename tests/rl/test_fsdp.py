"""FSDP2 training (distributed.strategy = fsdp) on CPU: torchrun, gloo, two processes, the tiny
Qwen2.5-VL. A sharded run's per-step losses equal a one-process run's with the same global batch and
seeds; a killed sharded run resumes to the same losses, on two processes (launched by torchrun or
by ``accelerate launch``) or on one; the final model is a plain HF checkpoint. On one process FSDP equals the plain path (CPU here; CUDA when there is a
GPU).

Tolerance: loss, KL, gradient norm, rewards and completion lengths agree within a relative 1e-5
(absolute 1e-9: the GRPO loss is near 0 by construction, group-centred advantages) between layouts:
two processes sum gradients in another order than one process accumulates them (measured: losses,
KL and rewards equal, gradient norms 1.2e-6 apart after 4 steps of lr 1e-3); a resume on the same
layout within a relative 1e-6 (measured: equal).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import videothinker
from videothinker.cli import main

pytestmark = pytest.mark.slow

HERE = Path(__file__).parent
SRC = Path(videothinker.__file__).parents[1]  # the package the children must import: this one
TORCHRUN = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
ACCELERATE = shutil.which("accelerate") or str(Path(sys.executable).parent / "accelerate")
ACROSS_LAYOUTS, SAME_LAYOUT = 1e-5, 1e-6  # relative
STEPS = 4
needs_torchrun = pytest.mark.skipif(not Path(TORCHRUN).exists(), reason="torchrun is not installed")


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> Path:
    """Six records over three small videos (PNG frame folders: no PyAV needed, as on the GPU machine),
    both question kinds."""
    from videothinker.lab.generate import write_frames

    root = tmp_path_factory.mktemp("fsdp-data")
    out = []
    for i in range(3):
        frames = torch.randint(
            0, 255, (8, 56, 56, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(i)
        )
        write_frames(root / f"v{i}", frames.numpy())
        for j, kind in enumerate(("observational", "inferential")):
            out.append(
                {
                    "problem": f"Which of the following will happen if cube {i} is removed?",
                    "options": ["A. They collide", "B. The cube moves", "C. Nothing"],
                    "solution": "<answer>A,C</answer>" if j else "<answer>B</answer>",
                    "problem_type": "multiple choice",
                    "video": f"v{i}",
                    "data_type": "frame",
                    "fps": 4,
                    "question_kind": kind,
                }
            )
    (root / "train.json").write_text(json.dumps(out))
    return root / "train.json"


def _args(model: Path, data: Path, out: Path, *sets: str) -> list[str]:
    """`train` arguments: GRPO on the tiny model, 2 prompts per step (global), G = 3, 8 tokens."""
    settings = [
        "grpo.max_completion_length=8",
        "grpo.num_generations=3",
        "grpo.learning_rate=1e-3",
        f"grpo.max_steps={STEPS}",
        "grpo.save_steps=2",
        "grpo.save_total_limit=5",
        "grpo.reward_funcs=[accuracy, format, 'toy_rewards:character_variety']",
        *sets,
    ]
    return [
        "train", "--stage", "grpo", "--config", "tiny_cpu", "--model", str(model), "--data", str(data),
        "--out", str(out), *(a for s in settings for a in ("--set", s)),
    ]  # fmt: skip


def _launch(processes: int, args: list[str], script: str | None = None, *, accelerate: bool = False, **env):
    """`videothinker` (or a test script) on ``processes`` processes, by torchrun or by ``accelerate
    launch`` (its GPU launcher, torchrun underneath; on a CPU host the processes run on gloo)."""
    if accelerate:
        with socket.socket() as s:  # a free port for the main process
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        launch = [ACCELERATE, "launch", "--multi_gpu", "--num_machines", "1", "--mixed_precision", "no",
                  "--dynamo_backend", "no", "--num_processes", str(processes), "--main_process_port", str(port)]  # fmt: skip
    else:
        launch = [TORCHRUN, "--standalone", "--nproc_per_node", str(processes)]
    target = [str(HERE / script)] if script else ["-m", "videothinker.cli"]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), str(SRC)]),
        "OMP_NUM_THREADS": "1",
        "VIDEOTHINKER_PROGRESS": "0",
        "CUDA_VISIBLE_DEVICES": "",  # gloo on the CPU on any host, as the one-process runs here
        **env,
    }
    return subprocess.run([*launch, *target, *args], env=env, capture_output=True, text=True, timeout=900)


def _rows(out: Path) -> list[dict]:
    return [r for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if "step" in r]


def _assert_same_steps(a: list[dict], b: list[dict], tol: float) -> None:
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a, b):
        for key in ("loss", "kl", "grad_norm", "reward", "reward_std", "completion_length"):
            assert rb[key] == pytest.approx(ra[key], rel=tol, abs=1e-9), (ra["step"], key)


@pytest.fixture
def on_cpu(monkeypatch):
    """This process's runs on the CPU too (the trainer takes CUDA where there is one)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture(scope="module")
def sharded_run(tiny_qwen2_5_vl_dir, records, tmp_path_factory) -> Path:
    """Two processes, FSDP, one prompt per process and micro-batch: 2 prompts per step."""
    out = tmp_path_factory.mktemp("fsdp") / "two"
    done = _launch(2, _args(tiny_qwen2_5_vl_dir, records, out, "distributed.strategy=fsdp"))
    assert done.returncode == 0, done.stderr[-4000:]
    return out


@needs_torchrun
def test_sharded_run_equals_one_process_with_the_same_global_batch(
    sharded_run, tiny_qwen2_5_vl_dir, records, tmp_path, on_cpu
):
    one = tmp_path / "one"  # one process, the same 2 prompts per step as two micro-batches
    assert main(_args(tiny_qwen2_5_vl_dir, records, one, "grpo.gradient_accumulation_steps=2")) == 0
    rows, expected = _rows(sharded_run), _rows(one)
    assert len(rows) == STEPS and all(r["grad_norm"] > 0 and r["loss"] != 0 for r in rows)
    assert len({r["loss"] for r in rows}) == STEPS  # the steps differ: the weights move
    _assert_same_steps(expected, rows, ACROSS_LAYOUTS)
    start = json.loads((sharded_run / "log.jsonl").read_text().splitlines()[0])
    assert "gathered from its shards" in start["engine"]  # sampled from full weights gathered for it

    # the final model: full HF weights (rank 0 gathered them), loadable, as trained
    from videothinker.models.loading import load_model

    a, b = (
        load_file(str(sharded_run / "final" / "model.safetensors")),
        load_file(str(one / "final" / "model.safetensors")),
    )
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    loaded, expected = load_model(sharded_run / "final").state_dict(), load_model(one / "final").state_dict()
    assert loaded.keys() == expected.keys()
    assert all(torch.allclose(loaded[k], expected[k], atol=1e-5) for k in loaded)
    before = load_file(str(tiny_qwen2_5_vl_dir / "model.safetensors"))
    assert all(not torch.equal(before[k], a[k]) for k in before)
    ckpt = sharded_run / "checkpoint-2"
    assert sorted(p.name for p in ckpt.glob("optimizer*")) == ["optimizer-rank0.pt", "optimizer-rank1.pt"]
    assert json.loads((ckpt / "trainer_state.json").read_text())["world_size"] == 2


@needs_torchrun
def test_two_sharded_processes_run_the_shared_prompt_under_bf16(tiny_qwen2_5_vl_dir, records, tmp_path):
    """grpo.share_prompt under FSDP2 on two processes with bf16 compute (fp32 masters, as the paper
    presets): the layers' forward hooks cast their inputs and so copy the layout with them; the
    attention still reads it in every layer (the trainer's own check stops a run where it did not)."""
    out = tmp_path / "shared"
    overrides = ("distributed.strategy=fsdp", "grpo.share_prompt=true", "grpo.bf16=true")
    done = _launch(2, _args(tiny_qwen2_5_vl_dir, records, out, *overrides))
    assert done.returncode == 0, done.stderr[-4000:]
    rows = _rows(out)
    assert len(rows) == STEPS and all(math.isfinite(r["loss"]) and r["grad_norm"] > 0 for r in rows)


@needs_torchrun
def test_killed_sharded_run_resumes_to_the_same_losses(
    sharded_run, tiny_qwen2_5_vl_dir, records, tmp_path, on_cpu
):
    killed = tmp_path / "killed"
    args = _args(tiny_qwen2_5_vl_dir, records, killed, "distributed.strategy=fsdp")
    died = _launch(2, args, "train_then_die.py", DIE_AFTER_STEP="2")
    assert died.returncode != 0  # the CLI exits 130 on both processes
    assert sorted(p.name for p in killed.iterdir() if p.name.startswith("checkpoint")) == ["checkpoint-2"]
    regrown = tmp_path / "one-process"  # the same checkpoint, resumed on one process below
    shutil.copytree(killed, regrown)

    # resumes from checkpoint-2, launched by accelerate, the bias model now whole on each process
    done = _launch(2, [*args, "--set", "distributed.reference=replicate"], accelerate=True)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "resumed from" in done.stdout + done.stderr
    _assert_same_steps(_rows(sharded_run), _rows(killed), SAME_LAYOUT)
    a, b = (
        load_file(str(sharded_run / "final" / "model.safetensors")),
        load_file(str(killed / "final" / "model.safetensors")),
    )
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)

    # on one process, plain path: the optimizer shards reassembled; the same 2 prompts per step
    one = _args(tiny_qwen2_5_vl_dir, records, regrown, "grpo.gradient_accumulation_steps=2")
    assert main(one) == 0
    _assert_same_steps(_rows(sharded_run), _rows(regrown), ACROSS_LAYOUTS)


@pytest.fixture
def fresh_process_group():
    """A run with strategy fsdp on one process starts a process group of its own; close it after."""
    import torch.distributed as dist

    assert not dist.is_initialized()
    yield
    if dist.is_initialized():
        dist.destroy_process_group()


@pytest.mark.parametrize(
    "device",
    [
        "cpu",
        pytest.param(
            "cuda",
            marks=[
                pytest.mark.gpu,
                pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
            ],
        ),
    ],
)
def test_fsdp_on_one_process_equals_the_plain_path(
    device, fresh_process_group, tiny_qwen2_5_vl_dir, records, tmp_path, monkeypatch
):
    if device == "cpu":  # the trainer takes CUDA where there is one
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    plain, sharded = tmp_path / "plain", tmp_path / "fsdp"
    assert main(_args(tiny_qwen2_5_vl_dir, records, plain, "grpo.max_steps=2")) == 0
    assert (
        main(_args(tiny_qwen2_5_vl_dir, records, sharded, "grpo.max_steps=2", "distributed.strategy=fsdp"))
        == 0
    )
    # CUDA's atomic adds (the backward of indexing) reorder sums from run to run: a looser tolerance
    _assert_same_steps(_rows(plain), _rows(sharded), SAME_LAYOUT if device == "cpu" else ACROSS_LAYOUTS)
    a, b = (
        load_file(str(plain / "final" / "model.safetensors")),
        load_file(str(sharded / "final" / "model.safetensors")),
    )
    assert all(torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-6) for k in a)


def test_fsdp_with_the_shared_prompt_equals_the_plain_path(
    fresh_process_group, tiny_qwen2_5_vl_dir, records, tmp_path, on_cpu
):
    """grpo.share_prompt on sharded layers (one process, CPU): the same steps and weights as the
    plain per-sequence run (the reference model, beta 0.04, takes the shared path too)."""
    plain, sharded = tmp_path / "plain", tmp_path / "fsdp"
    common = ("grpo.max_steps=2", "grpo.beta=0.04")
    assert main(_args(tiny_qwen2_5_vl_dir, records, plain, *common)) == 0
    shared = (*common, "distributed.strategy=fsdp", "grpo.share_prompt=true")
    assert main(_args(tiny_qwen2_5_vl_dir, records, sharded, *shared)) == 0
    _assert_same_steps(_rows(plain), _rows(sharded), ACROSS_LAYOUTS)
    a, b = (
        load_file(str(plain / "final" / "model.safetensors")),
        load_file(str(sharded / "final" / "model.safetensors")),
    )
    # A key bias's gradient is zero in exact arithmetic (it shifts all of a query's scores by one
    # constant, which the softmax ignores): Adam turns its rounding noise, summed in another order
    # here, into lr-sized steps. Every other weight agrees.
    noise = [k for k in a if k.endswith("k_proj.bias")]
    assert noise and all(torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-6) for k in a if k not in noise)
