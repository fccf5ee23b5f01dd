"""Camera trajectories for fly-through videos (DA3's gs_video modes), in numpy.

Poses are camera-to-world (M, 4, 4) with OpenCV axes; intrinsics are *normalised* (M, 3, 3): row 0 divided
by the image width and row 1 by the height, so a path is independent of the render resolution.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy.spatial.transform import Rotation

from da3core.geometry import as_homogeneous

TRAJECTORY_MODES = (
    "original",
    "smooth",
    "interpolate",
    "interpolate_smooth",
    "extend",
    "wander",
    "dolly_zoom",
    "wobble_inter",
)


def smooth_path(c2w: np.ndarray, k_size: int = 50) -> np.ndarray:
    """Gaussian-filter the x axis, y axis and centre of each pose over time (reflect-padded), re-orthonormalise."""
    c2w = as_homogeneous(np.asarray(c2w, dtype=np.float64))
    n = len(c2w)
    if n <= 1:
        return c2w
    k_size = max(k_size, 1) | 1  # odd
    k_size = min(k_size, n if n % 2 else n - 1)
    if n >= 3:
        k_size = max(k_size, 3)
    kernel = cv2.getGaussianKernel(k_size, -1).astype(np.float32).astype(np.float64)[:, 0]
    pad = k_size // 2

    def filt(x: np.ndarray) -> np.ndarray:  # (n, 3) -> (n, 3)
        padded = np.pad(x, ((pad, pad), (0, 0)), mode="reflect")
        return np.stack([np.convolve(padded[:, j], kernel[::-1], mode="valid") for j in range(3)], axis=-1)

    r1, r2, t = (filt(c2w[:, :3, j]) for j in (0, 1, 3))
    r1 /= np.linalg.norm(r1, axis=-1, keepdims=True)
    r2 /= np.linalg.norm(r2, axis=-1, keepdims=True)
    out = np.tile(np.eye(4), (n, 1, 1))
    out[:, :3, 0], out[:, :3, 1], out[:, :3, 2], out[:, :3, 3] = r1, r2, np.cross(r1, r2), t
    return out


def _frame(y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """3x3 frame with columns (y x z, y, z) for perpendicular unit vectors y, z."""
    return np.stack([np.cross(y, z), y, z], axis=-1)


def _ray_intersection(o1: np.ndarray, d1: np.ndarray, o2: np.ndarray, d2: np.ndarray) -> np.ndarray:
    """Least-squares closest point to two rays (unit directions)."""
    projs = [np.outer(d, d) - np.eye(3) for d in (d1, d2)]
    return np.linalg.lstsq(sum(projs), projs[0] @ o1 + projs[1] @ o2, rcond=None)[0]


def _pivot_params(c2w: np.ndarray, frame: np.ndarray, pivot: np.ndarray) -> np.ndarray:
    """(5,) translation in the look/pivot-axis frame plus two Euler angles (Y, Z of intrinsic YXZ)."""
    translation = _frame(frame[:, 1], c2w[:3, 2]).T @ (pivot - c2w[:3, 3])
    y, _, z = Rotation.from_matrix(np.linalg.inv(frame) @ c2w[:3, :3]).as_euler("YXZ")
    return np.concatenate([translation, [y, z]])


def _from_pivot_params(params: np.ndarray, frame: np.ndarray, pivot: np.ndarray) -> np.ndarray:
    rot = frame @ Rotation.from_euler("YXZ", [params[3], 0.0, params[4]]).as_matrix()
    out = np.eye(4)
    out[:3, :3] = rot
    out[:3, 3] = pivot - _frame(frame[:, 1], rot[:, 2]) @ params[:3]
    return out


def _lerp_angle(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Interpolate angles (radians) the short way round; ``t`` (T,) against a, b (k,) -> (T, k)."""
    tau = 2 * np.pi
    a, b = a % tau, b % tau
    starts = np.stack([a, a - tau, a + tau])  # pick the start whose distance to b is smallest
    best = np.argmin(np.abs(b - starts), axis=0)
    start = np.take_along_axis(starts, best[None], axis=0)[0]
    return start + (b - start) * t[:, None]


