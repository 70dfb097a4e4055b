"""`videothinker train` end to end on a full-size random-init Qwen2.5-VL: median step time, peak memory.

What a user runs, timed from the outside: lab clips rendered at 448x308 (PNG frame folders, so no
PyAV is needed), converted to records, then ``videothinker train --config PRESET`` for a few steps on
a full-size random-init model (weights do not change speed) whose tokenizer and processor are the
tiny model's (`videothinker tiny-model`) and whose dimensions are the published ones. The CDPO
reference is the same random model (a bias model is a model of the same size). Reported: the median
``step_time`` of log.jsonl over the steps after the first (the first captures graphs and warms up),
the first step's time, peak GPU memory polled from nvidia-smi every 0.5 s (the whole process: what a
48 GB card must hold), and the peak torch figures log.jsonl carries where it carries them.

    python benchmarks/train_e2e.py --out e2e.json                              # paper CDPO preset, 3B
    python benchmarks/train_e2e.py --set rollout.engine=generate --out e2e_generate.json
    python benchmarks/train_e2e.py --size 7b --set ... --out e2e_7b.json
    python benchmarks/train_e2e.py --tiny --steps 2                             # CPU smoke run

Everything goes under --work (default /tmp/videothinker-e2e); nothing is downloaded. No checkpoint is
written during the steps (save_steps is set past max_steps); the final model is written once at the
end and deleted afterwards unless --keep.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch
from fullsize import qwen2_5_vl_3b_config

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "videothinker.cli", *args]


def build_fullsize_model(folder: Path, size: str, tiny: bool) -> Path:
    """A random-init model folder: the tiny model's tokenizer, processor and special-token ids with
    the published dimensions of Qwen2.5-VL-``size`` (bf16 safetensors)."""
    if (folder / "config.json").exists():
        return folder
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    from videothinker.models.tiny import build_tiny_model

    tiny_dir = build_tiny_model("qwen2_5_vl", folder.parent / "tiny-qwen2_5_vl")
    tiny_config = json.loads((tiny_dir / "config.json").read_text())
    config = qwen2_5_vl_3b_config(tiny=tiny, size=size)
    for key in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id"):
        setattr(config, key, tiny_config[key])
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        if key in tiny_config.get("text_config", tiny_config):
            setattr(config.text_config, key, tiny_config.get("text_config", tiny_config)[key])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=torch.bfloat16)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    AutoProcessor.from_pretrained(tiny_dir).save_pretrained(tmp)
    del model
    tmp.rename(folder)
    return folder


def lab_records(work: Path, scenes: int, size: str, frames: int) -> Path:
    """Lab clips as PNG frame folders (``frames`` at 8 fps) and their records (both question kinds)."""
    records = work / f"lab-{size}-{frames}" / "train.json"
    if records.exists():
        return records
    lab = records.parent / "lab"
    subprocess.run(
        cli("lab", "generate", "--out", str(lab), "--scenes", str(scenes), "--seed", "0", "--size", size)
        + ["--frames", str(frames), "--video-format", "png"],
        check=True,
    )
    subprocess.run(
        cli(
            "data",
            "clevrer",
            "--questions",
            str(lab / "questions.json"),
            "--annotations",
            str(lab / "annotations"),
        )
        + ["--videos", str(lab / "videos"), "--frame-fps", "8", "--out", str(records)],
        check=True,
    )
    return records


class MemoryPoller:
    """The largest GPU memory in use (MiB) that nvidia-smi reports, polled every ``every`` seconds."""

    def __init__(self, every: float = 0.5):
        self.every, self.peak_mib, self._stop = every, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                out = subprocess.run(
                    ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                    capture_output=True,
                    text=True,
                    timeout=5,
                ).stdout
                self.peak_mib = max([self.peak_mib, *(int(x) for x in out.split())])
            except (OSError, ValueError, subprocess.TimeoutExpired):
                return
            self._stop.wait(self.every)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="paper_qwen2_5_vl_3b_cdpo")
    parser.add_argument("--size", choices=["3b", "7b"], default="3b")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--frame-size", default="448x308", help="lab render size WIDTHxHEIGHT")
    parser.add_argument("--scenes", type=int, default=24)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="passed to train")
    parser.add_argument("--work", default="/tmp/videothinker-e2e")
    parser.add_argument(
        "--tiny", action="store_true", help="a few-layer model and small clips (CPU smoke run)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the run folder (the final model)")
    parser.add_argument("--out", default="train_e2e.json")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    model = build_fullsize_model(
        work / f"random-qwen2_5_vl-{args.size}{'-tiny' if args.tiny else ''}", args.size, args.tiny
    )
    # 64 frames at 8 fps: 8 s clips, of which the presets' 2 fps samples their 16 frames
    records = lab_records(
        work, args.scenes, "112x112" if args.tiny else args.frame_size, 16 if args.tiny else 64
    )
    run = work / "run"
    shutil.rmtree(run, ignore_errors=True)
    sets = [f"max_steps={args.steps}", f"save_steps={args.steps + 1000}", "logging_steps=1", *args.set]
    if args.tiny:
        sets += ["max_completion_length=8", "num_generations=2", "model.dtype=float32", "bf16=false"]
    command = cli("train", "--stage", "cdpo", "--config", args.preset, "--model", str(model))
    command += ["--reference", str(model), "--data", str(records), "--out", str(run)]
    for item in sets:
        command += ["--set", item]
    print(" ".join(command), flush=True)
    started = time.perf_counter()
    with MemoryPoller() as memory:
        subprocess.run(command, check=True, cwd=ROOT)
    wall = time.perf_counter() - started
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
    steps = [r for r in rows if "step" in r and "step_time" in r]
    start = next((r for r in rows if r.get("event") == "start"), {})
    later = [r["step_time"] for r in steps[1:]] or [steps[0]["step_time"]]
    result = {
        "preset": args.preset,
        "size": args.size,
        "sets": sets,
        "steps": len(steps),
        "median_step_time_s": statistics.median(later),
        "step_times_s": [r["step_time"] for r in steps],
        "first_step_time_s": steps[0]["step_time"],
        "peak_nvidia_smi_gib": memory.peak_mib / 1024,
        "completion_tokens_per_step": statistics.median(r["completion_tokens"] for r in steps),
        "engine": start.get("engine"),
        "wall_s": wall,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
    }
    for key in (
        "peak_allocated_gib",
        "peak_reserved_gib",
        "memory/max_allocated_gib",
        "memory/max_reserved_gib",
    ):
        values = [r[key] for r in steps if key in r]
        if values:
            result[f"log_{key.replace('/', '_')}"] = max(values)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    if not args.keep:
        shutil.rmtree(run, ignore_errors=True)


if __name__ == "__main__":
    main()
