"""Step time and peak memory of `videothinker train` (CDPO) per configuration, on full-size random-init models.

The configurations (RUNS) compare the optimizers and precisions (grpo.optim, model.dtype), the
sampling engines (rollout.engine=graph, the default, against generate), and one GPU against two
(PROCESSES: torchrun, distributed.strategy replicate or fsdp; each process takes one prompt of G = 8
completions per step, so two GPUs train twice the prompts per step).

Each run is the real command, `videothinker train --config PRESET ...`, in a process of its own, on a
full-size random-init Qwen2.5-VL (3B or 7B, built from the published dimensions; weights do not change
speed or memory) with the tiny model's tokenizer and processor, the policy's own initial weights as
the bias model, and one 16-frame 448x308 video per prompt (1408 video tokens), as PNG frame folders
(no PyAV needed). The presets' settings stand: G = 8, up to 768 completion tokens, gradient
checkpointing, beta = -0.01, lr 1e-6. A run stops after ``--steps`` logged steps (its process is
ended: nothing is saved). Per run it records, from log.jsonl, the step times (the first, which holds
torch.compile of torchao's update kernels, apart) and torch's per-step peaks
(``peak_allocated_gib``, ``peak_reserved_gib``: the fullest GPU's), completion tokens per second over
all GPUs, and the most memory nvidia-smi reported on each GPU, polled every 0.5 s. One JSON per run in --out; runs already there are skipped (rerun with --force), so the
list can be split over several calls. A table of all results is printed at the end.

    # one H200; torchao from a wheel carried in .whl/ (pip download --no-deps torchao -d .whl)
    pip install --no-deps --no-index .whl/torchao-*.whl
    PYTHONPATH=src python benchmarks/train_e2e.py --runs 3b_fp32_master,3b_bf16_8bit
    PYTHONPATH=src python benchmarks/train_e2e.py --runs 7b_fp32_fsdp_2gpu   # two H200s
    PYTHONPATH=src python benchmarks/train_e2e.py --tiny --steps 2   # CPU smoke run, tiny widths
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

# each prompt once in every log-prob pass, no recompute: the update at its leanest (with each decode candidate)
SHARED_NOCKPT = ["grpo.share_prompt=true", "model.gradient_checkpointing=false"]
# the fastest decode measured: the fused layer compiled whole, matmul attention over the cache
COMPILED_MATMUL = ["rollout.compile=true", "rollout.decode_attention=matmul"]

# name -> (model size, preset, extra --set overrides). The presets are the ones users run.
RUNS: dict[str, tuple[str, str, list[str]]] = {
    # the paper preset: fp32 weights, fused AdamW; since 2026-12-05 it decodes with the fused step
    # (rollout.fused_step unset: fused where the engine copies the weights); _simple is the step before.
    # Since a later session that day it also attends over the cache with matmul and shares each prompt
    # across its completions (the defaults); _per_sequence is the update before
    "3b_fp32_master": ("3b", "paper_qwen2_5_vl_3b_cdpo", []),
    "3b_fp32_master_simple": ("3b", "paper_qwen2_5_vl_3b_cdpo", ["rollout.fused_step=false"]),
    "3b_fp32_master_generate": ("3b", "paper_qwen2_5_vl_3b_cdpo", ["rollout.engine=generate"]),  # no engine
    "3b_fp32_master_compiled": (  # the simple step's compiled parts (as measured before the fused default)
        "3b",
        "paper_qwen2_5_vl_3b_cdpo",
        ["rollout.compile=true", "rollout.fused_step=false"],
    ),
    "3b_fp32_master_fused": ("3b", "paper_qwen2_5_vl_3b_cdpo", ["rollout.fused_step=true"]),
    "3b_fp32_master_fused_compiled": (  # the fused layer compiled whole (until 2026-12-05: the compiled parts)
        "3b",
        "paper_qwen2_5_vl_3b_cdpo",
        ["rollout.fused_step=true", "rollout.compile=true"],
    ),
    # selective checkpointing: only the first N of the 36 decoder layers recompute (the rest keep activations)
    "3b_fp32_master_ckpt24": ("3b", "paper_qwen2_5_vl_3b_cdpo", ["model.checkpoint_layers=24"]),
    "3b_fp32_master_ckpt12": ("3b", "paper_qwen2_5_vl_3b_cdpo", ["model.checkpoint_layers=12"]),
    # one sequence per completion in every log-prob pass (grpo.share_prompt's default until 2026-12-05)
    "3b_fp32_master_per_sequence": ("3b", "paper_qwen2_5_vl_3b_cdpo", ["grpo.share_prompt=false"]),
    # the preset as it ran when the speed work began (8.85 s on 2026-12-01): simple step, per sequence
    "3b_fp32_master_before": (
        "3b",
        "paper_qwen2_5_vl_3b_cdpo",
        ["rollout.fused_step=false", "grpo.share_prompt=false"],
    ),
    # each prompt run once for its G completions in every log-prob pass (grpo.share_prompt)
    "3b_fp32_master_shared": ("3b", "paper_qwen2_5_vl_3b_cdpo", ["grpo.share_prompt=true"]),
    # ... whose smaller activations (7 636 positions, not 18 136) may pay for less recompute
    "3b_fp32_master_shared_ckpt12": (
        "3b",
        "paper_qwen2_5_vl_3b_cdpo",
        ["grpo.share_prompt=true", "model.checkpoint_layers=12"],
    ),
    "3b_fp32_master_shared_nockpt": ("3b", "paper_qwen2_5_vl_3b_cdpo", SHARED_NOCKPT),
    # ... with the decode candidates of decode.py: the fused layer compiled whole, matmul attention over the cache
    "3b_fp32_master_shared_nockpt_compiled": (
        "3b",
        "paper_qwen2_5_vl_3b_cdpo",
        [*SHARED_NOCKPT, "rollout.compile=true"],
    ),
    "3b_fp32_master_shared_nockpt_matmul": (
        "3b",
        "paper_qwen2_5_vl_3b_cdpo",
        [*SHARED_NOCKPT, "rollout.decode_attention=matmul"],
    ),
    "3b_fp32_master_shared_nockpt_compiled_matmul": (
        "3b",
        "paper_qwen2_5_vl_3b_cdpo",
        [*SHARED_NOCKPT, *COMPILED_MATMUL],
    ),
    # the shared prompt with recompute (the paper preset's memory) and the fastest decode candidates
    "3b_fp32_master_shared_compiled_matmul": (
        "3b",
        "paper_qwen2_5_vl_3b_cdpo",
        ["grpo.share_prompt=true", *COMPILED_MATMUL],
    ),
    # flex attention over the cache (it reads only the written blocks), eager and compiled layers
    "3b_fp32_master_flex": ("3b", "paper_qwen2_5_vl_3b_cdpo", ["rollout.decode_attention=flex"]),
    "3b_fp32_master_compiled_flex": (
        "3b",
        "paper_qwen2_5_vl_3b_cdpo",
        ["rollout.compile=true", "rollout.decode_attention=flex"],
    ),
    "3b_fp32_master_shared_compiled_flex": (
        "3b",
        "paper_qwen2_5_vl_3b_cdpo",
        ["grpo.share_prompt=true", "rollout.compile=true", "rollout.decode_attention=flex"],
    ),
    "3b_fp32_master_shared_ckpt12_compiled_matmul": (
        "3b",
        "paper_qwen2_5_vl_3b_cdpo",
        ["grpo.share_prompt=true", "model.checkpoint_layers=12", *COMPILED_MATMUL],
    ),
    # CDPO's third model: the bounded form with an anchor to the initial model (the cost target)
    "3b_fp32_master_anchor": (
        "3b",
        "qwen2_5_vl_3b_cdpo_bounded",
        ["cdpo.anchor_beta=0.01"],
    ),
    "3b_fp32_8bit": ("3b", "paper_qwen2_5_vl_3b_cdpo", ["optim=adamw_torch_8bit"]),
    "3b_bf16_sr": ("3b", "paper_qwen2_5_vl_3b_cdpo", ["model.dtype=bfloat16", "optim=adamw_torch_bf16_sr"]),
    "3b_bf16_8bit": ("3b", "paper_qwen2_5_vl_3b_cdpo_48gb", []),
    "3b_bf16_4bit": ("3b", "paper_qwen2_5_vl_3b_cdpo_48gb", ["optim=adamw_torch_4bit"]),
    "7b_bf16_8bit": ("7b", "paper_qwen2_5_vl_7b_cdpo", []),
    "7b_bf16_sr": ("7b", "paper_qwen2_5_vl_7b_cdpo", ["optim=adamw_torch_bf16_sr"]),
    # FSDP2 at world size 1 (one process; the memory model of docs/TRAINING.md at N = 1)
    "3b_fp32_fsdp_1gpu": ("3b", "paper_qwen2_5_vl_3b_cdpo", ["distributed.strategy=fsdp"]),
    # two GPUs: the paper's settings (fp32 masters, AdamW), the 3B replicated or sharded, the 7B sharded
    "3b_fp32_master_2gpu": ("3b", "paper_qwen2_5_vl_3b_cdpo", []),
    "3b_fp32_fsdp_2gpu": ("3b", "paper_qwen2_5_vl_3b_cdpo", ["distributed.strategy=fsdp"]),
    "7b_fp32_fsdp_2gpu": ("7b", "paper_qwen2_5_vl_3b_cdpo", ["distributed.strategy=fsdp"]),
    "7b_fp32_fsdp_2gpu_reference_replicated": (
        "7b",
        "paper_qwen2_5_vl_3b_cdpo",
        ["distributed.strategy=fsdp", "distributed.reference=replicate"],
    ),
}
PROCESSES = {run: 2 for run in RUNS if run.endswith(("_2gpu", "_2gpu_reference_replicated"))}  # else 1

# Published dimensions (config.json of Qwen2.5-VL-3B-Instruct and -7B-Instruct); the vision tower is
# the same but for the width it projects to.
SIZES = {
    "3b": dict(hidden=2048, intermediate=11008, layers=36, heads=16, kv_heads=2, vocab=151936, tied=True),
    "7b": dict(hidden=3584, intermediate=18944, layers=28, heads=28, kv_heads=4, vocab=152064, tied=False),
}
VISION = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, window_size=112)
VISION_FULL_ATTENTION = [7, 15, 23, 31]
TINY = dict(hidden=128, intermediate=256, layers=2, heads=4, kv_heads=2)  # --tiny: CPU smoke widths
TINY_VISION = dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=2, window_size=112)

FRAMES, HEIGHT, WIDTH = 16, 308, 448  # 8 x 22 x 32 patches -> 1408 video tokens after the 2x2 merge
TINY_OVERRIDES = [  # --tiny: small frames and short completions, so a CPU runs a step in seconds
    "video.max_frames=4",
    "video.min_pixels=3136",
    "video.max_pixels=12544",
    "max_completion_length=16",
    "num_generations=4",
]
GIB = 2**30


def build_model(size: str, work: Path, tiny: bool) -> Path:
    """A random-init Qwen2.5-VL of ``size`` with the published dimensions (``tiny``: the CPU smoke
    widths), the tiny model's tokenizer and processor beside it; built once into ``work``."""
    import torch
    from transformers import AutoConfig, AutoProcessor, GenerationConfig, Qwen2_5_VLForConditionalGeneration

    from videothinker.models.tiny import build_tiny_model

    out = work / f"qwen2_5_vl_{size}{'_tiny' if tiny else ''}"
    if (out / "config.json").is_file():
        return out
    tokenizer_source = work / "tiny"
    if not (tokenizer_source / "config.json").is_file():
        build_tiny_model("qwen2_5_vl", tokenizer_source, overwrite=True)
    config = AutoConfig.from_pretrained(tokenizer_source)  # its token ids match the tokenizer
    dims = {**SIZES[size], **(TINY if tiny else {})}
    text = config.text_config
    text.hidden_size, text.intermediate_size = dims["hidden"], dims["intermediate"]
    text.num_hidden_layers, text.num_attention_heads = dims["layers"], dims["heads"]
    text.num_key_value_heads, text.vocab_size = dims["kv_heads"], dims["vocab"]
    text.max_position_embeddings = 128000
    text.layer_types = ["full_attention"] * dims["layers"]
    head_dim = dims["hidden"] // dims["heads"]
    text.rope_parameters["mrope_section"] = [16, 24, 24] if head_dim == 128 else [4, 6, 6]
    text.tie_word_embeddings = config.tie_word_embeddings = dims["tied"]
    vision = config.vision_config
    for key, value in (TINY_VISION if tiny else VISION).items():
        setattr(vision, key, value)
    vision.fullatt_block_indexes = [1] if tiny else VISION_FULL_ATTENTION
    vision.out_hidden_size = dims["hidden"]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=torch.bfloat16)
    model.generation_config = GenerationConfig.from_pretrained(tokenizer_source)
    model.save_pretrained(out)
    AutoProcessor.from_pretrained(tokenizer_source).save_pretrained(out)
    del model
    return out


