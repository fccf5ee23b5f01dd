"""Image and video encoding shared by the exporters: JPEG through Pillow, H.264 mp4 through PyAV."""

from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

# crf / x264 preset per quality level (upstream's gs_video map).
VIDEO_QUALITY = {"low": ("28", "veryfast"), "medium": ("23", "medium"), "high": ("18", "slow")}


def colormap(values: np.ndarray, name: str = "Spectral") -> np.ndarray:
    """Map values in [0, 1] (any shape) to uint8 RGB (..., 3) through a matplotlib colormap (truncating)."""
    import matplotlib  # 0.3 s to import: loaded by the images that need a colormap, not by every exporter

    rgb = matplotlib.colormaps[name](np.clip(values, 0.0, 1.0))[..., :3]
    return (rgb * 255.0).astype(np.uint8)


def save_jpeg(path: str | Path, image: np.ndarray, quality: int = 95) -> None:
    """Write an (H, W, 3) uint8 RGB image as JPEG."""
    Image.fromarray(np.ascontiguousarray(image)).save(path, format="JPEG", quality=quality)


def _even(frame: np.ndarray) -> np.ndarray:
    """Repeat the last row/column where needed: yuv420p needs even sizes."""
    h, w = frame.shape[:2]
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge") if (h % 2 or w % 2) else frame


def write_mp4(path: str | Path, frames: Iterable[np.ndarray], fps: float, quality: str = "medium") -> int:
    """Encode (H, W, 3) uint8 RGB frames as H.264 yuv420p (odd sizes padded by one edge pixel); returns the count."""
    import av

    if quality not in VIDEO_QUALITY:
        raise ValueError(f"unknown video_quality {quality!r}; choose one of {', '.join(VIDEO_QUALITY)}")
    crf, preset = VIDEO_QUALITY[quality]
    count = 0
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": crf, "preset": preset}
        for frame in frames:
            frame = _even(frame)
            if count == 0:
                stream.height, stream.width = frame.shape[:2]
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
            count += 1
        for packet in stream.encode():
            container.mux(packet)
    if count == 0:
        raise ValueError(f"no frames to encode into {path}")
    return count
