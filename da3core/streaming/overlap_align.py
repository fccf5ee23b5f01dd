"""Robust Sim(3) between two chunks from the frames they share.

Every shared frame is the same image in both chunks, so the same pixel back-projects to the same surface point
in each chunk's gauge: the correspondences are given, not matched. The estimator is IRLS with Cauchy weights
around a weighted Umeyama step, started from the shared cameras:

- IRLS rather than RANSAC because the correspondences are dense and mostly right (wrong only where depth is bad:
  edges, sky, reflections, moving things), so a minimal-sample search wastes the many good points and its inlier
  threshold would need tuning per scene, while IRLS uses every point with a weight, is deterministic and costs a
  few Umeyama solves.
- Cauchy rather than Huber because Cauchy weights redescend (1 / (1 + (r/c)^2)): a gross outlier ends up with no
  influence, whereas Huber still lets it pull with weight c / r, which biases the scale of the fit.
- Residuals are divided by the point's depth: depth error grows with distance, and the relative residual makes the
  weights independent of the chunk's arbitrary scale. The Cauchy width follows the median relative residual each
  round, so no threshold needs tuning and exact data converges to an exact fit.
- A redescending estimator needs a start inside the basin of the right answer; the shared cameras give it with a
  50 % breakdown point: scale = median depth ratio of the points, rotation = chordal mean of the per-frame camera
  rotation differences, translation = per-axis median of the per-frame camera translations.
"""

from __future__ import annotations

import numpy as np

from da3core.geometry import affine_inverse, pixel_rays
from da3core.pose_align import umeyama_sim3
from da3core.prediction import Prediction
from da3core.streaming.chunking import StreamingInputError
from da3core.streaming.sim3 import Sim3

CAUCHY_WIDTH = 2.3849  # x the robust residual scale: the Cauchy constant with 95 % efficiency on Gaussian noise
MIN_RELATIVE_SCALE = 1e-12  # floor of the residual scale, so exact data stops at an exact fit instead of dividing by 0
CONF_PERCENTILE = 30.0  # points below this percentile of a chunk's confidence on the shared frames are not used
MAX_POINTS = 200_000  # enough for a well-determined fit; bounds time and memory per alignment


def fit_sim3_irls(
    src: np.ndarray,
    dst: np.ndarray,
    init: Sim3,
    depth: np.ndarray | None = None,
    max_iters: int = 50,
    tol: float = 1e-12,
) -> Sim3:
    """Robust Sim(3) with dst ≈ S(src) for corresponding (N, 3) points: Cauchy IRLS from ``init`` (see module doc).

    ``depth`` (N,) > 0 divides each residual (relative error); None uses absolute residuals.
    """
    src, dst = np.asarray(src, dtype=np.float64), np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 3 or len(src) < 3:
        raise ValueError(f"fit_sim3_irls needs two (N, 3) point sets with N >= 3, got {src.shape} and {dst.shape}")
    norm = np.ones(len(src)) if depth is None else np.asarray(depth, dtype=np.float64)
    sim = init
    for _ in range(max_iters):
        r = np.linalg.norm(sim.apply(src) - dst, axis=1) / norm
        width = CAUCHY_WIDTH * max(float(np.median(r)), MIN_RELATIVE_SCALE)
        weights = 1.0 / (1.0 + (r / width) ** 2) / norm**2
        new = Sim3(*umeyama_sim3(src, dst, weights=weights))
        change = abs(np.log(new.scale / sim.scale)) + np.abs(new.rotation - sim.rotation).max()
        change += np.abs(new.translation - sim.translation).max() / np.median(norm)
        sim = new
        if change < tol:
            break
    return sim


def _chunk_view(pred: Prediction, local: np.ndarray, name: str):
    """(depth, conf, K, c2w) of some frames of a chunk, float64; conf is all ones where the chunk has none."""
    if pred.extrinsics is None or pred.intrinsics is None:
        raise StreamingInputError(f"{name} has no cameras (mono/metric preset); streaming needs an any-view model")
    depth = np.asarray(pred.depth[local], dtype=np.float64)
    conf = np.ones_like(depth) if pred.conf is None else np.asarray(pred.conf[local], dtype=np.float64)
    c2w = affine_inverse(np.asarray(pred.extrinsics[local], dtype=np.float64)[:, :3])
    return depth, conf, np.asarray(pred.intrinsics[local], dtype=np.float64), c2w


