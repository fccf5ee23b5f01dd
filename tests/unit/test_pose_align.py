"""Sim(3) pose alignment: exact recovery of known similarities, RANSAC against outliers, reference parity."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from da3core.geometry import affine_inverse, as_homogeneous
from da3core.pose_align import AlignmentError, align_poses_umeyama, align_prediction_to_input, apply_sim3_to_extrinsics
from da3core.prediction import Prediction
from da3core.synthetic import make_capture
from oracle import run_oracle


def _random_sim3(rng):
    return float(rng.uniform(0.3, 3.0)), Rotation.random(random_state=rng.integers(1 << 30)).as_matrix(), rng.normal(size=3)


@pytest.mark.parametrize("n", [1, 2, 3, 8])
def test_recovers_known_similarity(n):
    rng = np.random.default_rng(n)
    est = make_capture(max(n, 1), 32, 24, seed=2).extrinsics[:n]
    s, R, t = _random_sim3(rng)
    s = 1.0 if n == 1 else s  # one camera carries no scale information: it is reported as 1
    ref = apply_sim3_to_extrinsics(est, s, R, t)
    s2, R2, t2 = align_poses_umeyama(ref, est)
    np.testing.assert_allclose(R2, R, atol=1e-8)
    np.testing.assert_allclose(t2, t, atol=1e-8)
    assert s2 == pytest.approx(s, rel=1e-8)


def test_ransac_ignores_outliers():
    rng = np.random.default_rng(0)
    est = make_capture(12, 32, 24, seed=4).extrinsics
    s, R, t = _random_sim3(rng)
    ref = apply_sim3_to_extrinsics(est, s, R, t)
    c2w = affine_inverse(ref)
    c2w[[2, 7], :3, 3] += rng.normal(scale=5.0, size=(2, 3))  # two corrupted cameras
    ref = affine_inverse(c2w)
    s_plain = align_poses_umeyama(ref, est)[0]
    s_ransac, R2, _ = align_poses_umeyama(ref, est, ransac=True)
    assert abs(s_ransac - s) < 1e-6 * s < abs(s_plain - s)
    np.testing.assert_allclose(R2, R, atol=1e-6)


def test_degenerate_centres_fail_clearly():
    est = np.tile(np.eye(4)[None], (4, 1, 1))
    with pytest.raises(AlignmentError, match="coincide"):
        align_poses_umeyama(est, est)


def test_align_prediction_modes():
    cap = make_capture(5, 32, 24, seed=5)
    s, R, t = 2.5, Rotation.from_euler("xyz", [10, 20, 30], degrees=True).as_matrix(), np.array([0.3, -1.0, 2.0])
    pred_ext = apply_sim3_to_extrinsics(cap.extrinsics, s, R, t)[:, :3]  # the "prediction" frame
    pred = Prediction(depth=cap.depth * s, extrinsics=pred_ext.astype(np.float32))
    kept = align_prediction_to_input(Prediction(depth=pred.depth.copy(), extrinsics=pred.extrinsics.copy()),
                                     cap.extrinsics, cap.intrinsics)
    np.testing.assert_allclose(kept.extrinsics, cap.extrinsics, atol=1e-6)
    np.testing.assert_allclose(kept.depth, cap.depth, rtol=1e-5)  # back in the input's units
    moved = align_prediction_to_input(pred, cap.extrinsics, None, align_to_input_ext_scale=False)
    np.testing.assert_allclose(moved.extrinsics, pred_ext, atol=1e-5)


@pytest.mark.parity
@pytest.mark.parametrize("ransac", [False, True])
def test_matches_reference(ransac):
    rng = np.random.default_rng(7)
    inputs = {}
    n_cases = 4
    for i in range(n_cases):
        est = as_homogeneous(make_capture(12, 16, 12, seed=10 + i).extrinsics)
        ref = apply_sim3_to_extrinsics(est, *_random_sim3(rng))
        ref_c2w = affine_inverse(ref)
        ref_c2w[:, :3, 3] += rng.normal(scale=0.05, size=(12, 3))  # noise so the fit is not exact
        inputs[f"ref_{i}"], inputs[f"est_{i}"] = affine_inverse(ref_c2w), est
    out = run_oracle("pose_align.py", inputs, n=n_cases, ransac=ransac)
    for i in range(n_cases):
        s, R, t = align_poses_umeyama(inputs[f"ref_{i}"], inputs[f"est_{i}"], ransac=ransac)
        assert s == pytest.approx(float(out[f"s_{i}"]), rel=1e-6)
        np.testing.assert_allclose(R, out[f"R_{i}"], atol=1e-6)
        np.testing.assert_allclose(t, out[f"t_{i}"], atol=1e-6)
