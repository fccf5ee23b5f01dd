"""Relative pose accuracy over all view pairs: the AUC@3/5/15/30 of the DA3 benchmark (upstream ``compute_pose``)."""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from da3core.geometry import affine_inverse, as_homogeneous

AUC_THRESHOLDS_DEG = (3, 5, 15, 30)


def _w2c44(extrinsics: np.ndarray, name: str) -> np.ndarray:
    ext = np.asarray(extrinsics, dtype=np.float64)
    if ext.ndim != 3 or ext.shape[-2:] not in ((3, 4), (4, 4)):
        raise ValueError(f"{name} must be (N, 3, 4) or (N, 4, 4) world-to-camera matrices, got shape {ext.shape}")
    return as_homogeneous(ext)


def relative_pose_errors(pred_extrinsics: np.ndarray, gt_extrinsics: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotation and translation-direction errors in degrees for every view pair (i < j), as upstream measures them."""
    pred, gt = _w2c44(pred_extrinsics, "pred_extrinsics"), _w2c44(gt_extrinsics, "gt_extrinsics")
    if pred.shape != gt.shape or len(pred) < 2:
        raise ValueError(
            f"pose_auc needs the same number (>= 2) of predicted and GT views, got {len(pred)} and {len(gt)}"
        )
    first, second = np.triu_indices(len(pred), k=1)  # torch.combinations order
    rel = []
    for poses in (pred, gt):
        # Upstream expresses both trajectories relative to their first camera, then pairs inv(P_i) @ P_j.
        aligned = poses @ affine_inverse(poses[0])
        rel.append(affine_inverse(aligned[first]) @ aligned[second])
    rel_pred, rel_gt = rel
    rot_err = np.degrees(
        (Rotation.from_matrix(rel_gt[:, :3, :3]).inv() * Rotation.from_matrix(rel_pred[:, :3, :3])).magnitude()
    )
    t_pred, t_gt = rel_pred[:, :3, 3], rel_gt[:, :3, 3]
    eps = 1e-15
    cos = (
        (t_pred / (np.linalg.norm(t_pred, axis=1, keepdims=True) + eps))
        * (t_gt / (np.linalg.norm(t_gt, axis=1, keepdims=True) + eps))
    ).sum(1)
    # The direction's sign is ambiguous: the error is the angle to the nearer of +t and -t (at most 90 degrees).
    trans_err = np.degrees(np.arccos(np.sqrt(1.0 - np.clip(1.0 - cos**2, eps, None))))
    trans_err[~np.isfinite(trans_err)] = 1e6
    return rot_err, trans_err


def auc_from_errors(rot_err: np.ndarray, trans_err: np.ndarray, max_threshold_deg: int) -> float:
    """Mean over 1-degree bins up to ``max_threshold_deg`` of the fraction of pairs with max(rot, trans) error below."""
    worst = np.maximum(rot_err, trans_err)
    hist, _ = np.histogram(worst, bins=np.arange(max_threshold_deg + 1))
    return float(np.mean(np.cumsum(hist / float(len(worst)))))


def pose_auc(pred_extrinsics: np.ndarray, gt_extrinsics: np.ndarray) -> dict[str, float]:
    """AUC of relative pose error at 3, 5, 15 and 30 degrees over all view pairs (world-to-camera N×3×4 or N×4×4)."""
    rot_err, trans_err = relative_pose_errors(pred_extrinsics, gt_extrinsics)
    return {f"auc{t:02d}": auc_from_errors(rot_err, trans_err, t) for t in AUC_THRESHOLDS_DEG}
