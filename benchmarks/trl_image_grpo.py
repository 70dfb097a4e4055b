"""TRL's GRPOTrainer (and Unsloth's) and `videothinker train --stage grpo` side by side on one image
task, one run.

The task: synthetic 448x308 PNG images (a few discs on a plain background) with a four-option
question (how many discs), written once as a records file of the Video-R1 family (``data_type:
image``) that `videothinker train` reads, and read back into a `datasets.Dataset` with a
conversational ``prompt`` and an ``image`` column, as TRL's GRPOTrainer takes images. Both get the
same prompt text (`videothinker.data.prompts.train_prompt`, template ``mixed``, the image placed
before the text), the same images, and the same rewards (`accuracy_reward` + `format_reward`,
wrapped for TRL). The model is a full-size random-init Qwen2.5-VL-3B (train_e2e.py's
`train_e2e.build_model`: the tiny model's tokenizer and processor, the published dimensions), bf16
weights, SDPA, gradient checkpointing, G = 8 (one prompt x 8 completions per optimizer step), 256
completion tokens, beta = 0.04 (reference = the initial model), lr 1e-6, temperature 1.0, no vLLM.

Each trainer runs in its own subprocess (ours first, then the peers; the JSON is rewritten after each,
"partial" until the last), so memory figures are separate. Reported per
trainer: median step time over the steps after the first, the first step, peak GPU memory polled
from nvidia-smi (the whole process), mean completion length (a random model rarely emits EOS, but
neither trainer is told to ban it: compare lengths before times); for TRL also torch's peak
allocated / reserved. Then the ratio TRL / videothinker. Nothing is downloaded.

    # here: the wheels TRL needs on the GPU machine (see trl_wheels.sh)
    bash benchmarks/trl_wheels.sh
    # there (carry .whl): install, then run
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site-packages .whl/*.whl && export PYTHONPATH=/tmp/site-packages:src
    python3 benchmarks/trl_image_grpo.py --out $OUT/trl_image_grpo.json
    # CPU smoke run (TRL in a side folder: pip install --target /tmp/trl/site-packages trl==1.16.0 datasets)
    PYTHONPATH=src:/tmp/trl/site-packages python benchmarks/trl_image_grpo.py --tiny

``--peers trl,unsloth`` adds Unsloth (2026.10.9): TRL's GRPOTrainer as ``import unsloth`` patches it,
the model loaded by ``FastVisionModel.from_pretrained`` for full fine-tuning (no quantisation, no
vLLM: ``fast_inference=False``, so generation runs in-process, the design closest to ours), the same
dataset, rewards and GRPOConfig. Its wheels: ``bash benchmarks/unsloth_wheels.sh`` (TRL 1.15 for both
peers: Unsloth pins TRL <= 1.15). Unsloth's CPU backend refuses vision models, so this peer needs the GPU.

``--frames F`` makes it a video task for Unsloth's video GRPO path (TRL's GRPOTrainer takes no video):
clips of F PNG frames in which the discs drift, read by ours as frame folders (every frame sampled at
2 fps) and given to Unsloth as the frames' paths in a video part of the chat prompt, which its
processor loads; ``prompt_lengths`` reports both prompts' token counts, which should be equal.

Each peer's worker writes its step times after every step; ``--peer-timeout S`` stops a peer (its
whole process group) after S seconds and reports the steps that ended, marked unfinished, so a peer
slower than a device call still gives a number (Unsloth's video run: ``scripts/gpu_engine.sh u``).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from train_e2e import GpuMemoryPoller, build_model

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "videothinker.cli", *args]


TEMPLATE = "mixed"  # the paper presets' data.template
WORKER_PACKAGES = ("trl", "datasets", "transformers", "pyarrow", "pandas", "huggingface_hub", "dill")


def disc_record(index: int, discs: int, data_type: str, path: str) -> dict:
    """The record asking how many discs an image (or a clip of frames) shows; ``discs`` is the answer."""
    medium = "image" if data_type == "image" else "video"
    return {
        "problem_id": index,
        "problem": f"How many discs are in the {medium}?",
        "options": ["A. 1", "B. 2", "C. 3", "D. 4"],
        "solution": f"<answer>{'ABCD'[discs - 1]}</answer>",
        "problem_type": "multiple choice",
        "data_type": data_type,
        "path": path,
    }


def make_records(folder: Path, count: int, width: int, height: int) -> Path:
    """``count`` images of 1 to 4 discs with the question 'how many discs', as image records."""
    records = folder / "train.json"
    if records.exists():
        return records
    from PIL import Image, ImageDraw

    (folder / "images").mkdir(parents=True, exist_ok=True)
    rng, rows = random.Random(0), []
    for i in range(count):
        discs = rng.randint(1, 4)
        image = Image.new("RGB", (width, height), tuple(rng.randint(150, 255) for _ in range(3)))
        draw, radius = ImageDraw.Draw(image), max(3, min(width, height) // 10)
        for k in range(discs):  # one disc per column band, so none overlap
            x = (k + 0.5) * width / 4 + rng.uniform(-0.1, 0.1) * width / 4
            y = rng.uniform(radius, height - radius)
            colour = tuple(rng.randint(0, 120) for _ in range(3))
            draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=colour)
        name = f"images/image_{i:03d}.png"
        image.save(folder / name)
        rows.append(disc_record(i, discs, "image", name))
    records.write_text(json.dumps(rows, indent=1))
    return records


def make_video_records(folder: Path, count: int, frames: int, width: int, height: int) -> Path:
    """``count`` clips of ``frames`` PNG frames (a frame folder each, read at 2 fps: every frame is
    sampled) in which 1 to 4 discs drift across, with the question 'how many discs', as frame records."""
    records = folder / "train.json"
    if records.exists():
        return records
    from PIL import Image, ImageDraw

    rng, rows = random.Random(0), []
    for i in range(count):
        discs, clip = rng.randint(1, 4), folder / f"clip_{i:03d}"
        clip.mkdir(parents=True, exist_ok=True)
        background = tuple(rng.randint(150, 255) for _ in range(3))
        radius = max(3, min(width, height) // 10)
        starts = [(rng.uniform(radius, height - radius), rng.uniform(-1, 1)) for _ in range(discs)]
        colours = [tuple(rng.randint(0, 120) for _ in range(3)) for _ in range(discs)]
        for f in range(frames):
            image = Image.new("RGB", (width, height), background)
            draw = ImageDraw.Draw(image)
            for k, ((y, drift), colour) in enumerate(zip(starts, colours)):
                x = (k + 0.5) * width / 4
                y = min(max(y + drift * f * radius / 2, radius), height - radius)
                draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=colour)
            image.save(clip / f"frame_{f:03d}.png")
        rows.append(disc_record(i, discs, "frame", clip.name))
    records.write_text(json.dumps(rows, indent=1))
    return records


def frame_paths(record) -> list[str]:
    """A frame record's frames, in order (the folder holds nothing else)."""
    return sorted(str(p) for p in Path(record.video).iterdir())


