"""Camera trajectories: every gs_video mode against the reference's cameras, plus their defining properties."""

from __future__ import annotations

import numpy as np
import pytest
from oracle import run_oracle

from da3core.geometry import affine_inverse, as_homogeneous
from da3core.synthetic import make_capture
from da3core.trajectories import TRAJECTORY_MODES, interpolate_poses, make_trajectory, smooth_path

H, W = 48, 64


@pytest.fixture(scope="module")
def cameras():
    capture = make_capture(n_views=7, width=W, height=H, arc_deg=70.0, seed=3)
    return as_homogeneous(capture.extrinsics), capture.intrinsics


def normalised(intrinsics):
    return intrinsics / np.array([W, H, 1.0])[:, None]


@pytest.mark.parity
@pytest.mark.parametrize("n_views", [7, 1])
def test_all_modes_match_the_reference(cameras, n_views):
    w2c, intr = cameras[0][:n_views], cameras[1][:n_views]
    modes = list(TRAJECTORY_MODES) if n_views > 1 else ["wander", "dolly_zoom"]
    ref = run_oracle(
        "export_trajectories.py",
        dict(extrinsics=w2c.astype(np.float32), intrinsics=intr.astype(np.float32)),
        modes=modes,
        height=H,
        width=W,
    )
    for mode in modes:
        c2w, k = make_trajectory(mode, affine_inverse(w2c), normalised(intr), W)
        assert c2w.shape == ref[f"{mode}_w2c"].shape, mode
        np.testing.assert_allclose(affine_inverse(c2w), ref[f"{mode}_w2c"], atol=2e-5, err_msg=mode)
        np.testing.assert_allclose(k, ref[f"{mode}_intr"], atol=1e-6, err_msg=mode)


def test_interpolation_hits_both_endpoints_and_keeps_rotations_orthonormal(cameras):
    c2w = affine_inverse(cameras[0])
    path = interpolate_poses(c2w[0], c2w[1], np.linspace(0, 1, 9))
    np.testing.assert_allclose(path[0], c2w[0], atol=1e-9)
    np.testing.assert_allclose(path[-1], c2w[1], atol=1e-9)
    rot = path[:, :3, :3]
    np.testing.assert_allclose(rot @ rot.transpose(0, 2, 1), np.tile(np.eye(3), (9, 1, 1)), atol=1e-9)


def test_smoothing_removes_jitter_and_keeps_rotations_orthonormal():
    c2w = np.tile(np.eye(4), (31, 1, 1))
    c2w[:, 1, 3] = 0.05 * (-1.0) ** np.arange(31)  # camera shake around a fixed pose
    smooth = smooth_path(c2w)
    assert np.abs(smooth[:, 1, 3]).max() < 0.05 / 5
    np.testing.assert_allclose(smooth[:, :3, :3], c2w[:, :3, :3], atol=1e-12)


def test_unknown_mode_and_too_few_views_are_clear_errors(cameras):
    c2w, intr = affine_inverse(cameras[0]), normalised(cameras[1])
    with pytest.raises(ValueError, match="unknown trajectory 'orbit'; choose one of original, smooth"):
        make_trajectory("orbit", c2w, intr, W)
    with pytest.raises(ValueError, match="needs several views"):
        make_trajectory("smooth", c2w[:1], intr[:1], W)
    with pytest.raises(ValueError, match="wobble_inter' needs more than 3 views"):
        make_trajectory("wobble_inter", c2w[:3], intr[:3], W)
