"""The main job end to end at micro size through the CLI: every phase runs, report.md's numbers equal
each model's metrics.json and what `videothinker score` recomputes from the saved predictions, a
rerun skips every finished phase, and the gpu path (PNG frame folders) needs no PyAV."""

from __future__ import annotations

import json
import re
import sys

import pytest

from videothinker.cli import main
from videothinker.demo.presets import PRESETS, apply_overrides, get_preset
from videothinker.eval.metrics import format_percent

pytestmark = pytest.mark.slow

# The gpu preset's path (frame folders, several seeds) at micro size: a few scenes, 1-2 steps a stage.
MICRO = [
    "--preset", "gpu", "--smoke", "--device", "cpu", "--threads", "1",
    "--set", "warm_scenes=8", "--set", "train_scenes=8", "--set", "test_scenes=5",
    "--set", "warm_steps=2", "--set", "warm_batch=4",
    "--set", "model.hidden_size=32", "--set", "model.intermediate_size=64",
    "--set", "model.vision_hidden_size=32", "--set", "model.vision_intermediate_size=64",
    "--set", "video.max_frames=4", "--set", "rl.grpo.max_steps=1", "--set", "rl.grpo.max_completion_length=8",
    "--set", "max_new_tokens=8",
]  # fmt: skip
MODELS = {"base": "base", "bias": "bias", "cdpo": "CDPO", "grpo": "GRPO"}


def _report_table(report: str) -> dict[str, list[str]]:
    """Rows of report.md's first table: model -> [observational, inferential, overall, seen, shortcut,
    questions]."""
    section = report.split("## Accuracy on the held-out test set (%)")[1].split("##")[0]
    rows = [line.strip("| ").split(" | ") for line in section.splitlines() if line.startswith("| ")]
    return {row[0]: row[1:] for row in rows[2:]}  # after the header and the separator


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """One micro demo with PyAV made unimportable (as on the GPU machine); returns (out, first output)."""
    out = tmp_path_factory.mktemp("demo") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(sys.modules, "av", None)  # `import av` now raises ImportError
        assert main(["demo", *MICRO, "--out", str(out)]) == 0
    return out


def test_demo_writes_a_report_matching_metrics_and_score(demo_run, tmp_path):
    out = demo_run
    records = out / "lab" / "test" / "lab_test.jsonl"
    probes = out / "lab" / "test" / "lab_test_seen.jsonl"
    first = json.loads(records.read_text().splitlines()[0])
    assert {json.loads(line)["question_kind"] for line in probes.read_text().splitlines()} == {"seen"}
    assert first["data_type"] == "frame" and first["fps"] == 8.0  # PNG frame folders, no PyAV used
    report = (out / "report.md").read_text()
    table = _report_table(report)
    assert set(table) == {*MODELS.values(), "answer prior (no video)"}
    for name, label in MODELS.items():
        metrics = json.loads((out / "eval" / name / "metrics.json").read_text())
        kinds = metrics["question_kinds"]
        questions = metrics["benchmarks"]["lab_test"]  # the counterfactual questions; the probes apart
        expected = [
            format_percent(kinds.get("observational", {}).get("accuracy")),
            format_percent(kinds.get("inferential", {}).get("accuracy")),
            format_percent(questions["accuracy"]),
            format_percent(kinds.get("seen", {}).get("accuracy")),
        ]
        assert table[label][:4] == expected, name
        assert table[label][5] == str(questions["scored"])
        assert metrics["benchmarks"]["lab_test_seen"]["question_kinds"].keys() == {"seen"}
        assert metrics["counts"]["scored"] == metrics["counts"]["records"] > 0
        rescored = tmp_path / name
        argv = [
            "score",
            "--benchmark",
            str(records),
            str(probes),
            "--predictions",
            str(out / "eval" / name / "predictions.jsonl"),
        ]
        assert main([*argv, "--out", str(rescored)]) == 0
        assert json.loads((rescored / "metrics.json").read_text()) == metrics
    for stage in ("bias", "cdpo", "grpo"):
        assert (out / "train" / stage / "final" / "model.safetensors").is_file()
        assert (out / "train" / stage / "log.jsonl").is_file()
    config = (out / "train" / "cdpo" / "config.yaml").read_text()
    assert f"reference: {out / 'train' / 'bias' / 'final'}" in config  # CDPO repels from the bias model
    # the demo's CDPO is the bounded form (presets.BOUNDED_CDPO), as the resolved config records it
    import yaml

    resolved = yaml.safe_load(config)
    assert resolved["grpo"]["beta"] == -0.3
    assert resolved["cdpo"]["kl_cap"] == 0.2 and resolved["cdpo"]["one_sided"] is True
    for figure in ("accuracy_per_kind.png", "training_curves.png"):
        assert (out / figure).is_file() and f"]({figure})" in report
    assert "## The paper's claims on this run" in report and "tiny random-init" in report


