"""Cameras from DA3's ray maps: a weighted RANSAC homography between the canonical camera plane and the
predicted ray directions, split by a QL decomposition into rotation and intrinsics.

Reproducible: every random draw comes from one generator (seed 0 unless one is given), consumed in
the same order as the reference draws from torch's global generator, so seeding both alike gives
identical hypotheses.
"""

from __future__ import annotations

import torch

N_ITER = 100
SAMPLE_RATIO = 0.3
POINTS_PER_HYPOTHESIS = 8
INLIER_THRESHOLD = 0.2
MAX_REFIT_POINTS = 8000
Z_EPS = 1e-4
DEFAULT_SEED = 0


def _camera_plane(h: int, w: int, device: torch.device) -> torch.Tensor:
    """(h*w, 2) patch centres on the z = 1 plane of a camera with image [0, 2]^2 and principal point (1, 1)."""
    dy, dx = 1.0 / h, 1.0 / w
    ys = torch.linspace(-1 + dy + 1, 1 - dy + 1, h, dtype=torch.float32, device=device)
    xs = torch.linspace(-1 + dx + 1, 1 - dx + 1, w, dtype=torch.float32, device=device)
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([x - 1, y - 1], dim=-1).reshape(-1, 2)


def _weighted_dlt(src: torch.Tensor, dst: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Homographies (..., 3, 3) with dst ~ H src from (..., K, 2) point pairs, rows weighted by sqrt(weight)."""
    w = weight.sqrt().unsqueeze(-1)
    x, y, u, v = src[..., 0:1], src[..., 1:2], dst[..., 0:1], dst[..., 1:2]
    zeros = torch.zeros_like(x)
    a1 = torch.cat([-x * w, -y * w, -w, zeros, zeros, zeros, x * u * w, y * u * w, u * w], dim=-1)
    a2 = torch.cat([zeros, zeros, zeros, -x * w, -y * w, -w, x * v * w, y * v * w, v * w], dim=-1)
    vh = torch.linalg.svd(torch.cat([a1, a2], dim=-2))[2]
    H = vh[..., -1, :].reshape(*src.shape[:-2], 3, 3)
    return H / H[..., 2:3, 2:3]


def _ransac_homography(src, dst, weight, hyp_idx, n_candidates, generator) -> torch.Tensor:
    """Best weighted-inlier homography per view: src/dst (V, N, 2), weight (V, N) -> (V, 3, 3)."""
    v, n = weight.shape
    candidates = torch.argsort(weight, dim=1, descending=True)[:, :n_candidates]
    pick = candidates[:, hyp_idx]  # (V, iters, 8)
    rows = torch.arange(v, device=src.device).view(v, 1, 1)
    H = _weighted_dlt(src[rows, pick], dst[rows, pick], weight[rows, pick])  # (V, iters, 3, 3)
    src_h = torch.cat([src, torch.ones_like(src[..., :1])], dim=-1)
    proj = torch.einsum("vnj,vkij->vkni", src_h, H)
    err = (proj[..., :2] / proj[..., 2:3] - dst[:, None]).square().sum(-1).sqrt()
    inliers = err < INLIER_THRESHOLD  # (V, iters, N)
    best = torch.argmax((inliers * weight[:, None]).sum(-1), dim=1)
    out = []
    for i in range(v):
        mask = inliers[i, best[i]]
        s, d, wt = src[i][mask], dst[i][mask], weight[i][mask]
        order = torch.argsort(wt, descending=True)
        if len(order) > MAX_REFIT_POINTS:  # random subset of the most confident 95%
            order = order[: max(int(len(order) * 0.95), MAX_REFIT_POINTS)]
            order = order[torch.randperm(len(order), generator=generator, device=generator.device)[:MAX_REFIT_POINTS]]
        out.append(_weighted_dlt(s[order], d[order], wt[order]))
    H = torch.stack(out)
    return torch.where((torch.linalg.det(H) < 0)[:, None, None], -H, H)


def _ql(A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A = Q L with Q orthogonal and L lower triangular with a positive diagonal (via QR of A P)."""
    P = torch.tensor([[0, 0, 1], [0, 1, 0], [1, 0, 0]], dtype=A.dtype, device=A.device)
    q, r = torch.linalg.qr(A @ P)
    Q, L = q @ P, P @ r @ P
    sign = torch.sign(torch.diagonal(L, dim1=-2, dim2=-1))
    return Q * sign[..., None, :], L * sign[..., :, None]


def rays_to_cameras(
    ray: torch.Tensor, ray_conf: torch.Tensor, image_hw: tuple[int, int], generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ray maps (B, S, h, w, 6) [direction, origin] with confidence (B, S, h, w) -> w2c (B, S, 3, 4), K (B, S, 3, 3)."""
    b, s, h, w, _ = ray.shape
    device = ray.device
    if generator is None:
        generator = torch.Generator(device=device).manual_seed(DEFAULT_SEED)
    rays = ray.reshape(b * s, h * w, 6).float()
    conf = ray_conf.reshape(b * s, h * w).float().clone()
    n = h * w
    n_candidates = max(POINTS_PER_HYPOTHESIS, int(n * SAMPLE_RATIO))
    hyp_idx = torch.stack([
        torch.randperm(n_candidates, generator=generator, device=device)[:POINTS_PER_HYPOTHESIS] for _ in range(N_ITER)
    ])
    plane = _camera_plane(h, w, device)
    target = rays[..., :3]
    valid = target[..., 2].abs() > Z_EPS  # the plane's z is 1, so only the targets can be invalid
    dst = torch.where(valid[..., None], target[..., :2] / target[..., 2:3], target[..., :2])
    conf[~valid] = 0
    # Views are solved two at a time, as the reference does, so refit draws come in the same order.
    H = torch.cat([
        _ransac_homography(plane.expand(len(dst[i:i + 2]), -1, -1), dst[i:i + 2], conf[i:i + 2], hyp_idx,
                           n_candidates, generator)
        for i in range(0, b * s, 2)
    ])
    R, L = _ql(H)
    L = L / L[:, 2:3, 2:3]
    focal = 1.0 / torch.stack([L[:, 0, 0], L[:, 1, 1]], dim=-1)
    pp = torch.stack([L[:, 2, 0], L[:, 2, 1]], dim=-1) + 1.0
    origin = (rays[..., 3:] * conf[..., None]).sum(1) / conf.sum(1, keepdim=True)
    # [R | T] is camera-to-world; invert to world-to-camera.
    ext = torch.cat([R.transpose(1, 2), -R.transpose(1, 2) @ origin[..., None]], dim=-1)
    height, width = image_hw
    K = torch.zeros(b * s, 3, 3, dtype=ext.dtype, device=device)
    K[:, 0, 0], K[:, 1, 1] = focal[:, 0] / 2 * width, focal[:, 1] / 2 * height
    K[:, 0, 2], K[:, 1, 2], K[:, 2, 2] = pp[:, 0] * width * 0.5, pp[:, 1] * height * 0.5, 1.0
    return ext.reshape(b, s, 3, 4), K.reshape(b, s, 3, 3)
