"""The lab's base model on its own: build it as the demo does and measure it on a validation split.

`videothinker lab base-model` runs the first phases of a demo run (`videothinker.demo.pipeline`) with
a validation set in place of the training and test sets: lab data (the warm-start set and a
validation set: both kinds, its own seed and scene range, seed + 3000 and scenes 30000+), the tiny
model and its supervised warm start, then a greedy evaluation of the base model on the validation
questions and perception probes. It writes DIR/base_model.json and prints whether the base meets the
lab's targets for a model that perceives and partly reasons (docs/LAB.md): collisions read exactly
(seen) on >= 85% of the probed clips, >= 70% on observational questions, and on inferential ones at
least 15 points above the text-only answer prior and below its observational accuracy.

The model is the one a demo run with the same preset and seed builds (DIR/models/warm-start/final),
so settings chosen here carry over to the demo and to the GPU experiment. The folder is a demo
folder: run on a demo run's folder (DIR/seed-S of a multi-seed run), it only adds the validation set
and the evaluation and measures that run's base model; a demo run into a base-model folder reuses its
warm-start set and base model. No test set is generated here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from videothinker.console import print0
from videothinker.demo.presets import DemoPreset

RESULT_FILE = "base_model.json"
TARGETS = {"seen": 0.85, "observational": 0.70, "inferential_over_prior": 0.15}


def targets_met(measured: dict[str, float | None], prior: dict[str, float]) -> dict[str, bool]:
    """Which of the base-model targets hold for accuracies ``measured`` (kinds seen, observational,
    inferential, as fractions) against the text-only ``prior``.

    >>> targets_met({"seen": 0.9, "observational": 0.75, "inferential": 0.5}, {"inferential": 0.3})
    {'seen': True, 'observational': True, 'inferential': True}
    """
    seen, obs, inf = (measured.get(k) for k in ("seen", "observational", "inferential"))
    return {
        "seen": seen is not None and seen >= TARGETS["seen"],
        "observational": obs is not None and obs >= TARGETS["observational"],
        "inferential": None not in (obs, inf)
        and inf >= prior.get("inferential", 0.0) + TARGETS["inferential_over_prior"]
        and inf < obs,
    }


def described_share(
    predictions: str | Path, records: list[str | Path], annotations: str | Path
) -> float | None:
    """Share of the outputs in ``predictions`` (an eval predictions.jsonl over ``records``) that describe
    their clip's collisions exactly (`videothinker.lab.targets.collisions_described`), read against
    the lab set's ``annotations`` folder; None without predictions."""
    from videothinker.data.records import load_records
    from videothinker.lab.targets import collisions_described, load_annotations

    # A question and its scene's probe may share an id ("<scene>_<n>"): either names the same scene.
    by_id = {r.id: r for path in records for r in load_records(path)}
    rows = [json.loads(line) for line in Path(predictions).read_text(encoding="utf-8").splitlines() if line]
    rows = [row for row in rows if row["id"] in by_id]
    if not rows:
        return None
    annotated = load_annotations([by_id[row["id"]] for row in rows], annotations)
    return sum(collisions_described(row["output"], a) for row, a in zip(rows, annotated)) / len(rows)


def run_base_model(
    out: str | Path, preset: DemoPreset, seed: int = 0, device: str = "auto"
) -> dict[str, Any]:
    """Build and measure the base model of ``preset`` into ``out`` (resumes like a demo run); returns
    the contents of DIR/base_model.json."""
    from transformers.utils import logging as hf_logging

    from videothinker.demo.pipeline import (
        DemoPaths,
        PhaseLog,
        base_title,
        check_settings,
        evaluate_model,
        make_base,
        make_data,
    )
    from videothinker.demo.report import accuracy, answer_prior
    from videothinker.eval.metrics import read_metrics

    hf_logging.disable_progress_bar()
    paths = DemoPaths(Path(out))
    check_settings(paths.root, {"preset": preset.to_json(), "seed": seed})  # the demo's: same folder
    print0(f"base model: preset {preset.name}, seed {seed}, output {paths.root}")
    phases = PhaseLog(paths.root, total=3)
    # The warm-start set unless a demo run made it (same seed and settings: the same files).
    splits = ("val",) if "data" in phases.done else ("warm", "val")
    phases.run(
        "data-val",
        "lab data: " + " and ".join({"warm": "warm-start", "val": "validation"}[s] for s in splits) + " sets",
        lambda: make_data(paths, preset, seed, splits=splits),
    )
    phases.run("base", base_title(preset), lambda: make_base(paths, preset, seed, device))
    phases.run(
        "eval-base-val",
        "evaluation of the base model on the validation set",
        lambda: evaluate_model(paths, preset, "base", device, split="val"),
    )
    metrics = read_metrics(paths.eval("base", "val"))
    prior = answer_prior([paths.records("warm")], paths.records("val"))
    measured = {k: accuracy(metrics, k) for k in ("seen", "observational", "inferential", "overall")}
    if preset.warm_describe:  # how often its opening description of the clip is exact
        measured["described"] = described_share(
            paths.eval("base", "val") / "predictions.jsonl",
            [paths.records("val"), paths.seen_records("val")],
            paths.lab("val") / "annotations",
        )
    result = {
        "preset": preset.name,
        "seed": seed,
        "model": str(paths.model("base")),
        "validation": measured,
        "answer_prior": {k: prior.get(k) for k in ("observational", "inferential", "overall")},
        "targets": targets_met(measured, prior),
        "seconds": phases.seconds(),
    }
    (paths.root / RESULT_FILE).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.1f}%"

    described = "" if "described" not in measured else f"collisions described {pct(measured['described'])}, "
    print0(
        f"base model on the validation set: {described}seen {pct(measured['seen'])}, observational "
        f"{pct(measured['observational'])}, inferential {pct(measured['inferential'])} (text-only prior "
        f"{pct(prior.get('observational'))} / {pct(prior.get('inferential'))}); targets met: "
        + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in result["targets"].items())
    )
    print0(f"model: {result['model']}; results: {paths.root / RESULT_FILE}")
    return result
