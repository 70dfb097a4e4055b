"""The frame-sampling rules of Qwen's reference preprocessing (qwen-vl-utils ``vision_process.py``), as
pure functions: how many frames to sample, which ones, and the size each frame is resized to.

`videothinker.data.video` decodes with them; the Qwen-VL family and VideoThinker's public code
sample the same way, so a model sees the frames it was trained and evaluated on.
"""

from __future__ import annotations

import math

import torch

from videothinker.config import VideoConfig

MAX_RATIO = 200
"""Largest aspect ratio smart_resize accepts (qwen-vl-utils MAX_RATIO)."""


def _round_by(x: float, factor: int) -> int:
    return round(x / factor) * factor


def _ceil_by(x: float, factor: int) -> int:
    return math.ceil(x / factor) * factor


def _floor_by(x: float, factor: int) -> int:
    return math.floor(x / factor) * factor


def smart_nframes(total_frames: int, video_fps: float, config: VideoConfig) -> int:
    """How many frames to sample from a clip (qwen-vl-utils ``smart_nframes``).

    With ``config.nframes`` set: that count rounded to ``frame_factor``. Otherwise
    ``total_frames / video_fps * config.fps`` clamped to [ceil(min_frames), floor(max_frames)] (both to
    ``frame_factor``) and to ``total_frames``, then floored to ``frame_factor``. Unlike qwen-vl-utils,
    which raises, a count below ``frame_factor`` becomes ``frame_factor`` and a fixed ``nframes`` above
    ``total_frames`` is kept: ``frame_indices`` then repeats frames.

    Args:
        total_frames: frames in the clip (after start/end selection), >= 1.
        video_fps: native frames per second of the clip.
        config: sampling settings (fps, nframes, min_frames, max_frames, frame_factor).

    Returns:
        The frame count, a positive multiple of ``config.frame_factor``.
    """
    factor = config.frame_factor
    if config.nframes is not None:
        return max(factor, _round_by(config.nframes, factor))
    min_frames = _ceil_by(config.min_frames, factor)
    max_frames = _floor_by(config.max_frames, factor)
    n = total_frames / video_fps * config.fps
    n = min(max(n, min_frames), max_frames, total_frames)
    return max(factor, _floor_by(n, factor))


def frame_indices(total_frames: int, nframes: int) -> list[int]:
    """Evenly spaced frame indices, first and last included: ``linspace(0, total - 1, n).round()``."""
    return torch.linspace(0, total_frames - 1, nframes).round().long().tolist()


def video_max_pixels(nframes: int, config: VideoConfig) -> float:
    """Per-frame pixel cap of a video of ``nframes`` frames (qwen-vl-utils ``fetch_video``): the total
    budget shared across frames (two frames make one temporal patch), never above ``max_pixels`` and
    never below 1.05 * ``min_pixels``."""
    budget = config.total_pixels / nframes * config.frame_factor
    return max(min(config.max_pixels, budget), int(config.min_pixels * 1.05))


def smart_resize(
    height: int, width: int, factor: int, min_pixels: float, max_pixels: float
) -> tuple[int, int]:
    """Target (height, width) of a frame (qwen-vl-utils ``smart_resize``).

    Both sides are rounded to multiples of ``factor`` (at least ``factor``); if the area then exceeds
    ``max_pixels`` (or falls below ``min_pixels``) the frame is scaled down (up) with its aspect ratio
    kept and the sides floored (ceiled) to ``factor``.

    Raises:
        ValueError: a non-positive size, or an aspect ratio above ``MAX_RATIO``.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"frame size must be positive, got {height}x{width}")
    if max(height, width) / min(height, width) > MAX_RATIO:
        raise ValueError(f"aspect ratio must be at most {MAX_RATIO}, got {height}x{width}")
    h_bar = max(factor, _round_by(height, factor))
    w_bar = max(factor, _round_by(width, factor))
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = max(factor, _floor_by(height / beta, factor))
        w_bar = max(factor, _floor_by(width / beta, factor))
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = _ceil_by(height * beta, factor)
        w_bar = _ceil_by(width * beta, factor)
    return h_bar, w_bar
