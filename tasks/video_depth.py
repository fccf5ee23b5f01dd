"""Prefect tasks of one video's depth: probe → stream (decode → model → zarr + per-frame outputs) → second pass.

Frames flow through iterators end to end: the decoder yields frames in small chunks, the model yields
one depth map per frame, and each is written to the store and the per-frame writers as it arrives.
Nothing scales with the video's length except the frame-index and timestamp lists (8 bytes a frame).
"""

from __future__ import annotations

import os
import socket
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

import numpy as np
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from tqdm import tqdm

from da3core.export.target import ExportTarget
from da3core.io import video as video_io
from da3core.io.inputs import check_unchanged, fingerprint
from da3core.io.storage import is_remote, localize
from da3core.io.video import VideoError
from da3core.store import SceneStore
from da3core.video_depth.outputs import (
    OutputOptions,
    StreamingOutputs,
    write_depth_frames,
    write_depth_video,
    write_npz,
)
from tasks.model_cache import get_video_depth_model
from tasks.reconstruction import package_versions, retry_unless_user_error

if TYPE_CHECKING:  # the schemas live with the flows' config; tasks only read them
    from flows.schema import VideoDepthConfig

DEPTH_KINDS = {False: "relative disparity (affine-ambiguous, larger = nearer)", True: "metric depth in metres"}
SECOND_PASS = ("save_depth_video", "save_depth_frames", "save_npz")


@dataclass
class VideoJob:
    """A probed video and the frames to process (small: indices only, no pixels)."""

    name: str  # file name with extension, Annolid's video_name
    source: str  # as given (path or URL)
    local: str  # local copy to decode
    sha256: str
    stamp: tuple[int, int]  # (size, mtime_ns) while hashed: the decoded file must still have it
    n_frames: int
    fps: float
    width: int
    height: int
    indices: list[int]  # original frame indices to process
    size: tuple[int, int]  # processed (H, W) after max_res
    output_fps: float  # rate of the processed frames (source fps / stride)


def check_local_video(source: str) -> None:
    """Raise a one-line VideoError for a local video path that is not a file (URLs are checked when fetched)."""
    if not is_remote(source) and not os.path.isfile(source):
        what = "is a folder, not a video file" if os.path.isdir(source) else "not found"
        raise VideoError(f"video {what}: {source}; pass video=<path to a video file or s3:// URL>")


@task(name="probe-video", task_run_name="probe-{source}", cache_policy=NO_CACHE, retries=0)
def probe(source: str, cfg: VideoDepthConfig) -> VideoJob:
    """Fetch (s3) and open the video, pick the frames and the processed size; fails before anything is written."""
    started = time.perf_counter()
    check_local_video(source)
    try:
        local = localize(source, dict(cfg.storage.options))
    except FileNotFoundError as exc:
        raise VideoError(f"video not found: {source}; pass video=<path to a video file or s3:// URL>") from exc
    meta = video_io.probe_video(local)
    if meta.n_frames <= 0:
        raise VideoError(f"{source} has no video frames; check the file is a complete, readable video")
    fps = meta.fps if meta.fps > 0 else 30.0  # Annolid's fallback for streams without a rate
    indices = video_io.sample_frame_indices(
        meta.n_frames, fps, cfg.target_fps, cfg.max_frames if cfg.max_frames > 0 else None, integer_stride=True
    )
    stride = int(indices[1] - indices[0]) if len(indices) > 1 else 1
    size = video_io.fit_max_res(meta.height, meta.width, cfg.max_res)
    sha256, stamp = fingerprint(local)
    job = VideoJob(
        PurePosixPath(source).name,
        source,
        str(local),
        sha256,
        stamp,
        meta.n_frames,
        fps,
        meta.width,
        meta.height,
        indices.tolist(),
        size,
        fps / stride,
    )
    get_run_logger().info(
        "probe %s: %d frames at %.3g fps, %dx%d -> %d frames at %dx%d in %.2fs",
        job.name,
        meta.n_frames,
        fps,
        meta.width,
        meta.height,
        len(indices),
        job.size[1],
        job.size[0],
        time.perf_counter() - started,
    )
    return job


def output_options(cfg: VideoDepthConfig) -> OutputOptions:
    """The writer options of a config."""
    return OutputOptions(**{k: getattr(cfg, k) for k in OutputOptions.__dataclass_fields__})


def _depth_stream(model: Any, frames: Iterator[np.ndarray], cfg: VideoDepthConfig, device: str) -> Iterator[np.ndarray]:
    from da3core.video_depth import infer_streaming, infer_windows

    if cfg.streaming:
        return infer_streaming(model, frames, input_size=cfg.input_size, device=device, fp32=cfg.fp32)
    return infer_windows(
        model, frames, windows_per_batch=cfg.windows_per_batch, input_size=cfg.input_size, device=device, fp32=cfg.fp32
    )