def build_data(work: Path, tiny: bool, records: int = 4) -> Path:
    """``records`` questions (both kinds), each on its own folder of 16 random PNG frames at 2 fps."""
    import numpy as np
    from PIL import Image

    root = work / ("data_tiny" if tiny else "data")
    path = root / "train.json"
    if path.is_file():
        return path
    rng = np.random.default_rng(0)
    frames, height, width = (4, 56, 56) if tiny else (FRAMES, HEIGHT, WIDTH)
    rows = []
    for i in range(records):
        folder = root / f"videos/v{i}"
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(frames):
            pixels = rng.integers(0, 255, size=(height, width, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"frame_{k:03d}.png")
        rows.append(
            {
                "problem_id": i,
                "problem": f"Which of the following will happen if the cyan cylinder number {i} is removed?",
                "options": ["A. The sphere and the cube collide", "B. The cube moves", "C. Nothing"],
                "solution": "<answer>B</answer>",
                "problem_type": "multiple choice",
                "data_type": "frame",
                "fps": 2.0,
                "video": f"videos/v{i}",
                "question_kind": ("observational", "inferential")[i % 2],
            }
        )
    path.write_text(json.dumps(rows))
    return path


def train_command(run: str, model: Path, data: Path, out: Path, tiny: bool) -> list[str]:
    """The `videothinker train` command line of ``run`` (a key of RUNS)."""
    _, preset, overrides = RUNS[run]
    sets = [*overrides, "max_steps=1000", "save_steps=1000", "logging_steps=1"]
    sets += TINY_OVERRIDES if tiny else []
    processes = PROCESSES.get(run, 1)
    launch = [sys.executable]
    if processes > 1:  # torchrun, as `python -m torch.distributed.run`
        launch += ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    command = [*launch, "-m", "videothinker.cli", "train", "--config", preset, "--model", str(model)]
    command += ["--reference", str(model), "--data", str(data), "--out", str(out), "--no-resume"]
    for item in sets:
        command += ["--set", item]
    return command


class GpuMemoryPoller:
    """The most memory nvidia-smi reports in use on each of the first ``gpus`` GPUs while the block
    runs (``peaks_mib``; ``peak_mib`` the largest; None without nvidia-smi)."""

    def __init__(self, interval: float = 0.5, gpus: int = 1):
        self.interval, self.peaks_mib, self._stop = interval, None, threading.Event()
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")
        indices = [i for i in visible if i][:gpus] or [str(i) for i in range(gpus)]
        self.command = ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"]
        self.command += ["-i", ",".join(indices)]

    @property
    def peak_mib(self) -> float | None:
        return None if self.peaks_mib is None else max(self.peaks_mib)

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                out = subprocess.run(self.command, capture_output=True, text=True, timeout=5).stdout
                used = [float(line) for line in out.split()]
                self.peaks_mib = [max(a, b) for a, b in zip(self.peaks_mib or [0.0] * len(used), used)]
            except (OSError, ValueError, subprocess.SubprocessError):
                return
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=10)


