"""Cameras from DA3 ray maps (``use_ray_pose``): weighted RANSAC homography, then QL (spec §3.8).

Each view's ray map pairs canonical image-plane points p = (x - 1, y - 1, 1), with (x, y) the patch
centres of a [0, 2] x [0, 2] image, with predicted world ray directions d. A homography H with d ~ H p
is fitted by weighted RANSAC over 8-point DLTs, factored as H = R L (R orthogonal, L lower triangular,
upstream's QL), and read as camera-to-world rotation R, focal 1 / diag(L) and principal point
L[2, :2] + 1; the camera centre is the confidence-weighted mean ray origin.

As upstream, this is exact when the principal point is at the image centre; an off-centre principal
point yields a biased R and pp (H = R K^-1 has an upper-triangular K^-1, which a QL factor cannot hold).

Randomness: the hypotheses' 100 index draws and the refit's subsample come from ``generator`` (a fresh
CPU generator seeded with DEFAULT_SEED when None), in upstream's order, so seeding a torch.Generator
like upstream's global RNG reproduces its draws exactly. Draws are made on the generator's device and
then moved, so CPU and CUDA runs pick the same points.
"""

from __future__ import annotations

import torch

DEFAULT_SEED = 0
N_HYPOTHESES = 100
SAMPLE_SIZE = 8  # points per DLT hypothesis
CANDIDATE_FRACTION = 0.3  # hypotheses sample from this top fraction of points by confidence
INLIER_THRESHOLD = 0.2  # reprojection error on the z = 1 direction plane
MAX_REFIT_POINTS = 8000
REFIT_KEEP_FRACTION = 0.95  # above MAX_REFIT_POINTS inliers, subsample from the most confident 95 %
MIN_Z = 1e-4  # directions with |z| below this cannot be put on the z = 1 plane: zero weight
EVAL_CHUNK = 1 << 24  # hypotheses x points evaluated at once (bounds memory to a few hundred MB)


def _patch_centres(h: int, w: int, device: torch.device) -> torch.Tensor:
    """(h * w, 2) canonical plane points (x - 1, y - 1), row-major, float32 as upstream's linspace grid."""
    dy, dx = 1 / h, 1 / w
    ys = torch.linspace(-(1 - dy) + 1.0, (1 - dy) + 1.0, h, dtype=torch.float32, device=device)
    xs = torch.linspace(-(1 - dx) + 1.0, (1 - dx) + 1.0, w, dtype=torch.float32, device=device)
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([x - 1, y - 1], dim=-1).reshape(-1, 2)


def _weighted_dlt(src: torch.Tensor, dst: torch.Tensor, weight: torch.Tensor, full_svd: bool = True) -> torch.Tensor:
    """(..., 3, 3) homographies with dst ~ H src from (..., K, 2) points, rows weighted by sqrt(weight), H[2, 2] = 1."""
    sw = weight.sqrt().unsqueeze(-1)
    x, y, u, v = src[..., :1], src[..., 1:], dst[..., :1], dst[..., 1:]
    zero = torch.zeros_like(x)
    rows_u = torch.cat([-x * sw, -y * sw, -sw, zero, zero, zero, x * u * sw, y * u * sw, u * sw], dim=-1)
    rows_v = torch.cat([zero, zero, zero, -x * sw, -y * sw, -sw, x * v * sw, y * v * sw, v * sw], dim=-1)
    vh = torch.linalg.svd(torch.cat([rows_u, rows_v], dim=-2), full_matrices=full_svd).Vh
    H = vh[..., -1, :].unflatten(-1, (3, 3))
    return H / H[..., 2:3, 2:3]


