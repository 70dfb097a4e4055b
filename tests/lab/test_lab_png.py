"""Lab videos written as PNG frame folders: lossless, converted to frame records with an fps, and read
back by load_visual without PyAV."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from PIL import Image

from videothinker.cli import main
from videothinker.config import VideoConfig
from videothinker.data.records import load_records
from videothinker.data.video import frame_indices, load_visual
from videothinker.lab.generate import LabConfig, build_scene
from videothinker.lab.physics import simulate
from videothinker.lab.render import View, render_frames
from videothinker.lab.scene import sample_scene


def test_png_lab_converts_to_frame_records_read_without_pyav(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)  # as on a machine without PyAV
    lab = tmp_path / "lab"
    assert (
        main(["lab", "generate", "--out", str(lab), "--scenes", "3", "--seed", "4", "--video-format", "png"])
        == 0
    )
    assert not list(lab.rglob("*.mp4"))
    frames = sorted((lab / "videos" / "video_00000").iterdir())
    assert [f.name for f in frames] == [f"frame_{i:03d}.png" for i in range(32)]

    # the PNGs hold exactly the rendered frames (lossless)
    config = LabConfig(scenes=3, seed=4)
    scene = sample_scene(0, np.random.default_rng([4, 0]), config.world)
    ids = [o.object_id for o in scene.objects]
    trajectory = simulate(
        scene.positions, scene.velocities, ids, radius=config.world.radius, n_frames=32, fps=8
    )
    rendered = render_frames(scene.objects, trajectory.positions, View(112, 112, 3.0), config.world.radius)
    assert np.array_equal(np.stack([np.array(Image.open(f)) for f in frames]), rendered)

    out = lab / "records.jsonl"
    argv = [
        "data",
        "clevrer",
        "--questions",
        str(lab / "questions.json"),
        "--annotations",
        str(lab / "annotations"),
    ]
    assert main([*argv, "--videos", str(lab / "videos"), "--out", str(out), "--frame-fps", "8"]) == 0
    raw = [json.loads(line) for line in out.read_text().splitlines()]
    assert raw and all(r["data_type"] == "frame" and r["fps"] == 8.0 for r in raw)
    assert raw[0]["video"] == f"videos/video_{raw[0]['scene_index']:05d}"

    record = load_records(out)[0]
    video = VideoConfig(fps=2.0, min_frames=2, max_frames=8, min_pixels=3136, max_pixels=12544)
    sampled = load_visual(record.video, record.data_type, video, 28, fps=record.extra["fps"])
    # 32 frames at 8 fps = 4 s; 2 fps -> 8 frames, evenly spaced, at full size (112 = 4 x 28)
    assert sampled.frames.shape == (8, 3, 112, 112) and sampled.fps == pytest.approx(2.0)
    folder = lab / "videos" / f"video_{record.extra['scene_index']:05d}"
    expected = [np.array(Image.open(folder / f"frame_{i:03d}.png")) for i in frame_indices(32, 8)]
    assert np.array_equal(sampled.frames.permute(0, 2, 3, 1).numpy(), np.stack(expected))


def test_mp4_folders_need_frame_fps(tmp_path):
    """Without --frame-fps a frame folder is not a video: the converter reports it missing."""
    lab = tmp_path / "lab"
    build_scene(0, LabConfig(scenes=1, video_format="png"), lab)
    (lab / "questions.json").write_text(
        json.dumps(
            [
                {
                    "scene_index": 0,
                    "video_filename": "video_00000.mp4",
                    "questions": [{"question_type": "counterfactual"}],
                }
            ]
        )
    )
    argv = [
        "data",
        "clevrer",
        "--questions",
        str(lab / "questions.json"),
        "--annotations",
        str(lab / "annotations"),
    ]
    assert main([*argv, "--videos", str(lab / "videos"), "--out", str(tmp_path / "r.jsonl")]) == 1
