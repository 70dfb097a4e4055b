"""benchmarks/train_e2e.py, the parts a CPU runs: every run's command is a valid training config,
the log summary, and one end-to-end run at tiny widths through `videothinker train`."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "train_e2e.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("train_e2e", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_run_is_a_valid_config_of_its_preset(bench):
    import argparse

    from videothinker.commands.train import add_arguments
    from videothinker.config import load_train_config

    for run, (size, preset, _) in bench.RUNS.items():
        command = bench.train_command(run, Path(f"m{size}"), Path("d.json"), Path("out"), tiny=False)
        parser = argparse.ArgumentParser()
        add_arguments(parser)
        args = parser.parse_args(command[command.index("train") + 1 :])
        flags = [f"model.path={args.model}", f"data.path={args.data}", f"reference={args.reference}"]
        config = load_train_config(args.config, [*args.set, *flags])
        assert args.config == preset and config.stage == "cdpo" and config.grpo.max_completion_length == 768
        assert config.grpo.num_generations == 8
        assert config.model.gradient_checkpointing == ("_nockpt" not in run), run
        assert (config.model.dtype == "float32") == ("_fp32_" in run), run
        processes = bench.PROCESSES.get(run, 1)
        assert processes == (2 if "_2gpu" in run else 1), run
        assert (command[1:3] == ["-m", "torch.distributed.run"]) == (processes > 1), run
        assert (config.distributed.strategy == "fsdp") == ("fsdp" in run), run
    assert bench.RUNS["3b_fp32_master"][2] == []  # today's path: the paper preset as it is


def test_expected_static_memory_worked_by_hand(bench):
    # 3.75e9 parameters: fp32 master path 16 bytes + the bf16 bias model 2 = 18 bytes a parameter.
    assert bench.expected_static_gib("3b_fp32_master", 2**30) == pytest.approx(18.0)
    # bf16 weights with 8-bit moments: 2 + 2 + 2 * (1 + 4/256) + 2 = 8.03125.
    assert bench.expected_static_gib("3b_bf16_8bit", 2**30) == pytest.approx(8.03125)
    # FSDP on 2 GPUs: the policy's 16 bytes and the sharded bias model's 2 halved: 9 bytes per GPU.
    assert bench.expected_static_gib("7b_fp32_fsdp_2gpu", 2**30) == pytest.approx(9.0)
    # the bias model replicated: 8 + 2 = 10.
    assert bench.expected_static_gib("7b_fp32_fsdp_2gpu_reference_replicated", 2**30) == pytest.approx(10.0)


def test_summary_sets_the_compiling_first_step_apart(bench):
    rows = [
        {
            "step": 1,
            "step_time": 90.0,
            "peak_allocated_gib": 30.0,
            "peak_reserved_gib": 33.0,
            "completion_tokens": 6144,
        },
        {
            "step": 2,
            "step_time": 20.0,
            "peak_allocated_gib": 31.0,
            "peak_reserved_gib": 34.0,
            "completion_tokens": 6144,
            "tokens_per_s": 300.0,
        },
        {
            "step": 3,
            "step_time": 22.0,
            "peak_allocated_gib": 30.5,
            "peak_reserved_gib": 34.0,
            "completion_tokens": 6100,
            "tokens_per_s": 280.0,
        },
    ]
    summary = bench.summarize(rows)
    assert (summary["first_step_s"], summary["step_s"]) == (90.0, 21.0)
    assert (summary["peak_allocated_gib"], summary["peak_reserved_gib"]) == (31.0, 34.0)
    assert summary["tokens_per_s"] == 290.0  # warm steps only
    assert bench.summarize(rows[:1])["step_s"] is None


@pytest.mark.slow
def test_tiny_run_end_to_end(bench, tmp_path, capsys):
    out = tmp_path / "results"
    args = [
        "--tiny",
        "--steps",
        "2",
        "--runs",
        "3b_fp32_master,3b_fp32_fsdp_2gpu",  # one process, and two with torchrun (gloo on a CPU)
        "--work",
        str(tmp_path / "work"),
        "--out",
        str(out),
    ]
    assert bench.main(args) == 0
    record = json.loads((out / "3b_fp32_master.json").read_text())
    assert record["status"] == "ok" and record["steps"] == 2 and record["step_s"] > 0
    assert record["parameters"] > 0 and record["device"] == "cpu"
    sharded = json.loads((out / "3b_fp32_fsdp_2gpu.json").read_text())
    assert sharded["status"] == "ok" and sharded["processes"] == 2 and sharded["tokens_per_s"] > 0
    printed = capsys.readouterr().out
    assert "| 3b_fp32_master | 1 | ok |" in printed and "| 3b_fp32_fsdp_2gpu | 2 | ok |" in printed
    assert bench.main(args) == 0 and "done before" in capsys.readouterr().out  # a rerun skips it
