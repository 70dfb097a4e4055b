"""Video decoding with PyAV and frame sampling with the semantics of Qwen's reference preprocessing.

``load_visual`` turns a video file, a folder of frames or a still image into a ``SampledVideo``: uint8
frames [F, 3, H, W] and the fps of the sampled frames. The rules follow qwen-vl-utils
(``vision_process.py``), which the Qwen-VL family and VideoThinker's public code use, so a model sees
the frames it was trained and evaluated on (the rules, pure functions, are in
`videothinker.data.frame_sampling`):

- ``smart_nframes``: sample ``fps`` frames per second of video, clamped to [min_frames, max_frames]
  and to the frames available, floored to a multiple of ``frame_factor`` (the temporal patch size);
  or a fixed ``nframes`` rounded to ``frame_factor``.
- ``frame_indices``: evenly spaced indices ``linspace(0, total - 1, n).round()``.
- ``video_max_pixels`` + ``smart_resize``: a per-frame pixel budget shared across frames, height and
  width rounded to the patch grid ``size_factor`` with the aspect ratio kept; bicubic, antialiased
  resizing with torchvision.

Only the selected frames are converted and kept (resized as they arrive), so a long video never sits
in memory at full resolution. With ``VideoConfig.cache_dir`` set, sampled frames are cached on disk as
safetensors, so a video is decoded once per run rather than once per epoch. ``write_video`` is the one
mp4 writer of the project, used by the synthetic lab and by tests.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from videothinker.config import VideoConfig
from videothinker.console import warn
from videothinker.data import frame_cache
from videothinker.data.frame_sampling import frame_indices, smart_nframes, smart_resize, video_max_pixels

IMAGE_MIN_PIXELS = 4 * 28 * 28
"""Fewest pixels of a still image (qwen-vl-utils MIN_PIXELS); images share max_pixels with videos."""
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")
"""Files of a frame folder that count as frames (anything else in the folder is ignored)."""


class VideoError(ValueError):
    """A video, frame folder or image that cannot be loaded; the message names the file.

    Attributes:
        path: the file or folder, as the record names it.
        missing: True when it does not exist (else it exists but cannot be decoded or sampled).
    """

    def __init__(self, path: str | Path, message: str, missing: bool = False):
        self.path, self.missing = str(path), missing
        super().__init__(f"{path}: {message}")


@dataclass
class SampledVideo:
    """Frames of one video (or image, or frame folder) after sampling and resizing.

    Attributes:
        frames: uint8 [F, 3, H, W], H and W multiples of the processor's size factor; F = 1 for images.
        fps: frames per second of the *sampled* frames (the model's temporal position ids use it).
        path: where the frames came from.
        is_image: True for a still image (passed to the processor as an image, not a video).
    """

    frames: torch.Tensor
    fps: float
    path: str
    is_image: bool = False


def write_video(
    path: str | Path, frames: np.ndarray, fps: float = 25.0, crf: int = 18, faststart: bool = False
) -> None:
    """Write uint8 RGB frames [F, H, W, 3] to an H.264 mp4 with PyAV (H and W must be even);
    ``faststart`` puts the index before the frames, as files made for streaming have it."""
    import av

    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"write_video expects uint8 frames [F, H, W, 3], got {frames.dtype} {frames.shape}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(tmp), mode="w", options=options) as container:
        stream = container.add_stream("libx264", rate=round(fps))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": "veryfast"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    tmp.replace(path)


@dataclass(frozen=True)
class _Request:
    """What to load besides the file itself; with the file's identity it makes the cache key.

    Attributes:
        data_type: "video", "frame" or "image".
        config: sampling settings.
        size_factor: height and width are multiples of this.
        start: seconds from the first frame where the clip starts (None: the beginning).
        end: seconds from the first frame where the clip ends, inclusive (None: the end).
        native_fps: playback rate of a frame folder (None for videos and images).
    """

    data_type: str
    config: VideoConfig
    size_factor: int
    start: float | None = None
    end: float | None = None
    native_fps: float | None = None


@dataclass
class _Selection:
    """Which frames of a clip to keep: ``ranks`` index the clip's frames in display order (ascending,
    repeats allowed), ``fps`` is the rate of the sampled frames."""

    ranks: list[int]
    fps: float


def _select(times: list[float], video_fps: float, request: _Request, path: str | Path) -> _Selection:
    """Restrict frames (``times`` in seconds from the first frame) to [start, end], then sample."""
    lo = 0.0 if request.start is None else request.start
    hi = math.inf if request.end is None else request.end
    if hi < lo:
        raise VideoError(path, f"end {request.end} s is before start {request.start} s")
    in_range = [i for i, t in enumerate(times) if lo <= t <= hi]
    if not in_range:
        raise VideoError(path, f"no frames between {lo} s and {hi} s (clip is {times[-1]:.2f} s long)")
    n = smart_nframes(len(in_range), video_fps, request.config)
    ranks = [in_range[i] for i in frame_indices(len(in_range), n)]
    return _Selection(ranks=ranks, fps=n / len(in_range) * video_fps)


@dataclass
class _Resizer:
    """Resizes each kept frame as it arrives to one target size, computed from the first frame."""

    size_factor: int
    min_pixels: float
    max_pixels: float
    path: str | Path
    size: tuple[int, int] | None = None

    def __call__(self, rgb: np.ndarray) -> torch.Tensor:
        """uint8 [H, W, 3] -> uint8 [3, h, w] at the target size (bicubic, antialiased)."""
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms import functional as tvf

        frame = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)
        if self.size is None:
            try:
                self.size = smart_resize(
                    frame.shape[1], frame.shape[2], self.size_factor, self.min_pixels, self.max_pixels
                )
            except ValueError as e:
                raise VideoError(self.path, str(e)) from None
        if tuple(frame.shape[1:]) == self.size:
            return frame.contiguous()
        return tvf.resize(frame, list(self.size), interpolation=InterpolationMode.BICUBIC, antialias=True)


def _video_resizer(nframes: int, request: _Request, path: str | Path) -> _Resizer:
    config = request.config
    return _Resizer(request.size_factor, config.min_pixels, video_max_pixels(nframes, config), path)


# ----------------------------------------------------------------------------- decoders


def _native_fps(stream, times: list[float]) -> float:
    """The stream's average frame rate, else one derived from the timestamps."""
    rate = stream.average_rate or stream.guessed_rate
    if rate:
        return float(rate)
    if len(times) > 1 and times[-1] > 0:
        return (len(times) - 1) / times[-1]
    return 1.0


