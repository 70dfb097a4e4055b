"""benchmarks/trl_image_grpo.py's video task (``--frames``) on a CPU: the clips are frame folders
that videothinker reads, and the prompt Unsloth's processor builds from the frames' paths has as many
tokens as ours."""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture()
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import trl_image_grpo

    return trl_image_grpo


def test_video_records_and_equal_prompts(bench, tmp_path, tiny_model_dir):
    from videothinker.data.records import load_records

    records = bench.make_video_records(tmp_path / "clips", count=3, frames=4, width=112, height=84)
    rows = load_records(records)
    assert [r.data_type for r in rows] == ["frame"] * 3
    assert all(len(bench.frame_paths(r)) == 4 for r in rows)
    first, last = bench.frame_paths(rows[0])[0], bench.frame_paths(rows[0])[-1]
    assert Path(first).read_bytes() != Path(last).read_bytes()  # the discs drift
    content = bench.video_content(rows[0])
    assert [part["type"] for part in content] == ["video", "text"]
    assert "(A) 1" in content[1]["text"] or "A. 1" in content[1]["text"]
    dataset = [{"prompt": [{"role": "user", "content": content}]}]
    theirs, ours = bench.prompt_lengths(tiny_model_dir("qwen2_5_vl"), dataset, records)
    assert theirs == ours > 100  # the video's tokens, not only the text's


def test_trl_is_refused_for_the_video_task(bench, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["trl_image_grpo.py", "--frames", "4", "--peers", "trl", "--tiny"])
    monkeypatch.setattr(bench.subprocess, "run", lambda *a, **k: pytest.fail("built a model"))
    with pytest.raises(SystemExit):
        bench.main()
    assert "TRL's GRPOTrainer takes no video" in capsys.readouterr().err


def test_a_peer_stopped_at_its_timeout_keeps_the_steps_that_ended(bench, tmp_path):
    """The worker writes its JSON after each step; at --peer-timeout its process group is killed
    (a child it started too) and what it wrote is reported, marked unfinished."""
    out, pid_file = tmp_path / "peer.json", tmp_path / "child.pid"
    worker = (
        "import json, subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "times = []\n"
        "for step in range(100):\n"
        "    times.append(0.05 + step)\n"
        f"    open({str(out)!r}, 'w').write(json.dumps({{'step_times_s': times, 'finished': False}}))\n"
        "    time.sleep(0.3)\n"
    )
    r = bench.run_worker([sys.executable, "-c", worker], out, env=None, timeout=2.0)
    assert r["finished"] is False and r["stopped_at_timeout_s"] == 2.0
    assert 2 <= len(r["step_times_s"]) <= 8 and r["step_times_s"][:2] == [0.05, 1.05]
    summary = bench.summary(r["step_times_s"])
    assert summary["first_step_time_s"] == 0.05
    assert summary["median_step_time_s"] == statistics.median(r["step_times_s"][1:])
    child = int(pid_file.read_text())
    for _ in range(50):  # the killed group's child is gone (reaped by init, or a zombie at most)
        state = Path(f"/proc/{child}/stat")
        if not state.exists() or state.read_text().split(")")[-1].split()[0] == "Z":
            break
        time.sleep(0.1)
    else:
        pytest.fail("the worker's child outlived the timeout")


def test_a_peer_with_no_finished_step_or_a_failure_is_a_status(bench, tmp_path):
    out = tmp_path / "peer.json"
    slow = bench.run_worker([sys.executable, "-c", "import time; time.sleep(30)"], out, None, timeout=1.0)
    assert "before its first step ended" in slow["status"]
    failed = bench.run_worker([sys.executable, "-c", "raise SystemExit(3)"], out, None, timeout=10.0)
    assert failed["status"].startswith("failed (exit 3")
    assert bench.summary([7.0])["median_step_time_s"] is None  # the first step alone holds compiling