def gpu_name() -> str | None:
    """The GPU's name from nvidia-smi (this process never opens a CUDA context: its memory would count)."""
    try:
        result = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader", "-i", "0"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None


def log_rows(out: Path) -> list[dict]:
    log = out / "log.jsonl"
    if not log.is_file():
        return []
    return [r for r in map(json.loads, log.read_text().splitlines()) if "step" in r]


def summarize(rows: list[dict]) -> dict:
    """Step times (the first apart: it compiles) and the largest per-step peaks of log.jsonl rows."""
    times = [r["step_time"] for r in rows]
    out = {
        "steps": len(rows),
        "first_step_s": times[0] if times else None,
        "step_s": statistics.median(times[1:]) if len(times) > 1 else None,
        "completion_tokens": [r.get("completion_tokens") for r in rows],
        "tokens_per_s": statistics.median(r["tokens_per_s"] for r in rows[1:]) if len(rows) > 1 else None,
    }
    for key in ("peak_allocated_gib", "peak_reserved_gib"):
        values = [r[key] for r in rows if key in r]
        out[key] = max(values) if values else None
    return out


def expected_static_gib(run: str, params: int) -> float:
    """Weights + gradients + moments of the policy (rl/optim.py's arithmetic) + the bf16 bias model,
    per GPU: under FSDP the policy's share (and the bias model's, when it is sharded) divided by the
    processes."""
    import torch

    from videothinker.config import load_train_config
    from videothinker.rl.optim import bytes_per_parameter

    _, preset, overrides = RUNS[run]
    config = load_train_config(preset, [*overrides, "model.path=m", "data.path=d", "reference=r"])
    dtype = getattr(torch, config.model.dtype)
    policy, reference = bytes_per_parameter(config.grpo.optim, dtype), 2.0
    if config.distributed.strategy == "fsdp":
        processes = PROCESSES.get(run, 1)
        policy /= processes
        reference /= processes if config.distributed.reference == "shard" else 1
    return (policy + reference) * params / GIB


