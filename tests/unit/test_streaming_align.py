"""The Sim(3) type, applying it to a prediction, and the robust overlap alignment (exact under gross outliers)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from da3core.geometry import depth_to_world_points
from da3core.pose_align import align_poses_umeyama, umeyama_sim3
from da3core.streaming import Sim3, StreamingInputError, align_chunks, apply_sim3, fit_sim3_irls, plan_chunks
from da3core.synthetic import GaugePredictor

TRUE = Sim3(1.7, Rotation.from_euler("zyx", [50, -20, 35], degrees=True).as_matrix(), np.array([0.4, -2.0, 1.1]))


def _assert_same_sim3(a: Sim3, b: Sim3, atol: float) -> None:
    np.testing.assert_allclose(a.scale, b.scale, rtol=atol)
    np.testing.assert_allclose(a.rotation, b.rotation, atol=atol)
    np.testing.assert_allclose(a.translation, b.translation, atol=atol * max(1.0, np.abs(b.translation).max()))


def test_sim3_algebra_matches_4x4_matrices():
    other = Sim3(0.6, Rotation.from_rotvec([0.1, 0.7, -0.3]).as_matrix(), np.array([1.0, 2.0, 3.0]))
    np.testing.assert_allclose((TRUE @ other).matrix(), TRUE.matrix() @ other.matrix(), atol=1e-12)
    np.testing.assert_allclose(TRUE.inverse().matrix(), np.linalg.inv(TRUE.matrix()), atol=1e-12)
    _assert_same_sim3(Sim3.from_matrix(TRUE.matrix()), TRUE, 1e-12)
    pts = np.random.default_rng(0).normal(size=(5, 3))
    np.testing.assert_allclose(TRUE.apply(pts), (TRUE.matrix() @ np.c_[pts, np.ones(5)].T).T[:, :3], atol=1e-12)
    with pytest.raises(ValueError, match="positive scale"):
        Sim3(-1.0)


def test_apply_sim3_moves_every_back_projected_point_by_the_transform(loop_sequence):
    pred = GaugePredictor(loop_sequence, seed=0)(np.arange(5))
    moved = apply_sim3(pred, TRUE)
    for i in range(len(pred)):
        before = depth_to_world_points(pred.depth[i].astype(np.float64), pred.intrinsics[i], pred.extrinsics[i])
        after = depth_to_world_points(moved.depth[i].astype(np.float64), moved.intrinsics[i], moved.extrinsics[i])
        np.testing.assert_allclose(after, TRUE.apply(before), atol=1e-4 * np.abs(after).max())
    same = apply_sim3(pred, Sim3())
    for name in ("depth", "conf", "extrinsics", "intrinsics"):
        assert np.array_equal(getattr(same, name), getattr(pred, name))


def _outlier_cloud(seed: int, n: int = 2000, outlier_fraction: float = 0.3):
    rng = np.random.default_rng(seed)
    src = rng.uniform(-3, 3, (n, 3)) + [0, 0, 6]
    dst = TRUE.apply(src)
    bad = rng.random(n) < outlier_fraction
    # Gross and coherent, like a wrongly placed surface: half-size, a few metres off, plus scatter.
    dst[bad] = TRUE.apply(0.5 * src[bad] + [3.0, 1.0, 0.0]) + rng.normal(0, 0.5, (bad.sum(), 3))
    return src, dst, bad


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_irls_recovers_the_exact_sim3_with_30_percent_gross_outliers(seed):
    src, dst, bad = _outlier_cloud(seed)
    assert 0.25 < bad.mean() < 0.35
    # Plain least squares is thrown far off by the outliers: the robust loop is doing real work.
    s_ls, r_ls, _ = umeyama_sim3(src, dst)
    assert abs(s_ls / TRUE.scale - 1) > 0.1 or np.abs(r_ls - TRUE.rotation).max() > 0.1
    # A start well away from the truth (20 degrees, 30 % in scale, a metre), as a rough camera guess would be.
    start = Sim3(
        TRUE.scale * 1.3,
        Rotation.from_rotvec([0.0, 0.35, 0.0]).as_matrix() @ TRUE.rotation,
        TRUE.translation + [1.0, -0.5, 0.5],
    )
    _assert_same_sim3(fit_sim3_irls(src, dst, start, depth=src[:, 2]), TRUE, 1e-9)


def _true_relative(pred_a, pred_b):
    """The Sim(3) taking chunk b's gauge into chunk a's, from all their common cameras (independent of the points)."""
    return Sim3(*align_poses_umeyama(pred_a.extrinsics.astype(np.float64), pred_b.extrinsics.astype(np.float64)))


def test_align_chunks_is_exact_on_clean_chunks_and_robust_to_corrupted_depth(loop_sequence):
    predictor = GaugePredictor(loop_sequence, seed=4)
    frames_a, frames_b = np.arange(0, 60), np.arange(30, 90)
    a, b = predictor(frames_a), predictor(frames_b)
    truth = _true_relative(_subset(a, np.arange(30, 60)), _subset(b, np.arange(0, 30)))
    _assert_same_sim3(align_chunks(a, frames_a, b, frames_b), truth, 1e-5)
    # 30 % of the shared pixels of chunk b get depth off by a factor 0.2..5: the fit must not move.
    rng = np.random.default_rng(0)
    corrupted = b.depth.copy()
    bad = rng.random(corrupted[:30].shape) < 0.3
    corrupted[:30][bad] *= np.exp(rng.uniform(np.log(0.2), np.log(5.0), bad.sum())).astype(np.float32)
    _assert_same_sim3(align_chunks(a, frames_a, dataclasses.replace(b, depth=corrupted), frames_b), truth, 1e-5)


def _subset(pred, idx):
    return dataclasses.replace(
        pred,
        depth=pred.depth[idx],
        conf=pred.conf[idx],
        extrinsics=pred.extrinsics[idx],
        intrinsics=pred.intrinsics[idx],
        processed_images=pred.processed_images[idx],
    )


def test_align_chunks_needs_shared_frames_and_cameras(loop_sequence):
    predictor = GaugePredictor(loop_sequence, seed=0)
    a, b = predictor(np.arange(0, 10)), predictor(np.arange(10, 20))
    with pytest.raises(StreamingInputError, match="share no frame"):
        align_chunks(a, np.arange(0, 10), b, np.arange(10, 20))
    with pytest.raises(StreamingInputError, match="no cameras"):
        align_chunks(dataclasses.replace(a, extrinsics=None), np.arange(0, 10), a, np.arange(0, 10))
    assert len(plan_chunks(20, 10, 5)) == 3  # the planner never produces chunks without shared frames