def trl_dataset(records: Path):
    """The records as TRL takes them: a conversational prompt, an ``image``, and reward columns."""
    from datasets import Dataset, Image

    from videothinker.data.prompts import train_prompt
    from videothinker.data.records import load_records

    rows = load_records(records)
    data = {"solution": [r.solution for r in rows], "problem_type": [r.problem_type for r in rows]}
    if rows[0].data_type == "frame":  # Unsloth's video path: the frames as a video part of the prompt
        data["prompt"] = [[{"role": "user", "content": video_content(r)}] for r in rows]
        return Dataset.from_dict(data)
    data["prompt"] = [[{"role": "user", "content": train_prompt(r, TEMPLATE)}] for r in rows]
    data["image"] = [r.video for r in rows]
    return Dataset.from_dict(data).cast_column("image", Image())


def video_content(record) -> list[dict]:
    """A frame record's prompt as a chat message's parts: the video (its frames' paths, which the
    processor's chat template loads), then the text, as videothinker places them."""
    from videothinker.data.prompts import train_prompt

    return [
        {"type": "video", "video": frame_paths(record)},
        {"type": "text", "text": train_prompt(record, TEMPLATE)},
    ]


def _texts(completions) -> list[str]:
    """TRL passes conversational completions as [{"role": "assistant", "content": text}]."""
    return [c[-1]["content"] if isinstance(c, list) else c for c in completions]


