"""Sim(3) alignment of camera trajectories, and of a DA3 prediction to user-supplied poses (spec §7).

Our own numpy version of upstream's evo-based ``align_poses_umeyama`` (same semantics, float64 throughout).
Where upstream raises (evo's "Degenerate covariance rank"), we fall back to an alignment that also uses
the camera orientations, so every input yields a finite Sim(3):

- N = 2 views, or centres on a line (Umeyama's rotation about that line is undetermined; issue #88):
  rotation = chordal mean of the per-view orientation differences, scale = ratio of the centres' spreads
  (for two views: the baseline ratio), translation from the centroids.
- N = 1 view, or all centres of either trajectory coincide: the scale is unobservable, s = 1 (a warning
  is logged); rotation and translation as above, so the single camera maps exactly onto its counterpart.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import torch

from da3core.geometry import affine_inverse
from da3core.prediction import Prediction

log = logging.getLogger(__name__)

RANSAC_MIN_VIEWS = 10  # upstream switches to RANSAC from this many views
RANK_TOLERANCE = 1e-9  # second singular value of the centre covariance below this x the first: a line
RIGID_TOLERANCE = 1e-3  # max |R R^T - I| accepted for a rotation block (float32 poses pass easily)


class DegenerateAlignmentError(ValueError):
    """Point sets that do not determine a Sim(3) (fewer than 3 non-collinear points)."""


def umeyama_sim3(
    src: np.ndarray, dst: np.ndarray, with_scale: bool = True, weights: np.ndarray | None = None
) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares (s, R, t) with dst ≈ s R src + t for (N, 3) point sets; reflection-safe (Umeyama 1991).

    ``weights`` (N,) >= 0 make it the weighted least-squares fit (the step of an IRLS loop); None weighs all equally.
    """
    src, dst = np.asarray(src, dtype=np.float64), np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 3:
        raise ValueError(f"umeyama_sim3 needs two (N, 3) point sets of equal shape, got {src.shape} and {dst.shape}")
    if weights is None:
        w = np.full(len(src), 1.0 / max(len(src), 1))
    else:
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != (len(src),) or not (w >= 0).all() or not w.sum() > 0:
            raise ValueError(f"umeyama_sim3 weights must be ({len(src)},), non-negative and not all zero")
        w = w / w.sum()
    mu_src, mu_dst = w @ src, w @ dst
    src_c, dst_c = src - mu_src, dst - mu_dst
    var_src = (w @ src_c**2).sum()
    u, d, vt = np.linalg.svd((dst_c * w[:, None]).T @ src_c)
    if not d[0] > 0 or d[1] <= RANK_TOLERANCE * d[0]:
        raise DegenerateAlignmentError(
            f"{len(src)} points do not span a plane (covariance singular values {d}); "
            "a Sim(3) needs 3 non-collinear points"
        )
    signs = np.array([1.0, 1.0, -1.0 if np.linalg.det(u) * np.linalg.det(vt) < 0 else 1.0])
    rot = (u * signs) @ vt
    scale = float((d * signs).sum() / var_src) if with_scale else 1.0
    return scale, rot, mu_dst - scale * rot @ mu_src


def _c2w(ext: np.ndarray) -> np.ndarray:
    """(N, 3, 4) camera-to-world poses of (N, 3, 4) or (N, 4, 4) w2c extrinsics, in float64."""
    ext = np.asarray(ext, dtype=np.float64)
    if ext.ndim != 3 or ext.shape[-2:] not in ((3, 4), (4, 4)):
        raise ValueError(f"extrinsics must be (N, 3, 4) or (N, 4, 4) world-to-camera matrices, got {ext.shape}")
    if not np.isfinite(ext).all():
        bad = np.flatnonzero(~np.isfinite(ext).all(axis=(1, 2)))
        raise ValueError(f"extrinsics of view(s) {bad.tolist()} contain NaN or inf; pass finite w2c matrices")
    rot = ext[:, :3, :3]
    off = np.abs(rot @ rot.transpose(0, 2, 1) - np.eye(3)).max(axis=(1, 2))
    if (off > RIGID_TOLERANCE).any() or (np.linalg.det(rot) < 0).any():
        bad = np.flatnonzero((off > RIGID_TOLERANCE) | (np.linalg.det(rot) < 0))
        raise ValueError(
            f"extrinsics of view(s) {bad.tolist()} are not rigid (rotation block not orthonormal with det +1); "
            "pass OpenCV world-to-camera [R|t] matrices without scale or axis flips"
        )
    return affine_inverse(ext[:, :3])