def count_parameters(model: Path) -> int:
    """Parameters stored in the model folder (tied embeddings counted once, as they train once)."""
    import math

    from safetensors import safe_open

    total = 0
    for file in model.glob("*.safetensors"):
        with safe_open(str(file), "pt") as f:
            total += sum(math.prod(f.get_slice(key).get_shape()) for key in f.keys())  # noqa: SIM118
    return total


def run_one(run: str, model: Path, data: Path, work: Path, steps: int, timeout: float, tiny: bool) -> dict:
    """Run ``run`` until ``steps`` steps are logged (or it fails, or ``timeout`` s pass); its record."""
    import shutil

    out = work / "runs" / run
    shutil.rmtree(out, ignore_errors=True)
    command = train_command(run, model, data, out, tiny)
    env = _env()
    started = time.time()
    log_file = work / "runs" / f"{run}.out"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    status = "ok"
    with GpuMemoryPoller(gpus=PROCESSES.get(run, 1)) as poller, log_file.open("w") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env)
        while len(log_rows(out)) < steps:
            if process.poll() is not None:
                status = f"exited with code {process.returncode} after {len(log_rows(out))} steps"
                break
            if time.time() - started > timeout:
                status = f"timed out after {timeout:.0f} s and {len(log_rows(out))} steps"
                break
            time.sleep(1.0)
        if process.poll() is None:  # enough steps: end it (nothing is saved)
            process.terminate()
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    import torch

    tail = log_file.read_text(errors="replace").splitlines()[-30:]
    record = {
        "run": run,
        "status": status,
        "command": " ".join(command[1:]),
        "model_size": RUNS[run][0],
        "processes": PROCESSES.get(run, 1),
        "parameters": (params := count_parameters(model)),
        "expected_static_gib": expected_static_gib(run, params),
        **summarize(log_rows(out)[:steps]),
        "nvidia_smi_peak_gib": None if poller.peak_mib is None else poller.peak_mib * 2**20 / GIB,
        "nvidia_smi_peak_gib_per_gpu": None
        if poller.peaks_mib is None
        else [m * 2**20 / GIB for m in poller.peaks_mib],
        "wall_s": time.time() - started,
        "device": gpu_name() or "cpu",
        "torch": torch.__version__,
        "torchao": _version("torchao"),
        "transformers": _version("transformers"),
        "date": time.strftime("%Y-%m-%d"),
        "output_tail": tail if status != "ok" else [],
    }
    shutil.rmtree(out, ignore_errors=True)
    return record