def accuracy(completions, solution, problem_type, **_):
    from videothinker.rl.rewards import accuracy_reward

    return accuracy_reward(_texts(completions), solution, problem_type=problem_type)


def format(completions, **_):  # noqa: A001 (TRL logs a reward under its function's name)
    from videothinker.rl.rewards import format_reward

    return format_reward(_texts(completions))


def prompt_lengths(model: Path, dataset, records: Path) -> tuple[int, int]:
    """Prompt tokens of the first record as TRL builds them and as videothinker builds them."""
    from transformers import AutoProcessor

    from videothinker.config import VideoConfig
    from videothinker.data.prompts import train_prompt
    from videothinker.data.records import load_records
    from videothinker.data.video import load_visual
    from videothinker.models.inputs import build_inputs

    processor = AutoProcessor.from_pretrained(model)
    row, record = dataset[0], load_records(records)[0]
    if record.data_type == "frame":
        chat = [{"role": "user", "content": video_content(record)}]
    else:
        from trl.data_utils import prepare_multimodal_messages

        chat = prepare_multimodal_messages(row["prompt"], images=[row["image"]])
    trl_inputs = processor.apply_chat_template(
        conversation=[chat], add_generation_prompt=True, tokenize=True, return_dict=True
    )
    visual = load_visual(
        record.video, record.data_type, VideoConfig(max_pixels=256 * 28 * 28), size_factor=28
    )
    vt_inputs = build_inputs(processor, [train_prompt(record, TEMPLATE)], [visual])
    return len(trl_inputs["input_ids"][0]), int(vt_inputs["input_ids"].shape[1])


def load_unsloth(model: str, tiny: bool):
    """The model as Unsloth serves it to TRL's GRPOTrainer (which ``import unsloth`` patches): full
    fine-tuning, no quantisation, no vLLM (``fast_inference=False``: generation in-process through
    transformers, Unsloth's static cache and compiled decode step)."""
    from unsloth import FastVisionModel

    loaded, processor = FastVisionModel.from_pretrained(
        model,
        dtype=torch.float32 if tiny else torch.bfloat16,
        load_in_4bit=False,
        load_in_8bit=False,
        full_finetuning=True,
        fast_inference=False,
        use_gradient_checkpointing="unsloth",
        local_files_only=True,
    )
    return loaded, processor