@task(name="video-depth", task_run_name="video-depth-{job.name}", cache_policy=NO_CACHE)
def estimate(
    job: VideoJob, store: SceneStore, output_dir: str, cfg: VideoDepthConfig, attrs: dict[str, Any]
) -> dict[str, Any]:
    """Stream the video through the model into a fresh store and the per-frame Annolid outputs, which stay staged:
    the caller publishes them (``result["staged"].publish()``) once the store is swapped in, or discards them."""
    logger = get_run_logger()
    loaded = get_video_depth_model(cfg)
    is_metric = bool(loaded.model.metric)
    n, (h, w) = len(job.indices), job.size
    store.reset(
        {
            **attrs,
            "model": loaded.info,
            "versions": package_versions(),
            "video": {k: v for k, v in asdict(job).items() if k != "indices"},
            "is_metric": int(is_metric),
            "depth_kind": "metric_depth" if is_metric else "relative_disparity",
            "conventions": {
                "depth": DEPTH_KINDS[is_metric],
                "frame": "original video frame index",
                "timestamp": "seconds from the start of the video",
            },
            "worker": {"host": socket.gethostname(), "pid": os.getpid()},
            "started_at": time.time(),
        }
    )
    depth_array = store.create_array("depth", (n, h, w), np.float32, ["frame", "y", "x"])
    clock = {"decode": 0.0, "write": 0.0}
    pending: deque[tuple[int, float, np.ndarray]] = deque()  # frames the model has taken but not answered yet

    def frames() -> Iterator[np.ndarray]:
        decoded = video_io.iter_frames(job.local, np.asarray(job.indices), job.size)
        while True:
            tick = time.perf_counter()
            item = next(decoded, None)
            clock["decode"] += time.perf_counter() - tick
            if item is None:
                return
            pending.append(item)
            yield item[2]

    timestamps = np.full(n, np.nan)
    lo, hi = np.inf, -np.inf
    started = time.perf_counter()
    target = ExportTarget(output_dir, dict(cfg.storage.options))
    with loaded.lock, StreamingOutputs(target, job.name, output_options(cfg), is_metric) as outputs:
        for k, depth in enumerate(
            tqdm(
                _depth_stream(loaded.model, frames(), cfg, loaded.info["device"]),
                total=n,
                desc=f"depth {job.name}",
                unit="frame",
                disable=None,
            )
        ):
            frame_index, timestamps[k], rgb = pending.popleft()
            if depth.shape != (h, w) or frame_index != job.indices[k]:
                raise RuntimeError(
                    f"model returned {depth.shape} for frame {frame_index}; expected {(h, w)} for "
                    f"frame {job.indices[k]}"
                )
            tick = time.perf_counter()
            depth_array[k] = depth
            outputs.add(frame_index, rgb, depth)
            lo, hi = min(lo, float(depth.min())), max(hi, float(depth.max()))
            clock["write"] += time.perf_counter() - tick
        if outputs.count != n:
            raise VideoError(f"{job.source}: decoded {outputs.count} of {n} frames; the file may be truncated")
        check_unchanged(job.local, job.stamp)
        total = time.perf_counter() - started
        # Inside the block, so that a failure here deletes the staged outputs too.
        store.write_array("frame", np.asarray(job.indices, np.int64), ["frame"], chunk0=n)
        store.write_array("timestamp", timestamps, ["frame"], chunk0=n)
        model_seconds = total - clock["decode"] - clock["write"]
        store.update_attrs(n_frames=n, depth_range={"min": lo, "max": hi})
        store.record_stage("decode", clock["decode"])
        store.record_stage("inference", model_seconds, frames_per_second=n / max(total, 1e-9))
        store.record_stage("write", clock["write"])
    logger.info(
        "depth %s: %d frames in %.2fs (%.1f frames/s): decode %.2fs, model %.2fs, write %.2fs",
        job.name,
        n,
        total,
        n / max(total, 1e-9),
        clock["decode"],
        model_seconds,
        clock["write"],
    )
    return {"outputs": outputs.written(), "depth_range": (lo, hi), "staged": outputs}


@task(
    name="video-export",
    task_run_name="export-{kind}",
    cache_policy=NO_CACHE,
    retries=1,
    retry_condition_fn=retry_unless_user_error,
)
def export_second_pass(
    kind: str,
    store: SceneStore,
    output_dir: str,
    job: VideoJob,
    cfg: VideoDepthConfig,
    depth_range: tuple[float, float],
) -> dict[str, list[str]]:
    """Write one output that needs the video's global depth range, reading depth back one frame at a time."""
    started = time.perf_counter()
    target = ExportTarget(output_dir, dict(cfg.storage.options))
    stem, depths, (lo, hi) = PurePosixPath(job.name).stem, store.iter_array("depth"), depth_range
    if kind == "save_depth_video":
        written = {
            "depth_visualization": write_depth_video(target, stem, depths, lo, hi, job.output_fps, cfg.grayscale)
        }
    elif kind == "save_depth_frames":
        written = {"depth_frames": write_depth_frames(target, depths, lo, hi, cfg.grayscale)}
    else:
        written = {"npz": write_npz(target, stem, depths, (len(job.indices), *job.size))}
    store.record_stage(f"export_{kind.removeprefix('save_')}", time.perf_counter() - started)
    get_run_logger().info("export %s: %s in %.2fs", job.name, kind.removeprefix("save_"), time.perf_counter() - started)
    return written
