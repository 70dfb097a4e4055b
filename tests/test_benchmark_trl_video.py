"""benchmarks/trl_image_grpo.py's video task (``--frames``) on a CPU: the clips are frame folders
that videothinker reads, and the prompt Unsloth's processor builds from the frames' paths has as many
tokens as ours."""

from __future__ import annotations

import sys
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