def trl_worker(args) -> None:
    """Runs in its own process: TRL's GRPOTrainer (``--peer trl``) or TRL's as Unsloth patches it
    (``--peer unsloth``) for ``args.steps`` steps, results to args.out."""
    if args.peer == "unsloth":
        import unsloth  # noqa: F401  (before trl and transformers: it patches them)
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    cuda = torch.cuda.is_available()

    class StepTimer(TrainerCallback):
        """Wall time between optimizer-step ends (the first from train begin), and every log row."""

        def __init__(self):
            self.times, self.logs, self.last = [], [], 0.0

        def _now(self) -> float:
            if cuda:
                torch.cuda.synchronize()
            return time.perf_counter()

        def on_train_begin(self, *a, **k):
            self.last = self._now()

        def on_step_end(self, *a, **k):
            now = self._now()
            self.times.append(now - self.last)
            self.last = now
            print(f"{args.peer} step {len(self.times)}: {self.times[-1]:.2f} s", flush=True)
            write(finished=False)  # a peer stopped by --peer-timeout keeps the steps that ended

        def on_log(self, args, state, control, logs=None, **k):
            self.logs.append(dict(logs or {}))

    versions = {
        name: importlib.metadata.version(name)
        for name in WORKER_PACKAGES + (("unsloth", "unsloth_zoo") if args.peer == "unsloth" else ())
    }

    def write(finished: bool) -> None:
        """The worker's JSON so far (after each step and at the end)."""
        lengths = [r["completions/mean_length"] for r in timer.logs if "completions/mean_length" in r]
        logged = [r["step_time"] for r in timer.logs if "step_time" in r]  # TRL's own, from 1.x on
        result = {
            "step_times_s": timer.times,
            "finished": finished,
            "trl_logged_step_time_median_s": statistics.median(logged[1:] or logged) if logged else None,
            "completion_length": statistics.mean(lengths) if lengths else None,
            "prompt_tokens": trl_prompt,
            "prompt_tokens_videothinker_build": vt_prompt,
            "peak_allocated_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0,
            "peak_reserved_gib": torch.cuda.max_memory_reserved() / 2**30 if cuda else 0.0,
            "versions": versions,
            "log": timer.logs,
        }
        partial = Path(f"{args.out}.partial")  # then renamed: a kill mid-write leaves the last whole file
        partial.write_text(json.dumps(result, indent=2))
        partial.replace(args.out)

    dataset = trl_dataset(Path(args.records))
    trl_prompt, vt_prompt = prompt_lengths(Path(args.model), dataset, Path(args.records))
    config = GRPOConfig(
        output_dir=str(Path(args.work) / "trl-run"),
        max_steps=args.steps,
        num_generations=args.generations,
        per_device_train_batch_size=args.generations,  # one prompt x G completions per step
        gradient_accumulation_steps=1,
        max_completion_length=args.completion_tokens,
        beta=0.04,
        learning_rate=1e-6,
        temperature=1.0,
        top_p=1.0,
        epsilon=0.2,
        epsilon_high=0.28,
        loss_type="grpo",
        gradient_checkpointing=True,
        optim="adamw_torch_fused",  # ours; Unsloth's GRPOConfig would pick bitsandbytes' 8-bit AdamW
        bf16=not args.tiny,
        model_init_kwargs={"dtype": "float32" if args.tiny else "bfloat16", "attn_implementation": "sdpa"},
        use_vllm=False,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=42,
        dataloader_num_workers=0,
    )
    timer = StepTimer()
    rewards = [accuracy, format]
    model, processor = args.model, None
    if args.peer == "unsloth":
        model, processor = load_unsloth(args.model, args.tiny)
    trainer = GRPOTrainer(
        model, rewards, args=config, train_dataset=dataset, callbacks=[timer], processing_class=processor
    )
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    write(finished=True)


def summary(times: list[float]) -> dict:
    """Median over the steps after the first (None when only the first ended: it holds compiling)."""
    median = statistics.median(times[1:]) if len(times) > 1 else None
    return {"median_step_time_s": median, "first_step_time_s": times[0], "step_times_s": times}


def run_worker(command: list[str], out: Path, env: dict, timeout: float | None) -> dict:
    """Runs a peer's worker; its JSON, or {"status": why} when it failed or no step ended in time.

    At ``timeout`` seconds the worker's whole process group is killed (compile workers included)
    and the JSON it wrote after its last finished step is read, ``"finished": false``."""
    out.unlink(missing_ok=True)
    process = subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True)
    try:
        code = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        written = json.loads(out.read_text()) if out.exists() else {"step_times_s": []}
        if not written["step_times_s"]:
            return {"status": f"stopped at --peer-timeout {timeout:g} s before its first step ended"}
        return {**written, "stopped_at_timeout_s": timeout}
    if code != 0:  # a peer that does not run is reported, and the others still run
        return {"status": f"failed (exit {code}; its output is in the log above)"}
    return json.loads(out.read_text())


def run_peer(args, peer: str, model: Path, records: Path, work: Path) -> dict:
    """TRL's GRPOTrainer (``peer`` trl) or Unsloth's (unsloth) in a subprocess; its summary."""
    out = work / f"{peer}.json"
    command = [sys.executable, __file__, "--trl-worker", "--peer", peer, "--model", str(model)]
    command += ["--records", str(records)]
    command += ["--out", str(out), "--work", str(work), "--steps", str(args.steps)]
    command += ["--generations", str(args.generations), "--completion-tokens", str(args.completion_tokens)]
    command += ["--tiny"] if args.tiny else []
    print(" ".join(command), flush=True)
    env = dict(os.environ)
    if peer == "unsloth":  # the bitsandbytes stand-in (peer_stubs/bitsandbytes): see its docstring
        stubs = str(Path(__file__).parent / "peer_stubs")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (stubs, env.get("PYTHONPATH")) if p)
    with GpuMemoryPoller() as memory:
        worker = run_worker(command, out, env, args.peer_timeout)
    if "status" in worker:
        return worker
    shutil.rmtree(work / "trl-run", ignore_errors=True)
    return {
        **summary(worker.pop("step_times_s")),
        "peak_nvidia_smi_gib": (memory.peak_mib or 0.0) / 1024,
        **worker,
    }


