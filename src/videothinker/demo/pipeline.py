"""The main job: VideoThinker end to end in the causal lab, on a CPU in minutes, with no downloads.

Reading order is run order (`run_demo`):

1. config: the preset, the seed, the output folder (a rerun must name the same preset and seed);
2. data: three lab sets in CLEVRER format, converted to records labelled question_kind: a warm-start
   set (both kinds), the RL training set (the paper's 74% observational) and a held-out test set
   (both kinds; its own seed and scene indices);
3. base model: a tiny random-init Qwen2.5-VL given a short supervised warm start on the warm-start
   set, so that it has partial competence on both kinds. It stands in for a pretrained lightweight
   model; it is not one;
4. stages: bias-aware training (GRPO, beta = 0, observational questions) -> the bias model; CDPO (all
   questions, beta < 0, reference = the bias model); the GRPO baseline (all questions, beta > 0,
   reference = the base model);
5. evaluation of base, bias, CDPO and GRPO on the test set (greedy, predictions + metrics each);
6. report: DIR/report.md with the accuracy table, the claims checked, plots and training curves.

Each phase writes a marker when it finishes (DIR/phases.json), so a rerun skips finished phases; the
pieces resume on their own inside a phase (training from its last checkpoint, evaluation from its
predictions).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from videothinker.console import print0
from videothinker.demo.presets import MODELS, STAGES, DemoPreset

SETTINGS_FILE = "demo.json"
PHASES_FILE = "phases.json"
SPLITS = {  # name -> (scene index of the first scene, seed offset): disjoint scenes, distinct seeds
    "warm": (20000, 2000),
    "train": (0, 0),
    "test": (10000, 1000),
    "val": (30000, 3000),  # the validation split: for choosing settings (`lab base-model`), never test
}
DEMO_SPLITS = ("warm", "train", "test")


@dataclass
class DemoPaths:
    """Where each piece of a demo run lives under its output folder."""

    root: Path

    def lab(self, split: str) -> Path:
        return self.root / "lab" / split

    def records(self, split: str) -> Path:
        """Records of a lab set; the test file's stem names the benchmark in reports (lab_test)."""
        return self.lab(split) / f"lab_{split}.jsonl"

    def seen_records(self, split: str) -> Path:
        """Records of a lab set's perception probes (question_kind seen; benchmark lab_<split>_seen)."""
        return self.lab(split) / f"lab_{split}_seen.jsonl"

    @property
    def tiny(self) -> Path:
        return self.root / "models" / "tiny"

    @property
    def warm_start(self) -> Path:
        return self.root / "models" / "warm-start"

    def model(self, name: str) -> Path:
        """The final weights of a model: base (the warm-started tiny model) or a stage's."""
        return self.warm_start / "final" if name == "base" else self.train(name) / "final"

    def train(self, stage: str) -> Path:
        return self.root / "train" / stage

    def eval(self, name: str, split: str = "test") -> Path:
        """The evaluation folder of a model on a split: eval/<name> (test), eval/<name>-<split>."""
        return self.root / "eval" / (name if split == "test" else f"{name}-{split}")

    @property
    def report(self) -> Path:
        return self.root / "report.md"