def _decode_video(path: str, request: _Request) -> tuple[torch.Tensor, float]:
    """Decode the sampled frames of a video file: one demux pass reads the timestamps (no decoding),
    a second pass decodes up to the last wanted frame and keeps only the wanted ones. A file with
    fewer packets than its index lists (an mp4 with its index in front, cut short: a partial
    download) is refused rather than sampled from the part that is there.

    Returns:
        uint8 frames [F, 3, H, W] and the fps of the sampled frames.
    """
    try:
        import av
    except ImportError:
        raise VideoError(
            path,
            "decoding videos needs PyAV (pip install av), or a frame cache filled where it is installed",
        ) from None

    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise VideoError(path, "no video stream")
            stream = container.streams.video[0]
            packets = [p for p in container.demux(stream) if p.size > 0]
            if stream.frames and len(packets) < stream.frames:  # the index lists frames the file lacks
                raise VideoError(
                    path, f"truncated: {len(packets)} of the {stream.frames} frames it lists are in the file"
                )
            pts = sorted(p.pts for p in packets if p.pts is not None and not getattr(p, "is_discard", False))
            if not pts:
                raise VideoError(path, "video has no frames")
            # exact (Fraction) arithmetic, rounded once: frame 33 at 10 fps is at 3.3 s, as written
            times = [float((p - pts[0]) * stream.time_base) for p in pts]
            selection = _select(times, _native_fps(stream, times), request, path)
        wanted = [pts[r] for r in selection.ranks]
        resize = _video_resizer(len(wanted), request, path)
        frames: list[torch.Tensor] = []
        with av.open(path) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            if wanted[0] > pts[0]:
                container.seek(wanted[0], stream=stream, backward=True)
            for frame in container.decode(stream):
                if frame.pts is None or frame.pts < wanted[len(frames)]:
                    continue
                kept = resize(frame.to_ndarray(format="rgb24"))
                # A frame stands for every wanted timestamp up to its own (repeats, or a timestamp the
                # decoder did not reproduce exactly).
                while len(frames) < len(wanted) and wanted[len(frames)] <= frame.pts:
                    frames.append(kept)
                if len(frames) == len(wanted):
                    break
    except VideoError:
        raise
    except (av.error.FFmpegError, OSError) as e:
        raise VideoError(path, f"cannot decode video ({type(e).__name__}: {e})") from None
    if not frames:
        raise VideoError(path, "no decodable frames")
    if len(frames) < len(wanted):
        warn(
            f"{path}: decoding stopped early; the last decoded frame stands for {len(wanted) - len(frames)} more"
        )
        frames += [frames[-1]] * (len(wanted) - len(frames))
    return torch.stack(frames), selection.fps


