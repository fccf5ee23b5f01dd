"""Benchmark metrics against values derived by hand: perfect predictions, known rotation, offset and scale errors."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from da3core.evaluation import (
    metric_depth_metrics,
    pose_auc,
    reconstruction_metrics,
    relative_depth_metrics,
    sample_surface,
    tsdf_fuse,
)
from da3core.geometry import affine_inverse, as_homogeneous
from da3core.synthetic import make_capture, make_scene, surface_points

WORLD = as_homogeneous(
    np.concatenate(
        [Rotation.from_euler("xyz", [20, -35, 50], degrees=True).as_matrix(), [[0.4], [-1.1], [2.3]]], axis=1
    )
)


def _cameras_on_optical_axis(n: int) -> np.ndarray:
    """(n, 4, 4) w2c: identity orientation, centres at z = 0, 0.5, 1, ... (all translations along the optical axis)."""
    ext = np.tile(np.eye(4), (n, 1, 1))
    ext[:, 2, 3] = -0.5 * np.arange(n)
    return ext


def _spin_last(ext: np.ndarray, degrees: float) -> np.ndarray:
    """Rotate the last camera about its own optical axis (its centre stays put)."""
    out = ext.copy()
    out[-1, :3] = Rotation.from_euler("z", degrees, degrees=True).as_matrix() @ out[-1, :3]
    return out


def test_pose_auc_is_one_for_the_ground_truth_in_any_frame_and_scale():
    gt = make_capture(n_views=6, width=8, height=6).extrinsics
    assert pose_auc(gt, gt) == {"auc03": 1.0, "auc05": 1.0, "auc15": 1.0, "auc30": 1.0}
    moved = as_homogeneous(gt) @ affine_inverse(WORLD)  # the same cameras in another world frame
    moved[:, :3, 3] *= 3.0  # and another scale
    assert pose_auc(moved[:, :3], gt) == {"auc03": 1.0, "auc05": 1.0, "auc15": 1.0, "auc30": 1.0}


@pytest.mark.parametrize("n_views", [2, 5])
def test_pose_auc_of_one_camera_spun_by_2_5_degrees(n_views):
    # Spinning the last camera about its optical axis, along which every camera centre lies, changes the relative
    # rotation of its n-1 pairs by exactly 2.5 degrees and no translation direction: of M = n(n-1)/2 pairs, M - m
    # land in bin [0, 1) and m = n - 1 in bin [2, 3), so AUC@T = (2 (M - m) / M + (T - 2)) / T.
    gt = _cameras_on_optical_axis(n_views) @ affine_inverse(WORLD)
    pred = _spin_last(_cameras_on_optical_axis(n_views), 2.5) @ affine_inverse(WORLD)
    pairs, moved = n_views * (n_views - 1) / 2, n_views - 1
    expected = {f"auc{t:02d}": (2 * (pairs - moved) / pairs + t - 2) / t for t in (3, 5, 15, 30)}
    assert pose_auc(pred, gt) == pytest.approx(expected, abs=1e-12)


def test_pose_auc_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="same number"):
        pose_auc(np.tile(np.eye(4), (3, 1, 1)), np.tile(np.eye(4), (4, 1, 1)))
    with pytest.raises(ValueError, match="N, 3, 4"):
        pose_auc(np.eye(4), np.eye(4))


def _grid(n: int = 40, spacing: float = 0.01) -> np.ndarray:
    u, v = np.meshgrid(np.arange(n) * spacing, np.arange(n) * spacing, indexing="ij")
    return np.stack([u.ravel(), v.ravel(), np.zeros(n * n)], axis=1)


def test_reconstruction_metrics_of_the_ground_truth_and_a_known_offset():
    gt = _grid()
    assert reconstruction_metrics(gt, gt, threshold=0.005) == {
        "acc": 0.0,
        "comp": 0.0,
        "overall": 0.0,
        "precision": 1.0,
        "recall": 1.0,
        "fscore": 1.0,
    }
    # Lifting every point 4 mm off the plane: each point's nearest neighbour is its own original (grid step 10 mm).
    lifted = gt + [0, 0, 0.004]
    near = reconstruction_metrics(lifted, gt, threshold=0.005)
    assert near == pytest.approx(
        {"acc": 0.004, "comp": 0.004, "overall": 0.004, "precision": 1, "recall": 1, "fscore": 1}
    )
    far = reconstruction_metrics(lifted, gt, threshold=0.003)
    assert far["precision"] == far["recall"] == far["fscore"] == 0.0


def test_reconstruction_metrics_with_outliers():
    gt = _grid()
    outliers = gt[:400] + [0, 0, 0.5]  # 400 points 0.5 m above the first 400 GT points
    got = reconstruction_metrics(np.concatenate([gt, outliers]), gt, threshold=0.05)
    precision = len(gt) / (len(gt) + 400)
    assert got == pytest.approx(
        {
            "acc": 400 * 0.5 / (len(gt) + 400),
            "comp": 0.0,
            "overall": 200 * 0.5 / (len(gt) + 400),
            "precision": precision,
            "recall": 1.0,
            "fscore": 2 * precision / (precision + 1),
        }
    )


def test_reconstruction_metrics_of_an_empty_cloud():
    got = reconstruction_metrics(np.zeros((0, 3)), _grid(), threshold=0.05)
    assert got["acc"] == np.inf and got["fscore"] == 0.0


def test_depth_metrics_of_the_ground_truth_and_a_5_percent_scale_error():
    gt = np.random.default_rng(0).uniform(0.5, 8.0, (24, 32))
    assert metric_depth_metrics(gt, gt) == {"abs_rel": 0.0, "delta_1_03": 1.0, "delta_1_25": 1.0}
    # 5% too far everywhere: AbsRel 0.05; every ratio 1.05 fails δ<1.03 and passes δ<1.25.
    assert metric_depth_metrics(1.05 * gt, gt) == pytest.approx({"abs_rel": 0.05, "delta_1_03": 0.0, "delta_1_25": 1.0})
    # Relative depth is aligned by one least-squares scale first: the error vanishes and the scale is 1/1.05.
    rel = relative_depth_metrics(1.05 * gt, gt)
    assert rel == pytest.approx({"abs_rel": 0.0, "delta_1_03": 1.0, "delta_1_25": 1.0, "scale": 1 / 1.05}, abs=1e-12)


def test_depth_metrics_mixed_errors_and_masks():
    gt = np.random.default_rng(1).uniform(0.5, 8.0, (10, 10))
    pred = gt * np.where(np.arange(100).reshape(10, 10) % 2 == 0, 1.02, 1.3)  # half 2% off, half 30% off
    assert metric_depth_metrics(pred, gt) == pytest.approx({"abs_rel": 0.16, "delta_1_03": 0.5, "delta_1_25": 0.5})
    pred[0, 0], gt[0, 1] = np.nan, 0.0  # pixels without a valid prediction or GT are left out
    mask = np.ones_like(gt, dtype=bool)
    mask[1] = False  # as are masked ones: 100 - 2 - 10 = 88 pixels remain, 44 at each error
    assert metric_depth_metrics(pred, gt, mask) == pytest.approx(
        {"abs_rel": 0.16, "delta_1_03": 0.5, "delta_1_25": 0.5}
    )
    with pytest.raises(ValueError, match="no pixel"):
        metric_depth_metrics(pred, np.zeros_like(gt))


def test_tsdf_fusion_of_exact_depth_lies_on_the_scene_surface():
    capture = make_capture(n_views=4, width=48, height=36, seed=3)
    voxel = 0.05
    mesh = tsdf_fuse(capture.depth, capture.intrinsics, capture.extrinsics, voxel, 3 * voxel, 100.0, capture.images)
    points = sample_surface(mesh, 20000, seed=0)
    surface = surface_points(make_scene(3), 0.01)
    # Fused points sit on the true surface: on average within half a voxel, all within the truncation band.
    got = reconstruction_metrics(points, surface, threshold=3 * voxel)
    assert got["acc"] < voxel / 2 and got["precision"] == 1.0
    assert np.array_equal(points, sample_surface(mesh, 20000, seed=0))  # seeded: repeatable


def test_tsdf_fusion_without_valid_depth_has_no_surface():
    mesh = tsdf_fuse(
        np.zeros((2, 8, 8)), np.tile(np.eye(3), (2, 1, 1)), np.tile(np.eye(4), (2, 1, 1)), 0.05, 0.15, 10.0
    )
    assert len(mesh.triangles) == 0
    with pytest.raises(ValueError, match="without triangles"):
        sample_surface(mesh, 100)