def _orientation_sim3(pose_ref: np.ndarray, pose_est: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Sim(3) from orientations (rotation) and centre spreads (scale) when the centres alone cannot fix it."""
    u, _, vt = np.linalg.svd((pose_ref[:, :, :3] @ pose_est[:, :, :3].transpose(0, 2, 1)).sum(0))
    rot = u @ np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))]) @ vt
    c_ref, c_est = pose_ref[:, :, 3], pose_est[:, :, 3]
    spread_ref, spread_est = (np.sqrt(((c - c.mean(0)) ** 2).sum(1).mean()) for c in (c_ref, c_est))
    tiny = 1e-12 * max(1.0, np.abs(c_ref).max(), np.abs(c_est).max())
    if spread_ref > tiny and spread_est > tiny:
        scale = float(spread_ref / spread_est)
    else:
        scale = 1.0
        log.warning("pose alignment: %d camera centre(s) do not fix a scale; using s = 1", len(c_ref))
    return scale, rot, c_ref.mean(0) - scale * rot @ c_est.mean(0)


def _centre_sim3(pose_ref: np.ndarray, pose_est: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Umeyama on camera centres (upstream), with the orientation fallback where it is rank-deficient."""
    try:
        return umeyama_sim3(pose_est[:, :, 3], pose_ref[:, :, 3])
    except DegenerateAlignmentError:
        return _orientation_sim3(pose_ref, pose_est)


def _ransac_sim3(
    pose_ref: np.ndarray, pose_est: np.ndarray, random_state: int | None, max_iters: int
) -> tuple[float, np.ndarray, np.ndarray]:
    """Upstream's ``_ransac_align_sim3``: Umeyama on random halves, best by (#inliers, mean error), refit."""
    n = len(pose_ref)
    c_ref, c_est = pose_ref[:, :, 3], pose_est[:, :, 3]
    best = _centre_sim3(pose_ref, pose_est)
    # Threshold: median distance from each pre-aligned estimated centre to its nearest reference centre.
    s, rot, t = best
    aligned = s * c_est @ rot.T + t
    thresh = np.median(np.linalg.norm(aligned[:, None] - c_ref[None], axis=-1).min(1))
    rng = np.random.default_rng(random_state)
    best_score, best_inliers = (-1, np.inf), None
    for _ in range(max_iters):
        sample = rng.choice(n, size=max(3, (n + 1) // 2), replace=False)
        try:
            s, rot, t = umeyama_sim3(c_est[sample], c_ref[sample])
        except DegenerateAlignmentError:
            continue
        errors = np.linalg.norm(s * c_est @ rot.T + t - c_ref, axis=1)
        inliers = errors <= thresh
        score = (int(inliers.sum()), float(errors[inliers].mean()) if inliers.any() else np.inf)
        if score[0] > best_score[0] or (score[0] == best_score[0] and score[1] < best_score[1]):
            best_score, best, best_inliers = score, (s, rot, t), inliers
    if best_inliers is not None and best_inliers.sum() >= 3:
        return _centre_sim3(pose_ref[best_inliers], pose_est[best_inliers])
    return best


def align_poses_umeyama(
    ext_ref: np.ndarray,
    ext_est: np.ndarray,
    ransac: bool = False,
    random_state: int | None = 42,
    ransac_max_iters: int = 10,
) -> tuple[float, np.ndarray, np.ndarray]:
    """(s, R, t) mapping the camera centres of w2c ``ext_est`` onto those of ``ext_ref``: c_ref ≈ s R c_est + t.

    Both are (N, 3, 4) or (N, 4, 4). With ``ransac`` the fit is upstream's RANSAC over random halves of
    the views (``np.random.default_rng(random_state)``). Rank-deficient inputs: see the module docstring.
    """
    pose_ref, pose_est = _c2w(ext_ref), _c2w(ext_est)
    if len(pose_ref) != len(pose_est) or len(pose_ref) == 0:
        raise ValueError(
            f"need the same non-zero number of poses on both sides, got {len(pose_ref)} and {len(pose_est)}"
        )
    if ransac:
        return _ransac_sim3(pose_ref, pose_est, random_state, ransac_max_iters)
    return _centre_sim3(pose_ref, pose_est)


def apply_sim3_to_extrinsics(ext: np.ndarray, scale: float, rot: np.ndarray, trans: np.ndarray) -> np.ndarray:
    """Move (N, 3|4, 4) w2c cameras by the Sim(3) x -> s R x + t of world points; returns (N, 3, 4) float64 w2c."""
    pose = _c2w(ext)
    moved = np.concatenate([rot @ pose[:, :, :3], (scale * pose[:, :, 3] @ rot.T + trans)[..., None]], axis=-1)
    return affine_inverse(moved)


def align_prediction_to_input(
    prediction: Prediction,
    input_extrinsics: np.ndarray,
    input_intrinsics: np.ndarray | None,
    align_to_input_ext_scale: bool = True,
) -> Prediction:
    """Express a prediction in the frame of user poses (upstream ``_align_to_input_extrinsics_intrinsics``).

    ``input_extrinsics`` (N, 3|4, 4) w2c, ``input_intrinsics`` (N, 3, 3) in processed pixels (or None to keep
    the predicted ones). RANSAC from 10 views, fixed seed 42. With ``align_to_input_ext_scale`` the
    extrinsics become the input's and depth is divided by the scale s (predicted ≈ s x input units);
    otherwise depth is kept and the extrinsics are the input poses mapped into the prediction's frame.
    Gaussians and aux features are left as predicted (as upstream). Returns a new Prediction.
    """
    n = len(prediction)
    if prediction.extrinsics is None:
        raise ValueError(
            "this prediction has no camera poses (mono/metric preset); input extrinsics cannot be aligned to it"
        )
    ext_in = np.asarray(input_extrinsics)
    if ext_in.shape not in ((n, 3, 4), (n, 4, 4)):
        raise ValueError(f"input extrinsics must be ({n}, 3, 4) or ({n}, 4, 4) world-to-camera, got {ext_in.shape}")
    if input_intrinsics is not None and np.shape(input_intrinsics) != (n, 3, 3):
        raise ValueError(f"input intrinsics must be ({n}, 3, 3), got {np.shape(input_intrinsics)}")
    scale, rot, trans = align_poses_umeyama(
        prediction.extrinsics, ext_in, ransac=n >= RANSAC_MIN_VIEWS, random_state=42
    )
    if align_to_input_ext_scale:
        extrinsics, depth = ext_in[:, :3, :], prediction.depth / scale
    else:
        extrinsics, depth = apply_sim3_to_extrinsics(ext_in, scale, rot, trans), prediction.depth
    intrinsics = prediction.intrinsics if input_intrinsics is None else np.asarray(input_intrinsics)
    return dataclasses.replace(
        prediction,
        depth=depth.astype(np.float32),
        extrinsics=extrinsics.astype(np.float32),
        intrinsics=None if intrinsics is None else intrinsics.astype(np.float32),
    )


def batch_pose_scale(
    ext_ref: torch.Tensor, ext_est: torch.Tensor, min_scale: float = 1 / 3, max_scale: float = 3.0
) -> torch.Tensor:
    """(B,) scale s of ``align_poses_umeyama`` (c_ref ≈ s R c_est + t) per batch of (B, N, 3|4, 4) w2c, clamped.

    For the Gaussian adapter (upstream ``batch_align_poses_umeyama`` + clamp to [1/3, 3]). One view or
    coincident centres give 1, as upstream gets when evo raises; two views give the baseline ratio, which
    is also what evo returns for float32 poses.
    """
    ref, est = (e.detach().double().cpu().numpy() for e in (ext_ref, ext_est))
    scales = [align_poses_umeyama(r, e)[0] for r, e in zip(ref, est)]
    return torch.tensor(scales, dtype=ext_ref.dtype, device=ext_ref.device).clamp(min_scale, max_scale)