def _read_image(path: Path) -> np.ndarray:
    """An image file as uint8 RGB [H, W, 3] (transparency composited on white, as qwen-vl-utils does)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            if image.mode in ("RGBA", "LA", "P"):
                image = image.convert("RGBA")
                background = Image.new("RGB", image.size, (255, 255, 255))
                background.paste(image, mask=image.getchannel("A"))
                image = background
            return np.array(image.convert("RGB"))
    except OSError as e:  # PIL.UnidentifiedImageError is an OSError
        raise VideoError(path, f"cannot read image ({type(e).__name__}: {e})") from None


def _natural_key(name: str) -> list:
    """Sort key that orders "frame_2" before "frame_10"."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def _frame_files(folder: Path) -> list[Path]:
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise VideoError(folder, f"frame folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return sorted(files, key=lambda p: _natural_key(p.name))


def _decode_frames(folder: Path, request: _Request) -> tuple[torch.Tensor, float]:
    """Load the sampled frames of a frame folder played at ``request.native_fps``; only the sampled
    files are read."""
    files = _frame_files(folder)
    fps = request.native_fps
    selection = _select([i / fps for i in range(len(files))], fps, request, folder)
    resize = _video_resizer(len(selection.ranks), request, folder)
    loaded: dict[int, torch.Tensor] = {}
    for rank in selection.ranks:
        if rank not in loaded:
            loaded[rank] = resize(_read_image(files[rank]))
    return torch.stack([loaded[r] for r in selection.ranks]), selection.fps


def _decode_image(path: Path, request: _Request) -> torch.Tensor:
    """A still image as uint8 [1, 3, H, W], sized between IMAGE_MIN_PIXELS and ``config.max_pixels``."""
    resize = _Resizer(request.size_factor, IMAGE_MIN_PIXELS, request.config.max_pixels, path)
    return resize(_read_image(path))[None]


# ----------------------------------------------------------------------------- cache


def _cache_key(path: Path, request: _Request) -> str:
    """Digest of everything the sampled frames depend on: the file (absolute path, size, mtime; for a
    frame folder every frame file's) and the request (sampling settings, size factor, clip bounds)."""
    if path.is_dir():
        source = [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in _frame_files(path)]
    else:
        stat = path.stat()
        source = [stat.st_size, stat.st_mtime_ns]
    settings = dataclasses.asdict(request)
    del settings["config"]["cache_dir"], settings["config"]["size_factor"]  # size_factor: the request's
    return frame_cache.entry_key(path, source, settings)


# ----------------------------------------------------------------------------- entry point


def media_path(path: str, data_type: str) -> Path:
    """Where a record's media is read from: the path itself, or, for a frame folder named like a video
    ("clip.mp4"), the folder "clip/" when that is what exists."""
    p = Path(path)
    if data_type == "frame" and not p.is_dir() and p.suffix and p.with_suffix("").is_dir():
        return p.with_suffix("")
    return p


def resolve_media(path: str, data_type: str) -> Path:
    """The file or folder to read (`media_path`), checked against the data type."""
    p = media_path(path, data_type)
    if not p.exists():
        what = "frame folder" if data_type == "frame" else data_type
        raise VideoError(path, f"{what} not found", missing=True)
    if data_type == "frame" and not p.is_dir():
        raise VideoError(path, "data_type 'frame' expects a folder of images")
    if data_type != "frame" and p.is_dir():
        raise VideoError(path, f"data_type '{data_type}' expects a file, got a folder")
    return p


def probe_visual(path: str, data_type: str) -> None:
    """A cheap check that a record's media will load: it exists, and a video's container opens with
    a video stream whose first frame decodes (a frame folder's first image, an image file, reads).

    Much cheaper than `load_visual` (no timestamp pass, no sampling, no resizing); a file that breaks
    further in still passes, and `load_visual` reports it when it is met.

    Raises:
        VideoError: as `load_visual` would for a missing or unopenable file (``missing`` set for the first).
    """
    if data_type not in ("video", "frame", "image"):
        raise VideoError(path, f"unknown data_type {data_type!r} (expected video, frame or image)")
    source = resolve_media(path, data_type)
    if data_type == "frame":
        _read_image(_frame_files(source)[0])
        return
    if data_type == "image":
        _read_image(source)
        return
    try:
        import av
    except ImportError:  # frames may come from a frame cache filled elsewhere (load_visual says so)
        return
    try:
        with av.open(str(source)) as container:
            if not container.streams.video:
                raise VideoError(path, "no video stream")
            for _ in container.decode(container.streams.video[0]):
                return
    except VideoError:
        raise
    except (av.error.FFmpegError, OSError) as e:
        raise VideoError(path, f"cannot decode video ({type(e).__name__}: {e})") from None
    raise VideoError(path, "video has no frames")


def _number(value, name: str, path: str) -> float | None:
    """A record's start / end / fps as a float (records may hold them as text); None stays None."""
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not 0 <= number < math.inf:
        raise VideoError(path, f"{name} must be a finite number >= 0, got {value!r}")
    return number


def load_visual(
    path: str,
    data_type: str,
    config: VideoConfig,
    size_factor: int = 28,
    start: float | None = None,
    end: float | None = None,
    fps: float | None = None,
) -> SampledVideo:
    """Load, sample and resize the frames of a video, a frame folder or a still image.

    Args:
        path: a video file ("video"), a folder of image frames sorted by natural name order ("frame";
            "clip.mp4" also finds the folder "clip"), or an image file ("image").
        data_type: "video", "frame" or "image" (``Record.data_type``).
        config: sampling settings; ``config.size_factor``, when set, overrides ``size_factor`` and
            ``config.cache_dir``, when set, caches the result on disk.
        size_factor: height and width are multiples of this (patch_size * merge_size of the processor).
        start: seconds from the first frame where the clip starts (videos and frame folders).
        end: seconds from the first frame where the clip ends, inclusive.
        fps: native frame rate of a frame folder (records carry it); default ``config.fps``. Ignored
            for videos, whose rate comes from the container.

    Returns:
        A SampledVideo; frames uint8 [F, 3, H, W] with F a multiple of ``config.frame_factor`` for
        videos and frame folders; F = 1, fps 0 and ``is_image`` for images.

    Raises:
        VideoError: a missing, undecodable or empty video, folder or image (the message names it).
    """
    if data_type not in ("video", "frame", "image"):
        raise VideoError(path, f"unknown data_type {data_type!r} (expected video, frame or image)")
    source = resolve_media(path, data_type)
    start, end = _number(start, "start", path), _number(end, "end", path)
    is_image = data_type == "image"
    request = _Request(
        data_type=data_type,
        config=config,
        size_factor=config.size_factor or size_factor,
        start=None if is_image else start,
        end=None if is_image else end,
        native_fps=(_number(fps, "fps", path) or config.fps) if data_type == "frame" else None,
    )
    cache_file = (
        frame_cache.entry_file(config.cache_dir, _cache_key(source, request)) if config.cache_dir else None
    )
    cached = frame_cache.read_entry(cache_file) if cache_file is not None else None
    if cached is not None:
        frames, sample_fps = cached
    elif data_type == "video":
        frames, sample_fps = _decode_video(str(source), request)
    elif data_type == "frame":
        frames, sample_fps = _decode_frames(source, request)
    else:
        frames, sample_fps = _decode_image(source, request), 0.0
    if cache_file is not None and cached is None:
        frame_cache.write_entry(cache_file, frames, sample_fps, str(source))
    return SampledVideo(frames=frames, fps=sample_fps, path=path, is_image=is_image)
