"""Video frame sampling: decord when it is installed (x86_64 Linux/Windows wheels), PyAV otherwise."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from da3core.errors import UserError

try:  # decord ships wheels for x86_64 Linux/Windows only
    import decord
except ImportError:  # pragma: no cover - exercised on platforms without decord wheels
    decord = None


class VideoError(UserError, ValueError):
    """A video that cannot be opened or decoded."""


@dataclass(frozen=True)
class VideoMeta:
    """Stream facts needed to pick frames."""

    n_frames: int
    fps: float
    width: int
    height: int


def sample_frame_indices(
    n_frames: int, src_fps: float, target_fps: float | None, max_frames: int | None = None, integer_stride: bool = False
) -> np.ndarray:
    """Original frame indices for sampling at ``target_fps`` (every frame when None/<=0 or >= ``src_fps``).

    Indices are ``round(k * src_fps / target_fps)``, so sampling stays on time for non-integer ratios;
    ``integer_stride`` instead takes every ``round(src_fps / target_fps)``-th frame, as Video Depth Anything does.
    ``max_frames`` keeps the first that many (None or <= 0: all).
    """
    if n_frames <= 0:
        return np.zeros(0, dtype=np.int64)
    step = 1.0 if not target_fps or target_fps <= 0 or target_fps >= src_fps else src_fps / target_fps
    if integer_stride:
        step = float(max(1, round(step)))
    idx = np.unique(np.round(np.arange(0, n_frames, step)).astype(np.int64))
    idx = idx[idx < n_frames]
    return idx[:max_frames] if max_frames is not None and max_frames > 0 else idx


def probe_video(path: str | Path) -> VideoMeta:
    """Frame count, fps and size of a video file."""
    path = _check_path(path)
    if decord is not None:
        try:
            reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
            height, width = reader[0].shape[:2] if len(reader) else (0, 0)
        except Exception as exc:  # decord raises its own DECORDError, or a RuntimeError on a frame it cannot read
            raise unreadable_video(path, exc) from exc
        return VideoMeta(len(reader), float(reader.get_avg_fps()), width, height)
    import av

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            n = stream.frames or sum(1 for _ in container.decode(stream))
            return VideoMeta(n, float(stream.average_rate or 30.0), stream.width, stream.height)
    except (av.FFmpegError, IndexError) as exc:
        raise unreadable_video(path, exc) from exc


def read_frames(path: str | Path, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Decode the given frame indices; returns (frames uint8 (K, H, W, 3) RGB, timestamps in seconds (K,))."""
    path = _check_path(path)
    indices = np.asarray(indices, dtype=np.int64)
    if decord is not None:
        try:
            reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=2)
            frames = reader.get_batch(list(indices)).asnumpy()
            stamps = np.array([reader.get_frame_timestamp(int(i))[0] for i in indices], dtype=np.float64)
        except Exception as exc:
            raise VideoError(f"cannot decode frames {indices[:3].tolist()}... of {path}: {_reason(exc)}") from exc
        return frames, stamps
    return _read_frames_pyav(path, indices)


def fit_max_res(height: int, width: int, max_res: int) -> tuple[int, int]:
    """Frame size with the long side capped at ``max_res`` (<= 0: no cap), rounded and made even as upstream VDA."""
    if max_res <= 0 or max(height, width) <= max_res:
        return height, width
    scale = max_res / max(height, width)
    even = lambda v: v + v % 2  # noqa: E731
    return even(max(1, round(height * scale))), even(max(1, round(width * scale)))  # a thin side stays 2 pixels


def iter_frames(
    path: str | Path, indices: np.ndarray, size: tuple[int, int] | None = None, chunk: int = 16
) -> Iterator[tuple[int, float, np.ndarray]]:
    """Yield (frame index, timestamp s, uint8 RGB frame) for ``indices`` in order, decoding ``chunk`` at a time.

    Memory stays bounded by one chunk whatever the video length; ``size`` = (H, W) resizes with INTER_AREA.
    """
    import cv2

    path = _check_path(path)
    indices = np.asarray(indices, dtype=np.int64)

    def fit(frame: np.ndarray) -> np.ndarray:
        if size is None or frame.shape[:2] == tuple(size):
            return frame
        return cv2.resize(frame, (size[1], size[0]), interpolation=cv2.INTER_AREA)

    if decord is None:
        yield from ((i, t, fit(f)) for i, t, f in _iter_frames_pyav(path, indices))
        return
    try:
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    except Exception as exc:
        raise unreadable_video(path, exc) from exc
    for k in range(0, len(indices), chunk):
        part = indices[k : k + chunk]
        try:
            frames = reader.get_batch(list(part)).asnumpy()
            stamps = reader.get_frame_timestamp(list(part))[:, 0]
        except Exception as exc:
            raise VideoError(
                f"cannot decode frames {part[:3].tolist()}... of {path}: {_reason(exc)}. "
                "The file may be truncated or corrupt."
            ) from exc
        for i, t, frame in zip(part, stamps, frames):
            yield int(i), float(t), fit(frame)


def _read_frames_pyav(path: Path, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import av

    wanted = {int(i): k for k, i in enumerate(indices)}
    frames: list[np.ndarray | None] = [None] * len(indices)
    stamps = np.zeros(len(indices))
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            for n, frame in enumerate(container.decode(stream)):
                if n in wanted:
                    frames[wanted[n]] = frame.to_ndarray(format="rgb24")
                    stamps[wanted[n]] = float(frame.time or 0.0)
                if n >= indices.max():
                    break
    except av.FFmpegError as exc:
        raise VideoError(f"cannot decode {path}: {_reason(exc)}") from exc
    missing = [int(i) for i, f in zip(indices, frames) if f is None]
    if missing:
        raise VideoError(f"{path} ended before frames {missing[:5]}; the file may be truncated")
    return np.stack([f for f in frames if f is not None]), stamps


def _iter_frames_pyav(path: Path, indices: np.ndarray) -> Iterator[tuple[int, float, np.ndarray]]:
    """One sequential decode, yielding the wanted frames as they pass."""
    import av

    wanted = iter(sorted(set(int(i) for i in indices)))
    target = next(wanted, None)
    try:
        with av.open(str(path)) as container:
            for n, frame in enumerate(container.decode(container.streams.video[0])):
                if target is None:
                    return
                if n == target:
                    yield n, float(frame.time or 0.0), frame.to_ndarray(format="rgb24")
                    target = next(wanted, None)
    except av.FFmpegError as exc:
        raise VideoError(f"cannot decode {path}: {_reason(exc)}. The file may be truncated or corrupt.") from exc
    if target is not None:
        raise VideoError(f"{path} ended before frame {target}; the file may be truncated")


def unreadable_video(path: str | Path, exc: BaseException) -> VideoError:
    """A one-line VideoError saying why a video cannot be opened: empty, no video stream, or damaged."""
    path = Path(path)
    if path.stat().st_size == 0:
        why = "is empty (0 bytes)"
    else:
        import av

        try:
            with av.open(str(path)) as container:
                has_video = bool(container.streams.video)
            why = "has no video stream (audio only?)" if not has_video else "cannot be decoded (damaged or cut short)"
        except (av.FFmpegError, OSError):
            why = "is not a video file or is cut short"
    return VideoError(f"cannot open video {path}: the file {why} ({_reason(exc)}); give a complete video file")


def _reason(exc: BaseException) -> str:
    """The first line of a decoder's message (decord appends C++ stack traces)."""
    text = str(exc).strip()
    return text.splitlines()[0][:160] if text else exc.__class__.__name__


def _check_path(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"video not found: {path}")
    return path