def interpolate_poses(c2w_a: np.ndarray, c2w_b: np.ndarray, t: np.ndarray, eps: float = 1e-4) -> np.ndarray:
    """(T, 4, 4) poses from a to b: orbit the look rays' closest point (or the centres' midpoint if parallel)."""
    look_a, look_b = c2w_a[:3, 2], c2w_b[:3, 2]
    if abs(abs(look_a @ look_b) - 1) < eps:
        pivot = 0.5 * (c2w_a[:3, 3] + c2w_b[:3, 3])
    else:
        pivot = _ray_intersection(c2w_a[:3, 3], look_a, c2w_b[:3, 3], look_b)
    other = look_b
    for fallback in (np.array([0.0, 0.0, 1.0]), np.array([0.0, 1.0, 0.0])):
        if abs(abs(look_a @ other) - 1) < eps:
            other = fallback
    axis = np.cross(look_a, other)
    frame = _frame(axis / np.linalg.norm(axis), look_a)
    pa, pb = _pivot_params(c2w_a, frame, pivot), _pivot_params(c2w_b, frame, pivot)
    params = np.concatenate([pa[:3] + (pb[:3] - pa[:3]) * t[:, None], _lerp_angle(pa[3:], pb[3:], t)], axis=-1)
    return np.stack([_from_pivot_params(p, frame, pivot) for p in params])


def interpolate_path(c2w: np.ndarray, intr: np.ndarray, inter_len: int, eased: bool = True):
    """Consecutive pairs joined by ``inter_len`` poses each (shared endpoints kept once); intrinsics lerped."""
    t = np.linspace(0.0, 1.0, inter_len)
    if eased:
        t = (np.cos(np.pi * (t + 1)) + 1) / 2
    poses, intrs = [], []
    for i in range(len(c2w) - 1):
        skip = 0 if i == 0 else 1
        poses.append(interpolate_poses(c2w[i], c2w[i + 1], t)[skip:])
        intrs.append((intr[i] + (intr[i + 1] - intr[i]) * t[:, None, None])[skip:])
    return np.concatenate(poses), np.concatenate(intrs)


def wander_path(c2w: np.ndarray, intr: np.ndarray, width: int, num_frames: int = 120, max_disp: float = 48.0):
    """A small in-plane ellipse of ``max_disp`` pixels around one pose; starts and ends at that pose."""
    r = max_disp / (intr[0, 0] * width)
    th = np.linspace(0.0, 2.0 * np.pi, num_frames)
    offsets = np.tile(np.eye(4), (num_frames, 1, 1))
    offsets[:, :3, 3] = -np.stack([r * np.sin(th), r * np.cos(th) / 3.0, r * np.cos(th) / 3.0], axis=-1)
    poses = np.concatenate([c2w[None], c2w[None] @ offsets, c2w[None]])
    return poses, np.repeat(intr[None], len(poses), axis=0)


def dolly_zoom_path(
    c2w: np.ndarray, intr: np.ndarray, num_frames: int = 120, max_disp: float = 0.1, d_focus: float = 10.0
):
    """Move back by up to ``max_disp`` and back again while zooming in to keep depth ``d_focus`` framed."""
    t = np.linspace(0.0, 2.0, num_frames)
    z = 0.5 * (1.0 - np.cos(np.pi * t)) * max_disp
    offsets = np.tile(np.eye(4), (num_frames, 1, 1))
    offsets[:, 2, 3] = -z
    intrs = np.repeat(intr[None], num_frames, axis=0)
    scale = np.maximum(d_focus / (d_focus + z), 1e-6)
    intrs[:, 0, 0] *= scale
    intrs[:, 1, 1] *= scale
    return c2w[None] @ offsets, intrs