def _confident(depth: np.ndarray, conf: np.ndarray) -> np.ndarray:
    """Finite positive depth with confidence at or above the chunk's CONF_PERCENTILE on these frames."""
    valid = np.isfinite(depth) & (depth > 0) & np.isfinite(conf)
    if not valid.any():
        return valid
    return valid & (conf >= np.percentile(conf[valid], CONF_PERCENTILE))


def _back_project(depth: np.ndarray, K: np.ndarray, c2w: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """World points (M, 3) of the masked pixels of (F, H, W) depth maps."""
    out = []
    for d, k, pose, m in zip(depth, K, c2w, mask):
        cam = pixel_rays(k, *d.shape)[m] * d[m][:, None]
        out.append(cam @ pose[:3, :3].T + pose[:3, 3])
    return np.concatenate(out)


def _camera_start(c2w_dst: np.ndarray, c2w_src: np.ndarray, scale: float) -> Sim3:
    """Sim(3) src -> dst from the shared cameras and a known scale (see the module doc)."""
    rots = c2w_dst[:, :, :3] @ c2w_src[:, :, :3].transpose(0, 2, 1)
    u, _, vt = np.linalg.svd(rots.sum(0))
    rot = u @ np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))]) @ vt
    trans = c2w_dst[:, :, 3] - scale * np.einsum("fij,fj->fi", rots, c2w_src[:, :, 3])
    return Sim3(scale, rot, np.median(trans, axis=0))


def align_chunks(chunk_a: Prediction, frames_a: np.ndarray, chunk_b: Prediction, frames_b: np.ndarray) -> Sim3:
    """Sim(3) mapping chunk b's gauge into chunk a's, from the frames both cover (robust; see module doc).

    ``frames_a`` / ``frames_b`` are the global frame indices of the chunks' views; the predictions may hold just the
    shared frames (any superset works), which is all the flow needs to load.
    """
    frames_a, frames_b = np.asarray(frames_a), np.asarray(frames_b)
    shared, ia, ib = np.intersect1d(frames_a, frames_b, return_indices=True)
    if len(shared) == 0:
        raise StreamingInputError(
            f"chunks covering frames {frames_a[0]}..{frames_a[-1]} and {frames_b[0]}..{frames_b[-1]} share no frame; "
            "give consecutive chunks an overlap of at least 1 frame"
        )
    depth_a, conf_a, K_a, c2w_a = _chunk_view(chunk_a, ia, "chunk a")
    depth_b, conf_b, K_b, c2w_b = _chunk_view(chunk_b, ib, "chunk b")
    if depth_a.shape != depth_b.shape:
        raise StreamingInputError(
            f"chunks have depth maps of {depth_a.shape[1:]} and {depth_b.shape[1:]}; infer all "
            "chunks at the same processing resolution"
        )
    mask = _confident(depth_a, conf_a) & _confident(depth_b, conf_b)
    if mask.sum() < 3:
        raise StreamingInputError(
            f"the {len(shared)} shared frame(s) have {mask.sum()} confident depth point(s), too few for a Sim(3); "
            "raise streaming.overlap"
        )
    # Evenly spaced subsample: deterministic and spread over all shared frames.
    keep = np.zeros(mask.size, dtype=bool)
    flat = np.flatnonzero(mask)
    keep[flat[np.linspace(0, len(flat) - 1, min(len(flat), MAX_POINTS)).astype(np.int64)]] = True
    mask = keep.reshape(mask.shape)
    pts_a, pts_b = _back_project(depth_a, K_a, c2w_a, mask), _back_project(depth_b, K_b, c2w_b, mask)
    scale = float(np.median(depth_a[mask] / depth_b[mask]))
    start = _camera_start(c2w_a, c2w_b, scale)
    return fit_sim3_irls(pts_b, pts_a, start, depth=depth_a[mask])