def _env() -> dict[str, str]:
    """The environment of the child processes: this checkout's package first, installed or not."""
    src = str(Path(__file__).resolve().parents[1] / "src")
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def table(records: list[dict]) -> str:
    """A markdown table of run records (memory: the fullest GPU's; tokens per second: all GPUs')."""
    head = (
        "| run | GPUs | status | expected static GiB per GPU | peak allocated GiB | peak reserved GiB "
        "| nvidia-smi GiB | step s (warm, median) | first step s | completion tokens/s |\n"
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    )

    def f(value, digits=1):
        return "-" if value is None else f"{value:.{digits}f}"

    lines = [
        f"| {r['run']} | {r.get('processes', 1)} | {r['status']} | {f(r['expected_static_gib'])} | "
        f"{f(r['peak_allocated_gib'])} | {f(r['peak_reserved_gib'])} | {f(r['nvidia_smi_peak_gib'])} | "
        f"{f(r['step_s'], 2)} | {f(r['first_step_s'], 1)} | {f(r.get('tokens_per_s'), 0)} |"
        for r in records
    ]
    return "\n".join([head, *lines])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", default=",".join(RUNS), help=f"comma-separated, of: {', '.join(RUNS)}")
    parser.add_argument("--steps", type=int, default=3, help="logged steps per run (the first compiles)")
    parser.add_argument("--work", default="runs/train_e2e_work", help="models, frames, runs (large)")
    parser.add_argument(
        "--out", default="runs/train_e2e", help="one JSON per run (runs found there are skipped)"
    )
    parser.add_argument(
        "--copy-to",
        default=os.environ.get("OUT"),
        help="also copy the JSONs and table.md here (default $OUT)",
    )
    parser.add_argument("--timeout", type=float, default=540, help="seconds per run at most")
    parser.add_argument("--force", action="store_true", help="rerun runs whose JSON exists")
    parser.add_argument("--tiny", action="store_true", help="tiny widths, small frames: a CPU smoke run")
    parser.add_argument("--build", choices=sorted(SIZES), help=argparse.SUPPRESS)  # the child that builds
    args = parser.parse_args(argv)
    if args.build:
        print(f"built {build_model(args.build, Path(args.work), args.tiny)}")
        return 0
    runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    if unknown := [r for r in runs if r not in RUNS]:
        parser.error(f"unknown runs {', '.join(unknown)}; known: {', '.join(RUNS)}")
    work, out = Path(args.work), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = build_data(work, args.tiny)
    for run in runs:
        result = out / f"{run}.json"
        if result.is_file() and not args.force:
            print(f"{run}: done before ({result})")
            continue
        size = RUNS[run][0]
        model = work / f"qwen2_5_vl_{size}{'_tiny' if args.tiny else ''}"
        if not (model / "config.json").is_file():  # built in a child process: its GPU memory goes with it
            build = [
                sys.executable,
                __file__,
                "--build",
                size,
                "--work",
                str(work),
                *(["--tiny"] if args.tiny else []),
            ]
            subprocess.run(build, check=True, env=_env())
        record = run_one(run, model, data, work, args.steps, args.timeout, args.tiny)
        result.write_text(json.dumps(record, indent=2))
        print(
            f"{run}: {record['status']}, step {record['step_s']} s, peak reserved {record['peak_reserved_gib']} GiB"
        )
    records = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    text = table(sorted(records, key=lambda r: list(RUNS).index(r["run"]) if r["run"] in RUNS else 99))
    (out / "table.md").write_text(text + "\n")
    print(text)
    if args.copy_to:
        import shutil

        target = Path(args.copy_to) / "train_e2e"
        target.mkdir(parents=True, exist_ok=True)
        if target.resolve() != out.resolve():  # --out may already be that folder (gpu_engine.sh 3)
            for file in [*out.glob("*.json"), out / "table.md"]:
                shutil.copy(file, target / file.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
