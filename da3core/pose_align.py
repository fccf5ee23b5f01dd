"""Sim(3) alignment of camera trajectories (Umeyama, optional RANSAC), in numpy.

Poses are aligned through their camera centres, as the reference does: ``ref ≈ s R est + t``
where ``ref``/``est`` are the centres of the camera-to-world poses. With fewer than three cameras
the centres alone do not fix a rotation, so orientations are used as well (see ``_sim3_from_poses``).
"""

from __future__ import annotations

import numpy as np

from da3core.geometry import affine_inverse, as_homogeneous
from da3core.prediction import Prediction

RANSAC_MIN_VIEWS = 10


class AlignmentError(ValueError):
    """Poses that cannot be aligned (e.g. all camera centres coincide)."""


def umeyama_sim3(src: np.ndarray, dst: np.ndarray, with_scale: bool = True) -> tuple[float, np.ndarray, np.ndarray]:
    """(s, R, t) minimising ||dst - (s R src + t)||² over point sets (N, 3); reflection-safe."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    var_s = (xs**2).sum() / len(src)
    cov = xd.T @ xs / len(src)
    u, d, vt = np.linalg.svd(cov)
    sign = np.eye(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[2, 2] = -1
    rot = u @ sign @ vt
    if with_scale:
        if var_s < 1e-18:
            raise AlignmentError("cannot estimate a scale: all source camera centres coincide")
        s = float(np.trace(np.diag(d) @ sign) / var_s)
    else:
        s = 1.0
    return s, rot, mu_d - s * rot @ mu_s


def _sim3_from_poses(c2w_ref: np.ndarray, c2w_est: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Sim(3) mapping est poses onto ref poses; uses orientations when N < 3 (centres alone are degenerate)."""
    n = len(c2w_ref)
    if n >= 3:
        return umeyama_sim3(c2w_est[:, :3, 3], c2w_ref[:, :3, 3])
    # Rotation: chordal mean of R_ref_i R_est_i^T, projected back onto SO(3).
    u, _, vt = np.linalg.svd(sum(r @ e.T for r, e in zip(c2w_ref[:, :3, :3], c2w_est[:, :3, :3])))
    rot = u @ np.diag([1, 1, np.sign(np.linalg.det(u @ vt))]) @ vt
    if n == 1:
        s = 1.0  # one camera carries no scale information
    else:
        base_est = np.linalg.norm(c2w_est[1, :3, 3] - c2w_est[0, :3, 3])
        if base_est < 1e-12:
            raise AlignmentError("cannot estimate a scale: the two input cameras are at the same position")
        s = float(np.linalg.norm(c2w_ref[1, :3, 3] - c2w_ref[0, :3, 3]) / base_est)
    t = (c2w_ref[:, :3, 3] - s * c2w_est[:, :3, 3] @ rot.T).mean(0)
    return s, rot, t


def _apply(c2w: np.ndarray, s: float, rot: np.ndarray, t: np.ndarray) -> np.ndarray:
    out = c2w.copy()
    out[:, :3, :3] = rot @ c2w[:, :3, :3]
    out[:, :3, 3] = s * c2w[:, :3, 3] @ rot.T + t
    return out


def _ransac(c2w_ref: np.ndarray, c2w_est: np.ndarray, iters: int, rng: np.random.Generator):
    n = len(c2w_ref)
    s0, r0, t0 = _sim3_from_poses(c2w_ref, c2w_est)
    pre = _apply(c2w_est, s0, r0, t0)[:, :3, 3]
    ref = c2w_ref[:, :3, 3]
    # Inlier threshold: median distance from each pre-aligned estimate to its nearest reference centre.
    thresh = float(np.median(np.linalg.norm(pre[:, None] - ref[None], axis=-1).min(1)))
    best, best_score, best_inliers = (s0, r0, t0), (-1, np.inf), None
    for _ in range(iters):
        sample = rng.choice(n, size=max(3, (n + 1) // 2), replace=False)
        try:
            model = _sim3_from_poses(c2w_ref[sample], c2w_est[sample])
        except (AlignmentError, np.linalg.LinAlgError):
            continue
        errs = np.linalg.norm(_apply(c2w_est, *model)[:, :3, 3] - ref, axis=1)
        inliers = errs <= thresh
        k = int(inliers.sum())
        score = (k, float(errs[inliers].mean()) if k else np.inf)
        if score[0] > best_score[0] or (score[0] == best_score[0] and score[1] < best_score[1]):
            best, best_score, best_inliers = model, score, inliers
    if best_inliers is not None and best_inliers.sum() >= 3:
        return _sim3_from_poses(c2w_ref[best_inliers], c2w_est[best_inliers])
    return best


def align_poses_umeyama(
    ext_ref: np.ndarray, ext_est: np.ndarray, ransac: bool = False, random_state: int = 42, ransac_iters: int = 10
) -> tuple[float, np.ndarray, np.ndarray]:
    """(s, R, t) aligning the w2c poses ``ext_est`` onto ``ext_ref`` (both (N, 3|4, 4)): ref ≈ s R est + t."""
    c2w_ref = affine_inverse(as_homogeneous(np.asarray(ext_ref, np.float64)))
    c2w_est = affine_inverse(as_homogeneous(np.asarray(ext_est, np.float64)))
    if ransac:
        return _ransac(c2w_ref, c2w_est, ransac_iters, np.random.default_rng(random_state))
    return _sim3_from_poses(c2w_ref, c2w_est)


def apply_sim3_to_extrinsics(ext: np.ndarray, s: float, rot: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Move w2c poses (N, 3|4, 4) by the similarity (s, R, t); returns (N, 4, 4) w2c."""
    return affine_inverse(_apply(affine_inverse(as_homogeneous(np.asarray(ext, np.float64))), s, rot, t))


def align_prediction_to_input(
    prediction: Prediction,
    input_extrinsics: np.ndarray,
    input_intrinsics: np.ndarray | None,
    align_to_input_ext_scale: bool = True,
) -> Prediction:
    """Bring a prediction into the frame of known input cameras (w2c, processed-pixel intrinsics).

    With ``align_to_input_ext_scale`` the input poses are kept and depth is rescaled into their
    units; otherwise the input poses are mapped into the prediction's frame and depth is unchanged.
    Intrinsics become the input ones when given. RANSAC is used from 10 views on.
    """
    inputs = as_homogeneous(np.asarray(input_extrinsics, np.float64))
    if input_intrinsics is not None:
        prediction.intrinsics = np.asarray(input_intrinsics, np.float32)
    n = len(inputs)
    s, rot, t = align_poses_umeyama(prediction.extrinsics, inputs, ransac=n >= RANSAC_MIN_VIEWS)
    if align_to_input_ext_scale:
        prediction.extrinsics = inputs[:, :3, :].astype(np.float32)
        prediction.depth = (prediction.depth / s).astype(np.float32)
    else:
        prediction.extrinsics = apply_sim3_to_extrinsics(inputs, s, rot, t)[:, :3, :].astype(np.float32)
    return prediction


def pose_scale(ext_ref: np.ndarray, ext_est: np.ndarray) -> float:
    """Scale s of the Sim(3) aligning ``ext_est`` onto ``ext_ref`` (1.0 when it cannot be estimated)."""
    try:
        s = align_poses_umeyama(ext_ref, ext_est)[0]
    except (AlignmentError, np.linalg.LinAlgError):
        return 1.0
    return s if np.isfinite(s) else 1.0