def test_rerun_skips_finished_phases(demo_run, capsys):
    out = demo_run
    phases = json.loads((out / "phases.json").read_text())
    assert list(phases) == [
        "data", "base", "train-bias", "train-cdpo", "train-grpo",
        "eval-base", "eval-bias", "eval-cdpo", "eval-grpo", "report",
    ]  # fmt: skip
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(["demo", *MICRO, "--out", str(out)]) == 0
    printed = capsys.readouterr().err
    assert len(re.findall(r"done\s+earlier\s+\(\d+s\),\s+skipped", printed)) == 10
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == stamps  # nothing rewritten
    # a rerun into the folder with other settings is refused instead of mixing runs
    assert main(["demo", *MICRO, "--set", "warm_steps=3", "--out", str(out)]) == 1


def test_seeds_write_an_aggregate_report(tmp_path):
    out = tmp_path / "seeds"
    assert (
        main(
            ["demo", *MICRO, "--set", "test_scenes=3", "--seeds", "0", "1", "--jobs", "2", "--out", str(out)]
        )
        == 0
    )
    report = (out / "report.md").read_text()
    assert "2 seeds" in report and "seed-0/report.md" in report and "seed-1/report.md" in report
    rows = [line for line in report.splitlines() if line.startswith("| ")]
    base = next(r for r in rows if r.startswith("| base |"))
    seeds = [json.loads((out / f"seed-{s}" / "eval" / "base" / "metrics.json").read_text()) for s in (0, 1)]
    overall = [100 * m["overall"]["accuracy"] for m in seeds]
    mean = sum(overall) / 2
    assert f"{mean:.1f} ± " in base.split(" | ")[3]
    assert (out / "training_curves.png").is_file()
    # the seeds differ: different scenes (each seed is its own replicate)
    questions = [
        json.loads((out / f"seed-{s}" / "lab" / "test" / "questions.json").read_text()) for s in (0, 1)
    ]
    assert questions[0] != questions[1]


def test_presets_and_overrides():
    assert set(PRESETS) == {"quick", "default", "gpu"}
    assert PRESETS["default"].base_model == PRESETS["quick"].base_model == "packaged"
    assert not PRESETS["gpu"].base_model  # the gpu preset builds its base (the packaged one's recipe)
    for preset in PRESETS.values():
        assert preset.train_observational == 0.74 and 0 < preset.test_observational < 1
    changed = apply_overrides(
        get_preset("default"),
        ["warm_steps=7", "model.hidden_size=96", "rl.grpo.max_steps=3", "stage_rl.cdpo.grpo.beta=-0.05"],
    )
    assert changed.warm_steps == 7 and changed.model["hidden_size"] == 96
    assert changed.model["num_hidden_layers"] == PRESETS["default"].model["num_hidden_layers"]
    assert changed.stage_overrides("cdpo")[
        "grpo.beta"
    ] == -0.05 and "grpo.beta" not in changed.stage_overrides("grpo")
    assert changed.stage_overrides("bias")["grpo.max_steps"] == 3
    with pytest.raises(ValueError, match="preset field"):
        apply_overrides(get_preset("default"), ["nonsense=1"])
    with pytest.raises(ValueError, match="is a mapping"):
        apply_overrides(get_preset("default"), ["model=3"])
    # YAML reads 3e-4 (no dot) as a string: a float setting takes it as the number.
    numbers = apply_overrides(
        get_preset("default"), ["warm_lr=3e-4", "rl.grpo.learning_rate=1e-5", "warm_steps=9"]
    )
    assert numbers.warm_lr == 3e-4 and isinstance(numbers.warm_lr, float)
    assert numbers.rl["grpo.learning_rate"] == 1e-5 and numbers.warm_steps == 9
    assert apply_overrides(get_preset("default"), ["warm_lr=1"]).warm_lr == 1.0
    with pytest.raises(ValueError, match="'warm_lr': expected float"):
        apply_overrides(get_preset("default"), ["warm_lr=fast"])
    assert apply_overrides(get_preset("default"), ["warm_describe=true"]).warm_describe is True
    # every preset's CDPO is the bounded form the lab study chose; --set gives the paper's back
    from videothinker.demo.pipeline import cdpo_bounds
    from videothinker.demo.presets import BOUNDED_CDPO

    for preset in PRESETS.values():
        assert preset.stage_overrides("cdpo") == {**preset.rl, **BOUNDED_CDPO}
        assert "one-sided, capped at 0.2" in cdpo_bounds(preset)
    paper = apply_overrides(
        get_preset("default"),
        [
            "stage_rl.cdpo.grpo.beta=-0.01",
            "stage_rl.cdpo.cdpo.kl_cap=null",
            "stage_rl.cdpo.cdpo.one_sided=false",
        ],
    )
    assert cdpo_bounds(paper) == ""