def wobble_inter_path(c2w: np.ndarray, intr: np.ndarray, inter_len: int = 10, n_skip: int = 3):
    """Interpolate every ``n_skip``-th pose while circling in the image plane (radius half the spacing)."""
    if len(c2w) <= n_skip:
        raise ValueError(f"trajectory 'wobble_inter' needs more than {n_skip} views, got {len(c2w)}")
    t = np.linspace(0.0, 1.0, n_skip * inter_len)
    poses, intrs, spacing = [], [], None
    for i in range(0, len(c2w) - n_skip, n_skip):
        step = np.linalg.norm(c2w[i, :3, 3] - c2w[i + n_skip, :3, 3])
        spacing = step if spacing is None else (spacing + step) / 2
        wobble = np.tile(np.eye(4), (len(t), 1, 1))
        wobble[:, 0, 3] = np.sin(2 * np.pi * t) * spacing * 0.5
        wobble[:, 1, 3] = -np.cos(2 * np.pi * t) * spacing * 0.5
        skip = 0 if i == 0 else 1
        poses.append((interpolate_poses(c2w[i], c2w[i + n_skip], t) @ wobble)[skip:])
        intrs.append((intr[i] + (intr[i + n_skip] - intr[i]) * t[:, None, None])[skip:])
    return np.concatenate(poses), np.concatenate(intrs)


def _inter_len(n_views: int) -> int:
    """Frames per interpolated segment: 8, kept between 2 s and 18 s of video at 24 fps."""
    total = (n_views - 1) * 8
    if total > 24 * 18:
        return max(1, 24 * 10 // (n_views - 1))
    if total < 24 * 2:
        return max(1, 24 * 2 // (n_views - 1))
    return 8


def make_trajectory(mode: str, c2w: np.ndarray, intr: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(M, 4, 4) c2w and (M, 3, 3) normalised intrinsics for ``mode`` from input poses (N, 3|4, 4).

    ``width`` (pixels of the render) converts the wander amplitude from pixels to scene units.
    """
    if mode not in TRAJECTORY_MODES:
        raise ValueError(f"unknown trajectory {mode!r}; choose one of {', '.join(TRAJECTORY_MODES)}")
    c2w = as_homogeneous(np.asarray(c2w, dtype=np.float64))
    intr = np.asarray(intr, dtype=np.float64)
    if len(c2w) <= 1 and mode not in ("wander", "dolly_zoom"):
        raise ValueError(f"trajectory {mode!r} needs several views; use 'wander' or 'dolly_zoom' for one view")
    if mode == "original":
        return c2w, intr
    if mode == "smooth":
        return smooth_path(c2w), intr
    if mode == "wander":
        return wander_path(c2w[0], intr[0], width, max_disp=24.0)
    if mode == "dolly_zoom":
        return dolly_zoom_path(c2w[0], intr[0], d_focus=30.0, max_disp=2.0)
    if mode == "wobble_inter":
        return wobble_inter_path(c2w, intr)
    inter_len = _inter_len(len(c2w))
    if inter_len > 2:
        c2w, intr = interpolate_path(c2w, intr, inter_len)
    if mode == "interpolate":
        return c2w, intr
    c2w = smooth_path(c2w)
    if mode == "interpolate_smooth":
        return c2w, intr
    mid = len(c2w) // 2  # "extend": a wander and a dolly zoom inserted at the middle frame
    n_insert = max(36, min(60, mid // 2))
    wander = wander_path(c2w[mid], intr[mid], width, n_insert, max_disp=24.0)
    dolly = dolly_zoom_path(c2w[mid], intr[mid], n_insert)
    return (
        np.concatenate([c2w[:mid], wander[0], dolly[0], c2w[mid:]]),
        np.concatenate([intr[:mid], wander[1], dolly[1], intr[mid:]]),
    )
