"""Point-cloud reconstruction metrics of the DA3 benchmark: accuracy, completeness, precision, recall, F-score."""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

RECONSTRUCTION_KEYS = ("acc", "comp", "overall", "precision", "recall", "fscore")


def _points(points: np.ndarray, name: str) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"{name} must be an (M, 3) array of points, got shape {points.shape}")
    return points


def voxel_downsample(points: np.ndarray, voxel_size: float) -> np.ndarray:
    """Open3D's voxel-grid downsampling (the centroid of the points in each occupied voxel)."""
    import open3d as o3d

    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(_points(points, "points")))
    return np.asarray(cloud.voxel_down_sample(voxel_size).points)


def nearest_distances(reference: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Distance from each query point to its nearest reference point (exact).

    A sliding-midpoint tree (``balanced_tree=False``): the default median-split tree takes minutes, not seconds, when
    many queries lie far from the reference, as unseen GT does against a partial reconstruction.
    """
    tree = cKDTree(reference, balanced_tree=False, compact_nodes=False)
    return tree.query(query, workers=-1)[0].reshape(-1)


def reconstruction_metrics(
    pred_points: np.ndarray, gt_points: np.ndarray, threshold: float, voxel_size: float | None = None
) -> dict[str, float]:
    """acc/comp (mean nearest distances pred->GT / GT->pred), overall, and precision/recall/F-score at ``threshold``.

    Both clouds are first voxel-downsampled when ``voxel_size`` is given, as upstream's benchmark does.
    An empty cloud scores acc = comp = overall = inf and precision = recall = fscore = 0.
    """
    pred, gt = _points(pred_points, "pred_points"), _points(gt_points, "gt_points")
    if voxel_size is not None and voxel_size > 0:
        pred, gt = voxel_downsample(pred, voxel_size), voxel_downsample(gt, voxel_size)
    if len(pred) == 0 or len(gt) == 0:
        return {
            "acc": float("inf"),
            "comp": float("inf"),
            "overall": float("inf"),
            "precision": 0.0,
            "recall": 0.0,
            "fscore": 0.0,
        }
    to_gt, to_pred = nearest_distances(gt, pred), nearest_distances(pred, gt)
    acc, comp = float(to_gt.mean()), float(to_pred.mean())
    precision, recall = float((to_gt < threshold).mean()), float((to_pred < threshold).mean())
    fscore = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {
        "acc": acc,
        "comp": comp,
        "overall": (acc + comp) / 2,
        "precision": precision,
        "recall": recall,
        "fscore": fscore,
    }


def crop_to_box(points: np.ndarray, reference: np.ndarray, margin: float) -> np.ndarray:
    """The points inside the axis-aligned bounding box of ``reference`` grown by ``margin`` (ScanNet++'s crop)."""
    points = _points(points, "points")
    lo, hi = reference.min(0) - margin, reference.max(0) + margin
    return points[((points >= lo) & (points <= hi)).all(1)]