def _fmt_time(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


class PhaseLog:
    """Runs phases once: a finished phase is recorded in DIR/phases.json with its duration and is
    skipped on a rerun. Prints a line per phase with its elapsed time and the run's total."""

    def __init__(self, root: Path, total: int):
        self.path = root / PHASES_FILE
        self.done: dict[str, dict[str, Any]] = (
            json.loads(self.path.read_text(encoding="utf-8")) if self.path.is_file() else {}
        )
        self.total, self.index, self.started = total, 0, time.perf_counter()

    def run(self, name: str, title: str, fn: Callable[[], Any]) -> bool:
        """Run ``fn`` unless phase ``name`` is recorded as finished; returns whether it ran."""
        self.index += 1
        head = f"[{self.index}/{self.total}] {title}"
        if name in self.done:
            print0(f"{head}: done earlier ({_fmt_time(self.done[name]['seconds'])}), skipped")
            return False
        print0(f"[bold]{head}[/] ...")
        started = time.perf_counter()
        fn()
        seconds = time.perf_counter() - started
        self.done[name] = {"seconds": round(seconds, 2), "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.done, indent=2) + "\n", encoding="utf-8")
        tmp.replace(self.path)
        print0(
            f"{head}: done in {_fmt_time(seconds)} (total {_fmt_time(time.perf_counter() - self.started)})"
        )
        return True

    def seconds(self) -> dict[str, float]:
        return {name: entry["seconds"] for name, entry in self.done.items()}


def set_cpu_threads(threads: int | None = None) -> int:
    """Set torch's CPU threads: ``threads``, or half the cores (at most 4). Tiny models gain little
    from more threads, and threads that fight another process for the cores make a step several times
    slower (measured: 5-10x on 2 shared cores), so the default leaves room. Returns the count."""
    import os

    import torch

    count = threads or max(1, min(4, (os.cpu_count() or 2) // 2))
    torch.set_num_threads(count)
    return count


def check_settings(root: Path, settings: dict[str, Any]) -> None:
    """Record the run's settings in DIR/demo.json; a folder holding a run with other settings is refused
    rather than mixed."""
    path = root / SETTINGS_FILE
    settings = json.loads(json.dumps(settings))  # as the file holds them (tuples become lists)
    if path.is_file():
        previous = json.loads(path.read_text(encoding="utf-8"))
        if previous != settings:
            changed = sorted(k for k in settings if previous.get(k) != settings[k])
            raise ValueError(
                f"{root} holds a demo run with other settings ({', '.join(changed) or 'fields'} differ from "
                f"{path}); choose another --out folder, or delete it to start over"
            )
        return
    root.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")


# ------------------------------------------------------------------------------------------ phases


def make_data(
    paths: DemoPaths, preset: DemoPreset, seed: int, splits: tuple[str, ...] = DEMO_SPLITS
) -> dict[str, dict[str, int]]:
    """Generate the lab sets and convert each to records (the answer rule labels the kind), and its
    perception probes to records of kind seen."""
    from videothinker.data.clevrer import convert, write_records
    from videothinker.lab import LabConfig, WorldConfig, generate_lab

    world = WorldConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in preset.world.items()})
    shares = {
        "warm": (preset.warm_scenes, preset.warm_observational),
        "train": (preset.train_scenes, preset.train_observational),
        "test": (preset.test_scenes, preset.test_observational),
        "val": (preset.test_scenes, preset.test_observational),
    }
    counts = {}
    for split in splits:
        scenes, share = shares[split]
        start, offset = SPLITS[split]
        config = LabConfig(
            scenes=scenes,
            observational_ratio=share,
            seed=seed + offset,
            frames=preset.frames,
            fps=preset.fps,
            size=tuple(preset.lab_size),
            start_index=start,
            video_format=preset.video_format,
            contact_marks=preset.contact_marks,
            mark_radius=preset.mark_radius,
            workers=preset.lab_workers,
            world=world,
        )
        lab = paths.lab(split)
        generate_lab(lab, config)
        frame_fps = float(preset.fps) if preset.video_format == "png" else None
        reports = []
        for questions, out in (
            ("questions.json", paths.records(split)),
            ("seen.json", paths.seen_records(split)),
        ):
            converted, converted_report = convert(
                lab / questions, lab / "annotations", lab / "videos", out, frame_fps=frame_fps
            )
            write_records(converted, out)
            reports.append(converted_report)
        report, probe_report = reports
        counts[split] = {**report.kept, **probe_report.kept}
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(report.kept.items()))
        print0(
            f"  {split}: {scenes} scenes, {report.total} questions ({kinds}), {probe_report.total} perception probes"
        )
    return counts


def make_base(paths: DemoPaths, preset: DemoPreset, seed: int, device: str) -> None:
    """Build the tiny model (its tokenizer also learns the lab's words) and warm-start it; or, with the
    preset's ``base_model``, copy that model in as the base."""
    if preset.base_model_path is not None:
        copy_base(preset.base_model_path, paths.model("base"))
        return
    from videothinker.config import VideoConfig
    from videothinker.data.records import load_records
    from videothinker.lab.targets import (
        collision_colors,
        description_records,
        load_annotations,
        reasoning_targets,
    )
    from videothinker.lab.warmstart import WarmStartConfig, warm_start
    from videothinker.models.tiny import build_tiny_model

    # Counterfactual questions of both kinds and the perception probes of the warm-start set.
    records = load_records(paths.records("warm")) + load_records(paths.seen_records("warm"))
    targets = reasoning_targets(
        records, paths.lab("warm") / "annotations", preset.warm_think, describe=preset.warm_describe
    )
    if preset.warm_describe_questions:  # open-ended questions whose answers only the video holds
        described, described_targets = description_records(records, paths.lab("warm") / "annotations")
        records, targets = records + described, targets + described_targets
    corpus = paths.warm_start / "corpus.txt"  # the warm-start questions and targets, never test data
    corpus.parent.mkdir(parents=True, exist_ok=True)
    lines = [line for r in records for line in (r.problem, *r.options)] + targets
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    build_tiny_model("qwen2_5_vl", paths.tiny, corpus=corpus, seed=seed, overwrite=True, **preset.model)
    config = WarmStartConfig(
        steps=preset.warm_steps,
        learning_rate=preset.warm_lr,
        batch_size=preset.warm_batch,
        seed=seed,
        device=device,
        video=VideoConfig(**preset.video),
        perception_weight=preset.warm_perception,
        perception_steps=preset.warm_perception_steps,
    )
    perception = None
    if preset.warm_perception > 0:  # the perception loss's targets
        perception = [
            collision_colors(a) for a in load_annotations(records, paths.lab("warm") / "annotations")
        ]
    warm_start(paths.tiny, records, targets, paths.warm_start, config, perception)


def base_title(preset: DemoPreset) -> str:
    """The base-model phase's title: built by a warm start, or given."""
    if preset.base_model:
        return f"base model: given ({preset.base_model}), no warm start"
    return "base model: tiny Qwen2.5-VL + supervised warm start"


def cdpo_bounds(preset: DemoPreset) -> str:
    """How the preset bounds CDPO's repulsion, for titles and reports ("" for the paper's form)."""
    cdpo = preset.stage_overrides("cdpo")
    bounds = [
        f"beta {cdpo['grpo.beta']:g}" if "grpo.beta" in cdpo else "",
        "one-sided" if cdpo.get("cdpo.one_sided") else "",
        f"capped at {cdpo['cdpo.kl_cap']:g} a token" if cdpo.get("cdpo.kl_cap") else "",
        f"anchored ({cdpo['cdpo.anchor_beta']:g})" if cdpo.get("cdpo.anchor_beta") else "",
    ]
    words = ", ".join(b for b in bounds if b)
    bounded = any(k.startswith("cdpo.") and v not in (None, False, 0) for k, v in cdpo.items())
    return f" (bounded repulsion: {words})" if bounded else ""


def copy_base(source: Path, final: Path) -> None:
    """Copy a given base model folder to ``final`` (through a temporary name, so a half copy is never
    taken for a model)."""
    import shutil

    if not (source / "config.json").is_file() or not any(source.glob("*.safetensors")):
        raise FileNotFoundError(f"base_model {source} is not a model folder (config.json and *.safetensors)")
    tmp = final.with_name(".final.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    print0(f"base model: {source} (given; no warm start)")


def train_config_overrides(paths: DemoPaths, preset: DemoPreset, stage: str, seed: int) -> list[str]:
    """The ``--set`` list of one stage: the preset's settings, the data, the models, the seed."""
    values: dict[str, Any] = {f"video.{k}": v for k, v in preset.video.items()}
    values.update(preset.stage_overrides(stage))
    values.update(
        {
            "stage": stage,
            "model.path": str(paths.model("base")),
            "data.path": str(paths.records("train")),
            "output_dir": str(paths.train(stage)),
            "grpo.seed": seed,
        }
    )
    if stage == "cdpo":
        values["reference"] = str(paths.model("bias"))
    elif stage == "grpo":
        values["reference"] = str(paths.model("base"))
    return [f"{key}={json.dumps(value)}" for key, value in values.items()]


def train_stage(
    paths: DemoPaths,
    preset: DemoPreset,
    stage: str,
    seed: int,
    *,
    name: str | None = None,
    settings: dict[str, Any] | None = None,
) -> None:
    """One RL stage through the library, as `videothinker train` runs it (resumes from checkpoints),
    into DIR/train/<stage>; or, for a study's variant (demo/study.py), into DIR/train/<name> with
    ``settings`` (``--set`` keys) over the stage's."""
    import yaml

    from videothinker.config import load_train_config
    from videothinker.rl.trainer import Trainer
    from videothinker.yaml_config import to_dict

    out = paths.train(name or stage)
    overrides = train_config_overrides(paths, preset, stage, seed) + [f"output_dir={json.dumps(str(out))}"]
    overrides += [f"{key}={json.dumps(value)}" for key, value in (settings or {}).items()]
    config = load_train_config(preset.rl_config, overrides)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
    Trainer(config, resume="auto").train()


def evaluate_model(
    paths: DemoPaths,
    preset: DemoPreset,
    name: str,
    device: str,
    split: str = "test",
    *,
    model_dir: Path | None = None,
    tag: str | None = None,
) -> dict[str, Any]:
    """Greedy evaluation of one model on a held-out set's questions and perception probes (resumes from
    its predictions), into DIR/eval/<name> (split test) or DIR/eval/<name>-<split>; ``model_dir`` and
    ``tag`` evaluate another folder of the run (a checkpoint) into DIR/eval/<tag>-<split>."""
    from videothinker.config import VideoConfig
    from videothinker.eval.benchmarks import load_benchmarks
    from videothinker.eval.generation import ModelGenerator
    from videothinker.eval.runner import EvalSettings, evaluate

    model = str(model_dir or paths.model(name))
    name = tag or name
    settings = EvalSettings(
        model=model,
        batch_size=preset.eval_batch_size,
        max_new_tokens=preset.max_new_tokens,
        video=VideoConfig(**preset.video),
    )
    benchmarks = load_benchmarks([paths.records(split), paths.seen_records(split)])
    return evaluate(
        benchmarks,
        paths.eval(name, split),
        settings,
        lambda: ModelGenerator(model, device=device, max_new_tokens=preset.max_new_tokens),
    )


# ------------------------------------------------------------------------------------------- entry


@dataclass
class DemoResult:
    """What a demo run produced: the report, each model's metrics, each phase's duration."""

    out: Path
    report: Path
    metrics: dict[str, dict[str, Any]]
    seconds: dict[str, float]


def run_demo(out: str | Path, preset: DemoPreset, seed: int = 0, device: str = "auto") -> DemoResult:
    """Run (or finish) the whole demo into ``out``; see the module docstring for the phases."""
    from transformers.utils import logging as hf_logging

    from videothinker.demo.report import summary_table, write_demo_report
    from videothinker.eval.metrics import read_metrics

    hf_logging.disable_progress_bar()  # the demo shows its own progress; weight-loading bars are noise
    paths = DemoPaths(Path(out))
    check_settings(paths.root, {"preset": preset.to_json(), "seed": seed})
    print0(f"demo: preset {preset.name}, seed {seed}, output {paths.root}")
    phases = PhaseLog(paths.root, total=3 + len(STAGES) + len(MODELS))
    phases.run(
        "data",
        "lab data: warm-start, training (74% observational) and test sets",
        lambda: make_data(paths, preset, seed),
    )
    phases.run("base", base_title(preset), lambda: make_base(paths, preset, seed, device))
    titles = {
        "bias": "stage bias: GRPO, beta = 0, "
        + (
            "all questions, each with another scene's video -> a bias model without causal labels"
            if preset.stage_overrides("bias").get("data.video_shuffle")
            else "observational questions -> the bias model"
        ),
        "cdpo": "stage cdpo: all questions, beta < 0, reference = the bias model" + cdpo_bounds(preset),
        "grpo": "stage grpo (baseline): all questions, beta > 0, reference = the base model",
    }
    for stage in STAGES:
        phases.run(f"train-{stage}", titles[stage], lambda s=stage: train_stage(paths, preset, s, seed))
    for name in MODELS:
        phases.run(
            f"eval-{name}",
            f"evaluation of {name} on the test set",
            lambda n=name: evaluate_model(paths, preset, n, device),
        )
    metrics = {name: read_metrics(paths.eval(name)) for name in MODELS}
    phases.run("report", "report", lambda: write_demo_report(paths, preset, seed, metrics, phases.seconds()))
    print0(summary_table(paths, metrics))
    print0(f"report: {paths.report}")
    return DemoResult(paths.root, paths.report, metrics, phases.seconds())