def medium(args) -> str:
    return f"{args.frames}-frame video" if args.frames else "image"


def write_result(args, width: int, height: int, peers: dict, failed: dict, ours: dict, partial: bool) -> dict:
    """The run's JSON (to ``args.out``): each peer's summary, its step time over ours, versions."""
    result = {
        "task": f"one {width}x{height} {medium(args)} per prompt, G={args.generations}, "
        f"{args.completion_tokens} completion tokens, beta 0.04, {'tiny fp32' if args.tiny else 'bf16 3B'}",
        "steps": args.steps,
        "partial": partial,
        **{
            f"{peer}_over_videothinker": r["median_step_time_s"] / ours["median_step_time_s"]
            for peer, r in peers.items()
            if r["median_step_time_s"] and ours["median_step_time_s"]  # None: one step ended
        },
        **{peer: {k: v for k, v in r.items() if k != "versions"} for peer, r in peers.items()},
        **failed,
        "videothinker": ours,
        "versions": {
            name: importlib.metadata.version(name) for name in ("torch", "transformers", "accelerate")
        },
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        **{f"{peer}_versions": r.get("versions") for peer, r in peers.items()},
    }
    Path(args.out).write_text(json.dumps(result, indent=2))
    return result


def run_videothinker(args, model: Path, records: Path, work: Path) -> dict:
    run = work / "vt-run"
    shutil.rmtree(run, ignore_errors=True)
    sets = [f"max_steps={args.steps}", f"save_steps={args.steps + 1000}", "logging_steps=1"]
    sets += [f"num_generations={args.generations}", f"max_completion_length={args.completion_tokens}"]
    sets += ["beta=0.04", "learning_rate=1e-6", "temperature=1.0", "top_p=1.0", "epsilon=0.2"]
    sets += ["epsilon_high=0.28", "loss_type=grpo", "per_device_train_batch_size=1"]
    sets += ["gradient_accumulation_steps=1", "model.gradient_checkpointing=true", "seed=42"]
    sets += ["model.dtype=float32", "bf16=false"] if args.tiny else ["model.dtype=bfloat16", "bf16=true"]
    sets += args.set
    command = cli("train", "--stage", "grpo", "--config", "paper_qwen2_5_vl_3b_grpo", "--model", str(model))
    command += ["--data", str(records), "--out", str(run)]
    for item in sets:
        command += ["--set", item]
    print(" ".join(command), flush=True)
    with GpuMemoryPoller() as memory:
        subprocess.run(command, check=True, cwd=ROOT)
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
    steps = [r for r in rows if "step" in r and "step_time" in r]
    start = next((r for r in rows if r.get("event") == "start"), {})
    shutil.rmtree(run, ignore_errors=True)
    return {
        **summary([r["step_time"] for r in steps]),
        "peak_nvidia_smi_gib": (memory.peak_mib or 0.0) / 1024,
        "completion_length": statistics.mean(r["completion_length"] for r in steps),
        "engine": start.get("engine"),
        "sets": sets,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--generations", type=int, default=None, help="G (default 8; --tiny: 2)")
    parser.add_argument("--completion-tokens", type=int, default=None, help="default 256; --tiny: 8")
    parser.add_argument("--image-size", default=None, help="WIDTHxHEIGHT (default 448x308; --tiny: 112x84)")
    parser.add_argument("--images", type=int, default=24, help="how many images (or clips)")
    parser.add_argument(
        "--frames",
        type=int,
        default=0,
        help="a video task instead: clips of this many frames (frame folders; Unsloth's video GRPO path "
        "takes them, TRL's GRPOTrainer has no video input); 0: the image task",
    )
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="passed to train")
    parser.add_argument("--work", default="/tmp/videothinker-trl")
    parser.add_argument("--tiny", action="store_true", help="a few-layer model, small images (CPU smoke)")
    parser.add_argument("--out", default="trl_image_grpo.json")
    parser.add_argument(
        "--peers",
        default="trl",
        help="comma-separated peers to run beside videothinker: trl, unsloth (its wheels: unsloth_wheels.sh)",
    )
    parser.add_argument(
        "--peer-timeout",
        type=float,
        default=None,
        help="seconds after which a peer is stopped and the steps it finished are reported (default: none)",
    )
    parser.add_argument("--peer", default="trl", help=argparse.SUPPRESS)
    parser.add_argument("--trl-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--build-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--records", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.frames and "trl" in args.peers.split(","):
        parser.error("--frames: TRL's GRPOTrainer takes no video; run the video task with --peers unsloth")
    args.generations = args.generations or (2 if args.tiny else 8)
    args.completion_tokens = args.completion_tokens or (8 if args.tiny else 256)
    if args.build_worker:
        return print(f"model: {build_model('3b', Path(args.work), args.tiny)}")
    if args.trl_worker:
        return trl_worker(args)
    args.steps = 2 if args.tiny and args.steps == 6 else args.steps
    width, height = map(int, (args.image_size or ("112x84" if args.tiny else "448x308")).split("x"))
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    # Built (or found) in a subprocess, so this process keeps no GPU memory; it prints the folder last.
    build = [sys.executable, __file__, "--build-worker", "--work", str(work)] + ["--tiny"] * args.tiny
    printed = subprocess.run(build, check=True, cwd=ROOT, capture_output=True, text=True).stdout
    model = Path(printed.strip().splitlines()[-1].removeprefix("model: "))
    if args.frames:
        folder = work / f"clips-{args.frames}x{width}x{height}-{args.images}"
        records = make_video_records(folder, args.images, args.frames, width, height)
    else:
        records = make_records(work / f"images-{width}x{height}-{args.images}", args.images, width, height)
    # ours first, then each peer, the JSON rewritten after each: a call that runs out of time keeps
    # what finished ("partial": true until the last)
    ours = run_videothinker(args, model, records, work)
    peers: dict[str, dict] = {}
    failed: dict[str, dict] = {}
    write_result(args, width, height, peers, failed, ours, partial=True)
    for peer in (p for p in args.peers.split(",") if p):
        r = run_peer(args, peer, model, records, work)
        (failed if "status" in r else peers)[peer] = r
        write_result(args, width, height, peers, failed, ours, partial=True)
    result = write_result(args, width, height, peers, failed, ours, partial=False)
    print(f"\n{'':14}{'median s':>10}{'first s':>10}{'smi GiB':>10}{'compl len':>11}")
    names = {"trl": "TRL GRPO", "unsloth": "Unsloth GRPO"}
    for name, r in [(names[p], r) for p, r in peers.items()] + [("videothinker", ours)]:
        median = "-" if r["median_step_time_s"] is None else f"{r['median_step_time_s']:.2f}"
        print(
            f"{name:14}{median:>10}{r['first_step_time_s']:10.2f}"
            f"{r['peak_nvidia_smi_gib']:10.1f}{r['completion_length'] or 0:11.1f}"
            + ("" if r.get("finished", True) else f"  (stopped at {r['stopped_at_timeout_s']:g} s)")
        )
    for peer, r in peers.items():
        ratio = result.get(f"{peer}_over_videothinker")
        print(f"{names[peer]} / videothinker step time: " + ("-" if ratio is None else f"{ratio:.2f}x"))
        print(f"  its own logged step_time, median: {r['trl_logged_step_time_median_s']}")
        print(
            f"  torch peak GiB: {r['peak_allocated_gib']:.1f} allocated, {r['peak_reserved_gib']:.1f} reserved"
        )
        print(f"  prompt tokens: {r['prompt_tokens']}, ours {r['prompt_tokens_videothinker_build']}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