def test_answer_prior_by_hand(tmp_path):
    from videothinker.demo.report import answer_prior

    def write(name, rows):
        records = [
            {
                "problem": question,
                "options": [f"{letter}. The cube and the sphere collide" for letter in "ABCD"[:n]],
                "solution": f"<answer>{solution}</answer>",
                "question_kind": kind,
            }
            for question, n, solution, kind in rows
        ]
        (tmp_path / name).write_text("\n".join(json.dumps(r) for r in records))
        return tmp_path / name

    will, will_not = (
        "Which of the following will happen if the cube is removed?",
        "Without the cube, what will not happen?",
    )
    train = write(
        "train.jsonl",
        [
            (will, 3, "A", "observational"),  # form (will, 3): A twice, B once -> guess A
            (will, 3, "A", "inferential"),
            (will, 3, "B", "observational"),
            (will_not, 4, "A,B,C,D", "inferential"),  # form (will not, 4): guess A,B,C,D
        ],
    )
    test = write(
        "test.jsonl",
        [
            (will, 3, "A", "observational"),  # right
            (will, 3, "C", "inferential"),  # wrong
            (will_not, 4, "A,B,C,D", "inferential"),  # right
            (will_not, 3, "A", "observational"),  # a form never seen in training: wrong
        ],
    )
    prior = answer_prior([train], test)
    assert prior == {"overall": 0.5, "observational": 0.5, "inferential": 0.5, "count": 4.0}


def test_shortcut_rate_on_the_lab_test_set(demo_run, tmp_path):
    """Answering every question as the video shows scores 100% on the shortcut and 0% on inferential
    accuracy; answering correctly scores 0% on the shortcut (the video never answers an inferential
    question)."""
    from videothinker.data.records import load_records
    from videothinker.demo.report import shortcut_rate
    from videothinker.lab.targets import choice_facts, load_annotations

    records_file = demo_run / "lab" / "test" / "lab_test.jsonl"
    annotations = demo_run / "lab" / "test" / "annotations"
    records = load_records(records_file)
    facts = [choice_facts(r, a) for r, a in zip(records, load_annotations(records, annotations))]
    assert any(r.question_kind == "inferential" for r in records)
    for r, f in zip(records, facts):
        assert (f.shortcut_answer == r.solution) == (r.question_kind == "observational")
    assert any(r.question_kind == "inferential" and f.shortcut_answer for r, f in zip(records, facts))
    for name, answers, expected in (
        ("video", [f.shortcut_answer for f in facts], 1.0),
        ("right", [r.solution for r in records], 0.0),
    ):
        run = tmp_path / name
        run.mkdir()
        lines = [
            {
                "benchmark": "lab_test",
                "id": r.id,
                "status": "scored",
                "output": f"<answer>{a}</answer>",
                "answer": a,
            }
            for r, a in zip(records, answers)
        ]
        (run / "predictions.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
        assert shortcut_rate(run, records_file, annotations) == expected, name


def test_base_model_command_measures_a_demo_runs_base_on_a_validation_split(demo_run, capsys):
    out = demo_run  # a demo folder: its warm-start set and base model are reused, not rebuilt
    argv = [a for a in MICRO if a not in ("--preset", "gpu")]
    stamp = (out / "models" / "warm-start" / "final" / "model.safetensors").stat().st_mtime_ns
    assert main(["lab", "base-model", "--preset", "gpu", *argv, "--out", str(out)]) == 0
    assert (out / "models" / "warm-start" / "final" / "model.safetensors").stat().st_mtime_ns == stamp
    assert re.search(
        r"base model: tiny Qwen2.5-VL \+ supervised warm start: done\s+earlier", capsys.readouterr().err
    )
    result = json.loads((out / "base_model.json").read_text())
    # the gpu preset's warm start describes the clip first: the share of exact descriptions is measured
    assert set(result["validation"]) == {"seen", "observational", "inferential", "overall", "described"}
    assert set(result["targets"]) == {"seen", "observational", "inferential"}
    metrics = json.loads((out / "eval" / "base-val" / "metrics.json").read_text())
    assert set(metrics["benchmarks"]) == {"lab_val", "lab_val_seen"}
    assert {"data-val", "eval-base-val"} <= set(json.loads((out / "phases.json").read_text()))
