"""``gs_video``: ``gs_video/0000_<trj_mode>.mp4``, the Gaussians rendered along a camera trajectory.

Options follow upstream's ``export_to_gs_video``. Cameras default to the predicted ones (w2c; for metric
predictions the translation is divided by ``scale_factor`` to return to the Gaussians' frame) at the processed
resolution; ``extrinsics`` (M, 3|4, 4) w2c, ``intrinsics`` (M, 3, 3) or one (3, 3) in pixels of the render, and
``out_image_hw`` (H, W) override them (upstream's leading batch dimension of 1 and torch tensors are accepted;
the API's ``render_exts``/``render_ixts``/``render_hw`` arrive here under these names). The trajectory
(:mod:`da3core.trajectories`) is built from those cameras; one camera forces ``wander``. ``color_mode`` picks the
depth that is rendered: ``RGB+ED`` the expected depth (normalised by opacity), ``RGB+D`` the accumulated one.
Each frame shows colour beside that depth (log depth between the video's 1st percentile of positive depth and
99th percentile, Spectral), 8 white pixels apart (``vis_depth``: hcat, vcat or None). ``output_name`` replaces
the file's stem; ``enable_tqdm`` shows a progress bar. Unlike upstream, which rebuilds K from the field of view
with the principal point at the centre, the render uses the cameras' own (rescaled) intrinsics.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from da3core.export.media import VIDEO_QUALITY, colormap, write_mp4
from da3core.export.target import ExportTarget
from da3core.geometry import affine_inverse, as_homogeneous
from da3core.prediction import Prediction, present
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


COLOR_MODES = ("RGB+ED", "RGB+D")


def _camera_array(value: Any, name: str) -> np.ndarray:
    """(M, 4, 4) w2c or (M, 3, 3) K as float64 from an array, a list or a torch tensor.

    Upstream's leading batch dimension of 1 is dropped, and one (3, 3) K stands for every camera.
    """
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"gs_video {name} must be a numeric array, got {type(value).__name__}") from None
    found = arr.shape
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if name == "intrinsics" and arr.ndim == 2:
        arr = arr[None]
    accepted, wanted = (
        ({(3, 4), (4, 4)}, "(M, 3|4, 4) world-to-camera") if name == "extrinsics" else ({(3, 3)}, "(M, 3, 3) or (3, 3)")
    )
    if arr.ndim != 3 or arr.shape[1:] not in accepted or not len(arr) or not np.isfinite(arr).all():
        raise ValueError(f"gs_video {name} must be finite {wanted} matrices, got shape {found}")
    return as_homogeneous(arr) if name == "extrinsics" else arr


def check_gs_video_options(
    trj_mode: str = "extend",
    video_quality: str = "high",
    vis_depth: str | None = "hcat",
    color_mode: str = "RGB+ED",
    extrinsics: Any = None,
    intrinsics: Any = None,
    out_image_hw: Any = None,
    chunk_size: int | None = 4,
    output_name: str | None = None,
    enable_tqdm: bool = True,
    fps: float = 24,
    device: str | None = None,
    **_: object,
) -> None:
    """Reject every option value the writer would fail on, before anything is computed or rendered."""
    if trj_mode not in TRAJECTORY_MODES:
        raise ValueError(f"unknown trj_mode {trj_mode!r}; choose one of {', '.join(TRAJECTORY_MODES)}")
    if video_quality not in VIDEO_QUALITY:
        raise ValueError(f"unknown video_quality {video_quality!r}; choose one of {', '.join(VIDEO_QUALITY)}")
    if vis_depth not in (None, "hcat", "vcat"):
        raise ValueError(f"vis_depth must be 'hcat', 'vcat' or None, got {vis_depth!r}")
    if color_mode not in COLOR_MODES:
        raise ValueError(f"unknown color_mode {color_mode!r}; choose one of {', '.join(COLOR_MODES)}")
    ext = None if extrinsics is None else _camera_array(extrinsics, "extrinsics")
    ixt = None if intrinsics is None else _camera_array(intrinsics, "intrinsics")
    if ext is not None and ixt is not None and len(ixt) not in (1, len(ext)):
        raise ValueError(
            f"gs_video has {len(ext)} extrinsics but {len(ixt)} intrinsics; pass one per camera or one for all"
        )
    if out_image_hw is not None and (
        np.shape(out_image_hw) != (2,)
        or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in out_image_hw)
    ):
        raise ValueError(f"out_image_hw must be two positive integers (height, width), got {out_image_hw!r}")
    if chunk_size is not None and (
        isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1
    ):
        raise ValueError(f"chunk_size must be a positive integer or None (all views at once), got {chunk_size!r}")
    if output_name is not None and (
        not isinstance(output_name, str) or not output_name.strip(".") or any(c in output_name for c in "/\\\0")
    ):
        raise ValueError(
            f"output_name must be a plain file name without folders (the video is "
            f"gs_video/<output_name>.mp4), got {output_name!r}"
        )
    if not isinstance(enable_tqdm, bool):
        raise ValueError(f"enable_tqdm must be true or false, got {enable_tqdm!r}")
    if not isinstance(fps, (int, float)) or isinstance(fps, bool) or not (np.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    if device is not None and (not isinstance(device, str) or not device.strip()):
        raise ValueError(f"device must be a device name such as 'cuda' or 'cpu', or None, got {device!r}")


def render_cameras(
    prediction: Prediction, extrinsics: Any = None, intrinsics: Any = None, out_image_hw: Any = None
) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """(w2c (M, 4, 4), intrinsics normalised by the render size (M, 3, 3), (H, W)) to build the path from."""
    h, w = prediction.depth.shape[1:]
    out_h, out_w = (int(v) for v in out_image_hw) if out_image_hw is not None else (h, w)
    if extrinsics is not None:
        w2c = _camera_array(extrinsics, "extrinsics")
    else:
        w2c = as_homogeneous(present(prediction.extrinsics, "extrinsics").astype(np.float64))
        if prediction.is_metric and prediction.scale_factor:
            w2c[:, :3, 3] /= prediction.scale_factor
    if intrinsics is not None:
        intr, size = _camera_array(intrinsics, "intrinsics"), (out_w, out_h)
    else:
        intr, size = present(prediction.intrinsics, "intrinsics").astype(np.float64), (w, h)
    if len(intr) not in (1, len(w2c)):
        raise ValueError(
            f"gs_video renders {len(w2c)} cameras but has {len(intr)} intrinsics; "
            "pass intrinsics for the given extrinsics"
        )
    intr = np.broadcast_to(intr, (len(w2c), 3, 3)).copy()
    intr[:, 0] /= size[0]
    intr[:, 1] /= size[1]
    return w2c, intr, (out_h, out_w)


def write_gs_video(
    prediction: Prediction,
    target: ExportTarget,
    extrinsics: Any = None,
    intrinsics: Any = None,
    out_image_hw: tuple[int, int] | None = None,
    chunk_size: int | None = 4,
    trj_mode: str = "extend",
    color_mode: str = "RGB+ED",
    vis_depth: str | None = "hcat",
    enable_tqdm: bool = True,
    output_name: str | None = None,
    video_quality: str = "high",
    fps: float = 24,
    device: str | None = None,
) -> list[str]:
    """Render the trajectory and encode it (H.264 through PyAV); returns the mp4's location."""
    check_gs_video_options(
        trj_mode,
        video_quality,
        vis_depth,
        color_mode,
        extrinsics,
        intrinsics,
        out_image_hw,
        chunk_size,
        output_name,
        enable_tqdm,
        fps,
        device,
    )
    w2c, intr, (h, w) = render_cameras(prediction, extrinsics, intrinsics, out_image_hw)
    if len(w2c) <= 1:
        trj_mode = "wander"
    c2w_path, intr_path = make_trajectory(trj_mode, affine_inverse(w2c), intr, w)
    intr_path = intr_path * np.array([w, h, 1.0])[:, None]
    color, depth = render_gaussians(
        present(prediction.gaussians, "Gaussians (infer_gs=true)"),
        affine_inverse(c2w_path),
        intr_path,
        h,
        w,
        chunk_size=chunk_size or len(c2w_path),
        render_mode=color_mode,
        device=device,
        progress=enable_tqdm,
    )
    depth_rgb = depth_colors(depth) if vis_depth else [None] * len(color)
    relpath = f"gs_video/{output_name or f'0000_{trj_mode}'}.mp4"
    with target.staged(relpath) as local:
        write_mp4(local, (compose(c, d, vis_depth) for c, d in zip(color, depth_rgb)), fps=fps, quality=video_quality)
    return [target.url(relpath)]