def _best_inliers(
    src: torch.Tensor, dst: torch.Tensor, weight: torch.Tensor, H: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Best of M hypotheses H (V, M, 3, 3) by inlier weight: its index (V,) and inlier mask (V, P).

    Points src (P, 2) map to dst (V, P, 2); inliers have reprojection error < INLIER_THRESHOLD.
    Evaluated a few views at a time to bound memory, as one GEMM instead of upstream's bmm on copies;
    the rounding may differ in the last bit, which could only flip a point lying on the threshold.
    """
    V, M, P = *H.shape[:2], len(src)
    src_h = torch.cat([src, torch.ones_like(src[:, :1])], dim=-1).T  # (3, P)
    best, masks = [], []
    step = max(1, EVAL_CHUNK // (M * P))
    for v0 in range(0, V, step):
        n = len(H[v0 : v0 + step])
        proj = (H[v0 : v0 + step].reshape(n, M * 3, 3) @ src_h).view(n, M, 3, P)
        ex = (proj[:, :, 0] / proj[:, :, 2]).sub_(dst[v0 : v0 + step, None, :, 0])
        ey = (proj[:, :, 1] / proj[:, :, 2]).sub_(dst[v0 : v0 + step, None, :, 1])
        inliers = ex.square_().add_(ey.square_()).sqrt_() < INLIER_THRESHOLD  # (n, M, P)
        scores = (inliers.to(weight.dtype) @ weight[v0 : v0 + step, :, None])[..., 0]
        b = scores.argmax(dim=1)
        best.append(b)
        masks.append(inliers[torch.arange(n, device=b.device), b])
    return torch.cat(best), torch.cat(masks)


def _refit_points(
    inliers: torch.Tensor, weight: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """(V, K) point indices for each view's refit and a (V, K) validity mask (views differ in inlier count).

    All inliers, or above MAX_REFIT_POINTS a random MAX_REFIT_POINTS of the 95 % most confident (upstream;
    ranked per view exactly as upstream does, so ties and random draws pick the same points).
    """
    V, P = inliers.shape
    counts = inliers.sum(1).tolist()  # one host sync; the subsample draws below must follow view order
    K = max(1, min(max(counts), MAX_REFIT_POINTS))
    slot = inliers.cumsum(1) - 1  # each inlier's rank among its view's inliers
    take = inliers & (slot < K)
    rows, cols = take.nonzero(as_tuple=True)
    idx = torch.zeros(V, K, dtype=torch.long, device=inliers.device)
    idx[rows, slot[rows, cols]] = cols
    valid = torch.arange(K, device=idx.device)[None] < torch.tensor(counts, device=idx.device)[:, None]
    for v, n in enumerate(counts):
        if n > MAX_REFIT_POINTS:
            members = inliers[v].nonzero()[:, 0]
            ranked = members[torch.argsort(weight[v, members], descending=True)]
            keep = max(int(n * REFIT_KEEP_FRACTION), MAX_REFIT_POINTS)
            pick = torch.randperm(keep, generator=generator, device=generator.device)[:MAX_REFIT_POINTS]
            idx[v] = ranked[pick.to(idx.device)]
    return idx, valid


def _ql(A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A = Q L for (V, 3, 3) A, Q orthogonal, L lower triangular with a positive diagonal (QR of A P)."""
    P = torch.eye(3, dtype=A.dtype, device=A.device).flip(0)
    q, r = torch.linalg.qr(A @ P)
    Q, L = q @ P, P @ r @ P
    sign = torch.sign(torch.diagonal(L, dim1=-2, dim2=-1))
    return Q * sign[:, None, :], L * sign[:, :, None]


def rays_to_cameras(
    ray: torch.Tensor,
    ray_conf: torch.Tensor,
    image_hw: tuple[int, int],
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cameras from a ray map: ray (B, S, h, w, 6) [direction | origin], conf (B, S, h, w).

    Returns extrinsics (B, S, 3, 4) w2c and intrinsics (B, S, 3, 3) in pixels of the (H, W) processed image.
    """
    if ray.ndim != 5 or ray.shape[-1] != 6:
        raise ValueError(f"ray must be (B, S, h, w, 6), got {tuple(ray.shape)}")
    if ray_conf.shape[-1:] == (1,) and ray_conf.ndim == 5:
        ray_conf = ray_conf[..., 0]
    if ray_conf.shape != ray.shape[:4]:
        raise ValueError(f"ray_conf must be (B, S, h, w) = {tuple(ray.shape[:4])}, got {tuple(ray_conf.shape)}")
    B, S, h, w, _ = ray.shape
    V, P = B * S, h * w
    n_candidates = max(SAMPLE_SIZE, int(P * CANDIDATE_FRACTION))
    if P < SAMPLE_SIZE:
        raise ValueError(f"ray map of {h}x{w} has fewer than {SAMPLE_SIZE} points; a homography needs more")
    if generator is None:
        generator = torch.Generator().manual_seed(DEFAULT_SEED)
    device = ray.device

    dirs, origins = ray[..., :3].reshape(V, P, 3), ray[..., 3:].reshape(V, P, 3)
    src = _patch_centres(h, w, device).to(ray.dtype)
    valid = dirs[..., 2].abs() > MIN_Z
    dst = torch.where(valid[..., None], dirs[..., :2] / dirs[..., 2:3], dirs[..., :2])
    weight = torch.where(valid, ray_conf.reshape(V, P), 0)

    # Hypotheses: the same 100 random 8-subsets of each view's most confident points.
    draws = torch.stack(
        [
            torch.randperm(n_candidates, generator=generator, device=generator.device)[:SAMPLE_SIZE]
            for _ in range(N_HYPOTHESES)
        ]
    ).to(device)
    picked = torch.argsort(weight, dim=1, descending=True)[:, :n_candidates][:, draws]  # (V, 100, 8)
    rows = torch.arange(V, device=device)[:, None, None]
    H = _weighted_dlt(src[picked], dst[rows, picked], weight[rows, picked])  # (V, 100, 3, 3)
    best, best_inliers = _best_inliers(src, dst, weight, H)

    # Refit on the best hypothesis' inliers in float64: a float32 SVD of up to 16000 x 9 rows loses ~1e-5
    # (upstream's own rounding), float64 gives its exact least-squares solution at negligible cost.
    # Zero-weight padding rows leave each view's DLT unchanged. Views with fewer than 4 inliers (upstream
    # raises there) keep their best hypothesis.
    idx, keep = _refit_points(best_inliers, weight, generator)
    rows = torch.arange(V, device=device)[:, None]
    f64 = torch.float64
    refit = _weighted_dlt(src[idx].to(f64), dst[rows, idx].to(f64), (weight[rows, idx] * keep).to(f64), full_svd=False)
    H = torch.where((keep.sum(1) >= 4)[:, None, None], refit, H[torch.arange(V, device=device), best].to(f64))
    H = torch.where((torch.linalg.det(H) < 0)[:, None, None], -H, H)

    R, L = _ql(H)
    L = L / L[:, 2:3, 2:3]
    focal = 1.0 / torch.diagonal(L, dim1=-2, dim2=-1)[:, :2]
    pp = L[:, 2, :2] + 1.0
    centre = (origins * weight[..., None]).sum(1) / weight.sum(-1, keepdim=True)

    R_w2c = R.transpose(-1, -2).to(ray.dtype)
    extrinsics = torch.cat([R_w2c, -R_w2c @ centre[..., None]], dim=-1)
    H_img, W_img = image_hw
    intrinsics = torch.zeros(V, 3, 3, dtype=ray.dtype, device=device)
    intrinsics[:, 0, 0] = focal[:, 0] / 2 * W_img
    intrinsics[:, 1, 1] = focal[:, 1] / 2 * H_img
    intrinsics[:, 0, 2] = pp[:, 0] * W_img * 0.5
    intrinsics[:, 1, 2] = pp[:, 1] * H_img * 0.5
    intrinsics[:, 2, 2] = 1.0
    return extrinsics.reshape(B, S, 3, 4), intrinsics.reshape(B, S, 3, 3)
