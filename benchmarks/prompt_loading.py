"""Prompts per second of training with and without decoding the next prompts in the background.

A tiny real-architecture model (models/tiny.py) trains on lab clips of CLEVRER's shape (480x320,
25 fps, 5 s: 128 frames, of which 10 are sampled at 2 fps) on CPU, so that decoding a micro-batch's
videos costs about as much as the step itself, as it does for a small model on real clips. The same
run alternates ``data.decode_workers = 0`` (decode in the loop) and ``--workers`` (a background
pool), ``--rounds`` times each, after one uncounted warm-up run; every training run's first step
(nothing decoded ahead yet) is left out, and the median prompts per second (B / step_time of log.jsonl) of each setting is reported.
Prints a table; writes JSON to --out.

    python benchmarks/prompt_loading.py --out /tmp/prompt_loading        # CPU, a few minutes
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time
from pathlib import Path


def lab_records(folder: Path, scenes: int, size: tuple[int, int], frames: int, fps: int) -> Path:
    """Lab scenes of that shape, converted to training records; returns the records file."""
    from videothinker.data.clevrer import convert, write_records
    from videothinker.lab import LabConfig, generate_lab

    lab = folder / "lab"
    if not (lab / "questions.json").is_file():
        generate_lab(lab, LabConfig(scenes=scenes, frames=frames, fps=fps, size=size, seed=0))
    path = folder / "train.json"
    records, _ = convert(lab / "questions.json", lab / "annotations", lab / "videos", path)
    write_records(records, path)
    return path


def train_steps(model: Path, data: Path, out: Path, workers: int, args) -> list[float]:
    """Prompts per second of each step after the first, of one training run."""
    from videothinker.config import load_train_config
    from videothinker.rl.trainer import Trainer

    overrides = [
        "stage=grpo",
        f"model.path={model}",
        f"data.path={data}",
        f"output_dir={out}",
        f"data.decode_workers={workers}",
        f"grpo.max_steps={args.steps + 1}",
        f"grpo.save_steps={args.steps + 100}",
        f"grpo.per_device_train_batch_size={args.batch_size}",
        "grpo.num_generations=2",
        f"grpo.max_completion_length={args.completion_length}",
        "grpo.logging_steps=1",
        "grpo.beta=0.0",
    ]
    Trainer(load_train_config("tiny_cpu", overrides), resume=None).train()
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return [args.batch_size / r["step_time"] for r in rows if r.get("step", 0) > 1]


def decode_seconds(data: Path, batch_size: int, repeats: int = 5) -> float:
    """Median seconds to decode one micro-batch's clips in the calling thread (no training)."""
    from videothinker.config import VideoConfig
    from videothinker.data.media import load_record_visual
    from videothinker.data.records import load_records

    records = load_records(data)
    times = []
    for i in range(repeats):
        batch = [records[(i * batch_size + j) % len(records)] for j in range(batch_size)]
        started = time.perf_counter()
        for record in batch:
            load_record_visual(record, VideoConfig(), 28)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="work folder (lab clips, model, runs, results.json)")
    parser.add_argument("--scenes", type=int, default=16, help="lab scenes (videos)")
    parser.add_argument("--size", default="480x320", help="frame size WIDTHxHEIGHT (CLEVRER: 480x320)")
    parser.add_argument("--frames", type=int, default=128, help="frames per clip (CLEVRER: 128)")
    parser.add_argument("--fps", type=int, default=25, help="clip frame rate (CLEVRER: 25)")
    parser.add_argument("--batch-size", type=int, default=4, help="B, prompts per step")
    parser.add_argument("--completion-length", type=int, default=16, help="most completion tokens")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per training run")
    parser.add_argument("--rounds", type=int, default=3, help="training runs per setting, alternating")
    parser.add_argument("--workers", type=int, default=2, help="decode_workers of the pooled setting")
    args = parser.parse_args()

    import torch

    from videothinker.models.tiny import build_tiny_model

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    width, height = (int(v) for v in args.size.split("x"))
    data = lab_records(out, args.scenes, (width, height), args.frames, args.fps)
    model = out / "model"
    if not (model / "config.json").is_file():
        build_tiny_model("qwen2_5_vl", model)

    rates: dict[int, list[float]] = {0: [], args.workers: []}
    started = time.perf_counter()
    runs = [("warmup", 0)] + [(f"round{i}", w) for i in range(args.rounds) for w in rates]
    for name, workers in runs:  # the warm-up run (imports, first allocations) is not counted
        run = out / "runs" / f"workers{workers}-{name}"
        shutil.rmtree(run, ignore_errors=True)
        measured = train_steps(model, data, run, workers, args)
        if name != "warmup":
            rates[workers] += measured
    decode = decode_seconds(data, args.batch_size)
    quartiles = {w: statistics.quantiles(r, n=4) for w, r in rates.items()}
    result = {
        "setting": vars(args) | {"torch_threads": torch.get_num_threads(), "cpus": os.cpu_count()},
        "decode_s_per_micro_batch": decode,
        "median_prompts_per_s": {str(w): statistics.median(r) for w, r in rates.items()},
        "quartiles_prompts_per_s": {str(w): [q[0], q[2]] for w, q in quartiles.items()},
        "prompts_per_s": {str(w): r for w, r in rates.items()},
        "wall_s": time.perf_counter() - started,
    }
    (out / "results.json").write_text(json.dumps(result, indent=2))
    print(f"decoding one micro-batch ({args.batch_size} clips) in the loop: {decode:.2f} s (median)")
    print(f"{'decode_workers':>15} {'median prompts/s':>17} {'quartiles':>13} {'steps':>6}")
    for workers, r in rates.items():
        q = quartiles[workers]
        print(f"{workers:>15} {statistics.median(r):>17.2f} {q[0]:>6.2f}-{q[2]:<6.2f} {len(r):>6}")
    print(f"speed-up: {statistics.median(rates[args.workers]) / statistics.median(rates[0]):.2f}x")


if __name__ == "__main__":
    main()
