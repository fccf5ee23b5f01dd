"""Ray maps to cameras: exact rays from known cameras are turned back into those cameras; seeded RANSAC."""

from __future__ import annotations

import numpy as np
import torch

from da3core.ray_pose import rays_to_cameras
from da3core.synthetic import make_capture

H, W, h, w = 56, 70, 32, 40


def _ray_maps(capture) -> torch.Tensor:
    """DA3 ray maps at h x w: world direction R_c2w K^-1 [u, v, 1] of each cell centre, and the camera centre."""
    maps = []
    v, u = np.meshgrid((np.arange(h) + 0.5) * H / h, (np.arange(w) + 0.5) * W / w, indexing="ij")
    for K, ext in zip(capture.intrinsics, capture.extrinsics):
        rot_c2w, centre = ext[:, :3].T, -ext[:, :3].T @ ext[:, 3]
        dirs = np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(K).T @ rot_c2w.T
        maps.append(np.concatenate([dirs, np.broadcast_to(centre, dirs.shape)], -1))
    return torch.tensor(np.stack(maps)[None], dtype=torch.float32)


def test_exact_rays_give_back_the_cameras():
    capture = make_capture(3, W, H, seed=1)
    ext, K = rays_to_cameras(_ray_maps(capture), torch.ones(1, 3, h, w), (H, W))
    np.testing.assert_allclose(ext[0].numpy(), capture.extrinsics, atol=1e-5)
    np.testing.assert_allclose(K[0].numpy(), capture.intrinsics, rtol=1e-5, atol=1e-3)


def test_outliers_are_rejected_and_results_are_seeded():
    capture = make_capture(2, W, H, seed=2)
    ray = _ray_maps(capture)
    rng = torch.Generator().manual_seed(0)
    bad = torch.rand(1, 2, h, w, generator=rng) < 0.2  # 20% corrupted directions with high confidence
    ray[..., :3][bad] = torch.randn(int(bad.sum()), 3, generator=rng)
    conf = torch.ones(1, 2, h, w)
    ext, K = rays_to_cameras(ray, conf, (H, W))
    # A few corrupted rays land inside the 0.2 inlier band by chance, so the refit is close, not exact.
    np.testing.assert_allclose(ext[0].numpy()[:, :, :3], capture.extrinsics[:, :, :3], atol=2e-3)
    np.testing.assert_allclose(K[0].numpy(), capture.intrinsics, rtol=1e-2, atol=0.5)
    again = rays_to_cameras(ray, conf, (H, W))
    assert torch.equal(again[0], ext) and torch.equal(again[1], K)
