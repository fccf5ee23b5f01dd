"""Per-pixel depth metrics: AbsRel and the δ < 1.03 / δ < 1.25 inlier ratios, metric or after scale alignment."""

from __future__ import annotations

import numpy as np

DELTA_THRESHOLDS = (1.03, 1.25)


def valid_depth_mask(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Pixels with finite, positive GT and prediction (and inside ``mask`` when given)."""
    valid = np.isfinite(gt) & (gt > 0) & np.isfinite(pred) & (pred > 0)
    return valid if mask is None else valid & np.asarray(mask, dtype=bool)


def _checked(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    pred, gt = np.asarray(pred, dtype=np.float64), np.asarray(gt, dtype=np.float64)
    if pred.shape != gt.shape or (mask is not None and np.shape(mask) != gt.shape):
        shapes = f"{pred.shape}, {gt.shape}" + ("" if mask is None else f", {np.shape(mask)}")
        raise ValueError(f"prediction, GT depth (and mask) must have the same shape, got {shapes}")
    valid = valid_depth_mask(pred, gt, mask)
    if not valid.any():
        raise ValueError("no pixel has a positive, finite GT and predicted depth; nothing to evaluate")
    return pred[valid], gt[valid]


def least_squares_scale(pred: np.ndarray, gt: np.ndarray) -> float:
    """The scale s minimising ||gt - s * pred||² (upstream's ``least_squares_scale_scalar``)."""
    pred, gt = np.asarray(pred, dtype=np.float64).ravel(), np.asarray(gt, dtype=np.float64).ravel()
    return float(gt @ pred / max(float(pred @ pred), 1e-12))


def metric_depth_metrics(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None) -> dict[str, float]:
    """AbsRel = mean |pred - gt| / gt and δ<t = fraction with max(pred/gt, gt/pred) < t, over the valid pixels."""
    pred, gt = _checked(pred, gt, mask)
    ratio = np.maximum(pred / gt, gt / pred)
    out = {"abs_rel": float(np.mean(np.abs(pred - gt) / gt))}
    out.update({f"delta_{t:.2f}".replace(".", "_"): float(np.mean(ratio < t)) for t in DELTA_THRESHOLDS})
    return out


def relative_depth_metrics(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None) -> dict[str, float]:
    """:func:`metric_depth_metrics` after one least-squares scale fits ``pred`` to ``gt``; adds ``scale``."""
    pred_valid, gt_valid = _checked(pred, gt, mask)
    scale = least_squares_scale(pred_valid, gt_valid)
    out = metric_depth_metrics(pred_valid * scale, gt_valid)
    out["scale"] = scale
    return out
