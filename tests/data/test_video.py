"""Video decoding, frame sampling and the frame cache: hand-worked cases of the sampling rules (the
arithmetic in comments), a property test of smart_resize, and behaviour on tiny videos written with
write_video (a frame counter encoded as a grey level shows which frames were kept)."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from PIL import Image

from videothinker.config import VideoConfig
from videothinker.data import video as video_mod
from videothinker.data.video import (
    VideoError,
    frame_indices,
    load_visual,
    smart_nframes,
    smart_resize,
    video_max_pixels,
    write_video,
)

# Small frames and a small pixel floor keep decoding and resizing fast: native 32x48 frames round to
# 28x56 (rounded area 1568 >= min_pixels 784) and are not upscaled.
SMALL = {"min_pixels": 28 * 28, "max_pixels": 28 * 28 * 16}
STEP = 4  # grey level of frame k is STEP * k
needs_av = pytest.mark.skipif(importlib.util.find_spec("av") is None, reason="PyAV is not installed")


def counter_video(path, n: int, fps: float, height: int = 32, width: int = 48):
    """Write a video whose frame k is uniformly grey at level STEP * k."""
    levels = (np.arange(n) * STEP).astype(np.uint8)
    frames = np.broadcast_to(levels[:, None, None, None], (n, height, width, 3)).copy()
    write_video(path, frames, fps=fps)
    return str(path)


def frame_numbers(frames: torch.Tensor) -> list[int]:
    """Read back the counter of each frame [F, 3, H, W] from its mean grey level."""
    return [round(v) for v in (frames.float().mean(dim=(1, 2, 3)) / STEP).tolist()]


# ----------------------------------------------------------------------------- sampling rules


@pytest.mark.parametrize(
    ("total", "video_fps", "overrides", "expected"),
    [
        (250, 25, {}, 16),  # 10 s * 2 fps = 20, capped at max_frames 16
        (25, 25, {}, 4),  # 1 s * 2 fps = 2, raised to min_frames 4
        (25, 25, {"min_frames": 5}, 6),  # min_frames 5 ceiled to the frame factor: 6
        (87, 25, {}, 6),  # 3.48 s * 2 fps = 6.96, floored to the frame factor: 6
        (250, 25, {"max_frames": 15}, 14),  # max_frames 15 floored to the frame factor: 14
        (3, 25, {}, 2),  # min_frames 4 > 3 frames available -> 3, floored to 2
        (1, 25, {}, 2),  # one frame: floor gives 0, raised to frame_factor (the frame repeats)
        (90, 30, {"fps": 1.0, "frame_factor": 4}, 4),  # 3 s * 1 fps = 3 -> min 4 (ceil(4/4)*4)
        (250, 25, {"nframes": 7}, 8),  # fixed: round(7 / 2) = round(3.5) = 4 -> 8
        (250, 25, {"nframes": 5}, 4),  # fixed: round(2.5) = 2 (half to even, as Python) -> 4
        (10, 25, {"nframes": 32}, 32),  # fixed count kept above the frames available
    ],
)
def test_smart_nframes_hand_worked(total, video_fps, overrides, expected):
    assert smart_nframes(total, video_fps, VideoConfig(**overrides)) == expected


@pytest.mark.parametrize(
    ("total", "n", "expected"),
    [
        (10, 4, [0, 3, 6, 9]),  # linspace(0, 9, 4) = 0, 3, 6, 9
        (10, 3, [0, 4, 9]),  # 0, 4.5, 9: 4.5 rounds half to even
        (5, 8, [0, 1, 1, 2, 2, 3, 3, 4]),  # step 4/7: 0, .57, 1.14, 1.71, 2.29, 2.86, 3.43, 4
        (1, 2, [0, 0]),
    ],
)
def test_frame_indices_hand_worked(total, n, expected):
    assert frame_indices(total, n) == expected


def test_video_max_pixels_shares_the_total_budget():
    # Default: 90316800 total / 16 frames * 2 = 11289600 > max_pixels, so max_pixels 200704 wins.
    assert video_max_pixels(16, VideoConfig()) == 256 * 28 * 28
    # 800000 / 16 * 2 = 100000 < 1.05 * min_pixels = int(105369.6) = 105369: the floor wins.
    assert video_max_pixels(16, VideoConfig(total_pixels=800_000)) == 105369
    # 1_600_000 / 16 * 2 = 200000, between the floor and max_pixels.
    assert video_max_pixels(16, VideoConfig(total_pixels=1_600_000)) == 200000


@pytest.mark.parametrize(
    ("size", "factor", "min_pixels", "max_pixels", "expected"),
    [
        # rounded 56x84 = 4704 < min: beta = sqrt(100352 / 6144) = 4.0415; 258.7 -> 280, 388.0 -> 392
        ((64, 96), 28, 100352, 200704, (280, 392)),
        # rounded 476x644 = 306544 > max: beta = sqrt(307200 / 200704) = 1.2372;
        # 388.0 -> floor 13 * 28 = 364, 517.3 -> floor 18 * 28 = 504
        ((480, 640), 28, 100352, 200704, (364, 504)),
        # rounded 308x392 = 120736, within the bounds: kept
        ((300, 400), 28, 3136, 200704, (308, 392)),
        # factor 32: 300/32 = 9.375 -> 288, 400/32 = 12.5 -> 12 (half to even) -> 384; 110592 in bounds
        ((300, 400), 32, 100352, 200704, (288, 384)),
        # tiny frame: both sides rounded up to at least one factor
        ((5, 9), 28, 0, 200704, (28, 28)),
    ],
)
def test_smart_resize_hand_worked(size, factor, min_pixels, max_pixels, expected):
    assert smart_resize(*size, factor, min_pixels, max_pixels) == expected


def test_smart_resize_rejects_extreme_aspect_ratio():
    with pytest.raises(ValueError, match="aspect ratio"):
        smart_resize(10, 2010, 28, 3136, 200704)


@settings(max_examples=300, deadline=None)
@given(
    height=st.integers(1, 4000),
    width=st.integers(1, 4000),
    factor=st.sampled_from([14, 28, 32]),
    min_side=st.integers(1, 60),
    spread=st.floats(2.0, 50.0),
)
def test_smart_resize_invariants(height, width, factor, min_side, spread):
    ratio = max(height, width) / min(height, width)
    assume(ratio <= 20)
    # Flooring (ceiling) each side moves it by less than one factor. With min_pixels at least
    # 4 f^2 (sqrt(r) + 1)^2 and max_pixels >= 2 min_pixels, that slack is under half the gap between
    # the bounds, so the result lands within them.
    min_pixels = max(min_side**2 * factor**2, math.ceil(4 * factor**2 * (math.sqrt(ratio) + 1) ** 2))
    max_pixels = int(min_pixels * spread)
    h, w = smart_resize(height, width, factor, min_pixels, max_pixels)
    assert h % factor == 0 and w % factor == 0 and h >= factor and w >= factor
    assert min_pixels <= h * w <= max_pixels
    if height >= width:  # every rounding is monotonic, so orientation survives
        assert h >= w
    if width >= height:
        assert w >= h


# ----------------------------------------------------------------------------- videos


@needs_av
def test_ten_second_video_gives_max_frames_evenly_spaced(tmp_path):
    path = counter_video(tmp_path / "ten.mp4", n=50, fps=5)  # 10 s at 5 fps
    out = load_visual(path, "video", VideoConfig(**SMALL))
    # 10 s * 2 fps = 20 -> capped at 16; indices linspace(0, 49, 16).round()
    assert out.frames.shape == (16, 3, 28, 56) and out.frames.dtype == torch.uint8
    assert frame_numbers(out.frames) == torch.linspace(0, 49, 16).round().long().tolist()
    assert out.fps == pytest.approx(16 / 50 * 5)  # sampled frames per second of video: 1.6
    assert not out.is_image and out.path == path


@needs_av
def test_one_second_clip_gives_min_frames(tmp_path):
    path = counter_video(tmp_path / "short.mp4", n=10, fps=10)
    out = load_visual(path, "video", VideoConfig(**SMALL))
    assert frame_numbers(out.frames) == [0, 3, 6, 9]  # 4 frames: linspace(0, 9, 4)
    assert out.fps == pytest.approx(4.0)  # 4 of 10 frames at 10 fps


@needs_av
def test_single_frame_video_repeats_to_frame_factor(tmp_path):
    path = counter_video(tmp_path / "one.mp4", n=1, fps=10)
    out = load_visual(path, "video", VideoConfig(**SMALL))
    assert out.frames.shape[0] == 2 and torch.equal(out.frames[0], out.frames[1])


@needs_av
def test_start_end_select_the_clip(tmp_path):
    path = counter_video(tmp_path / "clip.mp4", n=50, fps=10)
    out = load_visual(path, "video", VideoConfig(**SMALL), start=1.0, end=3.0)
    # frames 10..30 (21 frames, 2.1 s): 4.2 -> 4 frames, linspace(0, 20, 4) = 0, 6.67, 13.33, 20
    assert frame_numbers(out.frames) == [10, 17, 23, 30]
    assert out.fps == pytest.approx(4 / 21 * 10)
    as_text = load_visual(path, "video", VideoConfig(**SMALL), start="1", end="3.0")  # records may hold text
    assert torch.equal(as_text.frames, out.frames)
    with pytest.raises(VideoError, match="start must be a finite number"):
        load_visual(path, "video", VideoConfig(**SMALL), start="soon")
    with pytest.raises(VideoError, match="no frames between"):
        load_visual(path, "video", VideoConfig(**SMALL), start=20.0)


@needs_av
def test_content_is_preserved_and_sizes_follow_the_budget(tmp_path):
    frames = np.zeros((20, 224, 336, 3), np.uint8)
    frames[:, :, :168, 0] = 255  # left half red
    frames[:, :, 168:, 2] = 255  # right half blue
    path = tmp_path / "halves.mp4"
    write_video(path, frames, fps=2)
    # 16 frames share 156800 pixels: 156800 / 16 * 2 = 19600 per frame (> 1.05 * 3136). The native
    # 224x336 (75264 px) shrinks: beta = sqrt(75264 / 19600) = 1.9596 -> 114.3, 171.5 -> 112x168.
    config = VideoConfig(min_pixels=3136, max_pixels=78400, total_pixels=156800)
    out = load_visual(str(path), "video", config)
    assert out.frames.shape == (16, 3, 112, 168)
    left, right = out.frames[..., :, 8:76].float(), out.frames[..., :, 92:160].float()
    assert left[:, 0].mean() > 230 and left[:, 2].mean() < 30
    assert right[:, 2].mean() > 230 and right[:, 0].mean() < 30


@needs_av
def test_config_size_factor_overrides_the_argument(tmp_path):
    path = counter_video(tmp_path / "v.mp4", n=10, fps=10, height=64, width=96)
    config = VideoConfig(size_factor=32)
    # rounded 64x96 = 6144 < 100352: beta = 4.0415 -> 258.7 -> ceil 9 * 32 = 288, 388.0 -> 13 * 32 = 416
    assert load_visual(path, "video", config, size_factor=28).frames.shape[2:] == (288, 416)


# ----------------------------------------------------------------------------- frame folders and images


def write_frames(folder, n: int, height: int = 32, width: int = 48):
    folder.mkdir()
    for k in range(n):  # frame_2 must sort before frame_10
        Image.fromarray(np.full((height, width, 3), STEP * k, np.uint8)).save(folder / f"frame_{k}.png")
    (folder / "notes.txt").write_text("not a frame")


def test_frame_folder_natural_order_and_native_fps(tmp_path):
    write_frames(tmp_path / "clip", 12)
    all_frames = load_visual(str(tmp_path / "clip"), "frame", VideoConfig(**SMALL), fps=2.0)
    assert frame_numbers(all_frames.frames) == list(range(12))  # 6 s * 2 fps = 12: every frame
    # at 6 fps the folder is 2 s long: 4 frames, linspace(0, 11, 4) = 0, 3.67, 7.33, 11
    fast = load_visual(str(tmp_path / "clip.mp4"), "frame", VideoConfig(**SMALL), fps=6.0)
    assert frame_numbers(fast.frames) == [0, 4, 7, 11]
    assert fast.fps == pytest.approx(4 / 12 * 6)


def test_empty_frame_folder_raises(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(VideoError, match="holds no images"):
        load_visual(str(tmp_path / "empty"), "frame", VideoConfig())


def test_image_is_one_frame_and_transparency_becomes_white(tmp_path):
    rgba = np.zeros((60, 90, 4), np.uint8)
    rgba[:, :45] = (255, 0, 0, 255)  # opaque red left, transparent right
    Image.fromarray(rgba).save(tmp_path / "still.png")
    out = load_visual(str(tmp_path / "still.png"), "image", VideoConfig())
    # 60/28 = 2.14 -> 56, 90/28 = 3.21 -> 84; 4704 px is within [4 * 28 * 28, max_pixels]
    assert out.is_image and out.frames.shape == (1, 3, 56, 84)
    assert out.frames[0, :, :, :30].float().mean(dim=(1, 2)).tolist() == pytest.approx([255, 0, 0], abs=2)
    assert out.frames[0, :, :, 60:].float().mean().item() == pytest.approx(255, abs=2)


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize("data_type", ["video", "frame", "image"])
def test_missing_path_raises_naming_it(tmp_path, data_type):
    path = str(tmp_path / "nowhere.mp4")
    with pytest.raises(VideoError, match="nowhere.mp4") as info:
        load_visual(path, data_type, VideoConfig())
    assert info.value.path == path


@pytest.mark.parametrize(
    ("name", "data_type"), [("bad.mp4", "video"), ("bad.png", "image"), ("nil.mp4", "video")]
)
def test_corrupt_file_raises_naming_it(tmp_path, name, data_type):
    content = b"" if name.startswith("nil") else b"this is not a media file" * 50
    (tmp_path / name).write_bytes(content)
    with pytest.raises(VideoError, match=name):
        load_visual(str(tmp_path / name), data_type, VideoConfig())


# ----------------------------------------------------------------------------- cache


@pytest.fixture
def count_decodes(monkeypatch):
    calls = []
    decode = video_mod._decode_video

    def counting(*args, **kwargs):
        calls.append(args[0])
        return decode(*args, **kwargs)

    monkeypatch.setattr(video_mod, "_decode_video", counting)
    return calls


@needs_av
def test_cache_returns_identical_frames_without_decoding_again(tmp_path, count_decodes):
    path = counter_video(tmp_path / "v.mp4", n=20, fps=10)
    config = VideoConfig(**SMALL, cache_dir=str(tmp_path / "cache"))
    first = load_visual(path, "video", config, start=0.5)
    second = load_visual(path, "video", config, start=0.5)
    assert len(count_decodes) == 1
    assert torch.equal(first.frames, second.frames) and first.fps == second.fps
    assert list((tmp_path / "cache").rglob("*.tmp")) == []  # no temporary file left behind
    # Any sampling setting, the clip bounds or the file itself changing means a new entry.
    load_visual(path, "video", VideoConfig(**SMALL, max_frames=4, cache_dir=config.cache_dir), start=0.5)
    load_visual(path, "video", config, start=0.6)
    counter_video(tmp_path / "v.mp4", n=60, fps=10)  # 5.5 s from 0.5 s: 10 frames, not 4
    third = load_visual(path, "video", config, start=0.5)
    assert len(count_decodes) == 4 and third.frames.shape[0] != first.frames.shape[0]


@needs_av
def test_corrupt_cache_entry_is_decoded_again(tmp_path, count_decodes):
    path = counter_video(tmp_path / "v.mp4", n=20, fps=10)
    config = VideoConfig(**SMALL, cache_dir=str(tmp_path / "cache"))
    first = load_visual(path, "video", config)
    (entry,) = (tmp_path / "cache").rglob("*.safetensors")
    entry.write_bytes(b"\x00garbage")
    again = load_visual(path, "video", config)
    assert len(count_decodes) == 2 and torch.equal(first.frames, again.frames)
    load_visual(path, "video", config)  # the rewritten entry is good again
    assert len(count_decodes) == 2


@needs_av
def test_start_seeks_within_a_stream_of_many_keyframes(tmp_path):
    import av

    path = tmp_path / "gop.mp4"
    with av.open(str(path), mode="w") as container:  # a keyframe every 5 frames, B-frames between
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 48, 32, "yuv420p"
        stream.options = {"g": "5", "crf": "18", "preset": "veryfast"}
        for k in range(60):
            frame = av.VideoFrame.from_ndarray(np.full((32, 48, 3), STEP * k, np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    out = load_visual(str(path), "video", VideoConfig(**SMALL), start=3.3, end=5.0)
    # frames 33..50 (18 frames, 1.8 s): 3.6 -> 4; linspace(0, 17, 4) = 0, 5.67, 11.33, 17
    assert frame_numbers(out.frames) == [33, 39, 44, 50]
    out = load_visual(str(path), "video", VideoConfig(**SMALL), start=4.1)
    # frames 41..59 (19 frames, 1.9 s): 3.8 -> 4; linspace(0, 18, 4) = 0, 6, 12, 18
    assert frame_numbers(out.frames) == [41, 47, 53, 59]


@needs_av
def test_only_sampled_frames_are_converted(tmp_path, monkeypatch):
    path = counter_video(tmp_path / "v.mp4", n=50, fps=5)
    converted = []
    call = video_mod._Resizer.__call__
    monkeypatch.setattr(
        video_mod._Resizer, "__call__", lambda self, rgb: converted.append(1) or call(self, rgb)
    )
    load_visual(path, "video", VideoConfig(**SMALL))
    assert len(converted) == 16  # of 50 decoded frames, only the 16 sampled ones are kept


@needs_av
def test_unwritable_cache_warns_and_still_loads(tmp_path, capsys):
    path = counter_video(tmp_path / "v.mp4", n=10, fps=10)
    (tmp_path / "not_a_folder").write_text("")
    out = load_visual(path, "video", VideoConfig(**SMALL, cache_dir=str(tmp_path / "not_a_folder")))
    assert out.frames.shape[0] == 4 and list(tmp_path.glob("**/*.tmp")) == []
    assert "cannot write frame cache entry" in capsys.readouterr().err
