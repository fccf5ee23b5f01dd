"""``gs_video``: ``gs_video/0000_<trj_mode>.mp4``, the Gaussians rendered along a camera trajectory.

Cameras default to the predicted ones (w2c; for metric predictions the translation is divided by
``scale_factor`` to return to the Gaussians' frame) at the processed resolution; ``render_exts`` (M, 3|4, 4)
w2c, ``render_ixts`` (M, 3, 3) in pixels of ``render_hw`` and ``render_hw`` (H, W) override them. The trajectory
(:mod:`da3core.trajectories`) is built from those cameras; one camera forces ``wander``. Each frame shows colour
beside expected depth (log depth between the video's 1st percentile of positive depth and 99th percentile,
Spectral), 8 white pixels apart. Unlike upstream, which rebuilds K from the field of view with the principal
point at the centre, the render uses the cameras' own (rescaled) intrinsics.
"""

from __future__ import annotations

import numpy as np

from da3core.export.media import VIDEO_QUALITY, colormap, write_mp4
from da3core.export.target import ExportTarget
from da3core.geometry import affine_inverse, as_homogeneous
from da3core.prediction import Prediction
from da3core.render import render_gaussians
from da3core.trajectories import TRAJECTORY_MODES, make_trajectory

GAP = 8


def depth_colors(depth: np.ndarray) -> np.ndarray:
    """(M, H, W) rendered depth -> (M, H, W, 3) uint8: log depth from P1 (of positive) to P99 (of all), Spectral."""
    positive = depth[depth > 0]
    far = np.log(np.percentile(depth, 99))
    near = np.log(np.percentile(positive, 1)) if len(positive) else 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        value = (np.log(depth) - near) / max(far - near, 1e-6)
    return colormap(np.nan_to_num(value, nan=0.0, neginf=0.0))


def compose(color: np.ndarray, depth_rgb: np.ndarray | None, layout: str | None) -> np.ndarray:
    """(H, W, 3) uint8 frame from colour in [0, 1] and depth colours, side by side ("hcat") or stacked ("vcat")."""
    rgb = (np.clip(color, 0.0, 1.0) * 255).astype(np.uint8)
    if layout is None:
        return rgb
    axis = 1 if layout == "hcat" else 0
    gap_shape = list(rgb.shape)
    gap_shape[axis] = GAP
    return np.concatenate([rgb, np.full(gap_shape, 255, np.uint8), depth_rgb], axis=axis)


def render_cameras(prediction: Prediction, render_exts=None, render_ixts=None, render_hw=None):
    """(w2c (N, 4, 4), intrinsics normalised by the render size (N, 3, 3), (H, W)) to build the path from."""
    h, w = prediction.depth.shape[1:]
    out_h, out_w = render_hw if render_hw is not None else (h, w)
    if render_exts is not None:
        w2c = as_homogeneous(np.asarray(render_exts, dtype=np.float64))
    else:
        w2c = as_homogeneous(prediction.extrinsics.astype(np.float64))
        if prediction.is_metric and prediction.scale_factor:
            w2c[:, :3, 3] /= prediction.scale_factor
    if render_ixts is not None:
        intr, size = np.asarray(render_ixts, dtype=np.float64), (out_w, out_h)
    else:
        intr, size = prediction.intrinsics.astype(np.float64), (w, h)
    intr = np.broadcast_to(intr, (len(w2c), 3, 3)).copy()
    intr[:, 0] /= size[0]
    intr[:, 1] /= size[1]
    return w2c, intr, (int(out_h), int(out_w))


def check_gs_video_options(trj_mode: str = "extend", video_quality: str = "high", vis_depth: str | None = "hcat",
                           **_: object) -> None:
    """Reject unknown trajectory, quality or layout names before anything is rendered."""
    if trj_mode not in TRAJECTORY_MODES:
        raise ValueError(f"unknown trj_mode {trj_mode!r}; choose one of {', '.join(TRAJECTORY_MODES)}")
    if video_quality not in VIDEO_QUALITY:
        raise ValueError(f"unknown video_quality {video_quality!r}; choose one of {', '.join(VIDEO_QUALITY)}")
    if vis_depth not in (None, "hcat", "vcat"):
        raise ValueError(f"vis_depth must be 'hcat', 'vcat' or None, got {vis_depth!r}")


def write_gs_video(
    prediction: Prediction,
    target: ExportTarget,
    trj_mode: str = "extend",
    render_exts: np.ndarray | None = None,
    render_ixts: np.ndarray | None = None,
    render_hw: tuple[int, int] | None = None,
    chunk_size: int = 4,
    video_quality: str = "high",
    vis_depth: str | None = "hcat",
    fps: float = 24,
    device: str | None = None,
    progress: bool = True,
) -> list[str]:
    """Render the trajectory and encode it (H.264 through PyAV); returns the mp4's location."""
    check_gs_video_options(trj_mode, video_quality, vis_depth)
    w2c, intr, (h, w) = render_cameras(prediction, render_exts, render_ixts, render_hw)
    if len(w2c) <= 1:
        trj_mode = "wander"
    c2w_path, intr_path = make_trajectory(trj_mode, affine_inverse(w2c), intr, w)
    intr_path = intr_path * np.array([w, h, 1.0])[:, None]
    color, depth = render_gaussians(prediction.gaussians, affine_inverse(c2w_path), intr_path, h, w,
                                    chunk_size=chunk_size, device=device, progress=progress)
    depth_rgb = depth_colors(depth) if vis_depth else [None] * len(color)
    relpath = f"gs_video/0000_{trj_mode}.mp4"
    with target.staged(relpath) as local:
        write_mp4(local, (compose(c, d, vis_depth) for c, d in zip(color, depth_rgb)), fps=fps, quality=video_quality)
    return [target.url(relpath)]
