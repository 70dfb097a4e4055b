"""Video decoding with PyAV and frame sampling with the semantics of Qwen's reference preprocessing.

(Being written: decoding, sampling and caching land here. `write_video` is the one mp4 writer of the
project, used by the synthetic lab and by tests.)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


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


def write_video(path: str | Path, frames: np.ndarray, fps: float = 25.0, crf: int = 18) -> None:
    """Write uint8 RGB frames [F, H, W, 3] to an H.264 mp4 with PyAV (H and W must be even)."""
    import av

    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"write_video expects uint8 frames [F, H, W, 3], got {frames.dtype} {frames.shape}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    with av.open(str(tmp), mode="w") as container:
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
