"""A pure-torch 3D Gaussian rasterizer with ``gsplat.rasterization``'s interface and compositing rules.

It follows gsplat 1.5.3's CUDA path (EWA projection, ``packed=False``, ``rasterize_mode="classic"``):
- projection: Jacobian with the view-frustum clamp at 1.3 x the half field of view, ``eps2d`` added to the
  2-D covariance, culling at ``near_plane``/``far_plane``, non-positive determinant and off-screen boxes;
- per-axis radii ``ceil(extend * sqrt(cov_ii))`` with the opacity-aware ``extend = min(3.33, sqrt(2 ln(255 o)))``,
  Gaussians below opacity 1/255 dropped;
- compositing front to back by camera z, pixel centres at ``(col + 0.5, row + 0.5)``,
  ``alpha = min(0.999, o exp(-sigma))``, skip ``sigma < 0`` or ``alpha < 1/255``, stop (exclusive) once the
  transmittance would fall to ``<= 1e-4``; the background is added with weight ``T``.
gsplat bins Gaussians into 16-pixel tiles; here they are binned per pixel (see :func:`composite`), which
evaluates far fewer (Gaussian, pixel) pairs and gives the same images. Everything is vectorised.
"""

from __future__ import annotations

from typing import Any

import torch

from da3core.render.sh import eval_sh

ALPHA_MIN = 1.0 / 255.0
T_MIN = 1e-4


def quat_scale_to_covar(quats: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """(G, 3, 3) covariances ``R S S R^T`` from quaternions (G, 4) wxyz (normalised here) and scales (G, 3)."""
    w, x, y, z = torch.nn.functional.normalize(quats, dim=-1).unbind(-1)
    rot = torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], dim=-1).reshape(-1, 3, 3)
    m = rot * scales[:, None, :]
    return m @ m.transpose(1, 2)


def project(
    means: torch.Tensor, covars: torch.Tensor, opacities: torch.Tensor, viewmat: torch.Tensor, K: torch.Tensor,
    width: int, height: int, eps2d: float = 0.3, near_plane: float = 0.01, far_plane: float = 1e10,
) -> dict[str, torch.Tensor]:
    """Project (G,) Gaussians into one pinhole camera (viewmat (4, 4) w2c, K (3, 3)).

    Returns means2d (G, 2), conics (G, 3) = (a, b, c) of the inverse 2-D covariance, depths (G,) camera z,
    radii (G, 2) int32 (0 for culled Gaussians).
    """
    rot, trans = viewmat[:3, :3], viewmat[:3, 3]
    mc = means @ rot.T + trans
    cov_c = rot @ covars @ rot.T
    tx, ty, tz = mc.unbind(-1)
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    tan_x, tan_y = 0.5 * width / fx, 0.5 * height / fy
    # Clamp the Jacobian's evaluation point to 1.3x the frustum, as gsplat does, so Gaussians far off-screen
    # do not get huge 2-D footprints.
    tz_safe = torch.where(tz.abs() > 1e-12, tz, torch.full_like(tz, 1e-12))
    jx = tz * torch.clamp(tx / tz_safe, min=-(cx / fx + 0.3 * tan_x), max=(width - cx) / fx + 0.3 * tan_x)
    jy = tz * torch.clamp(ty / tz_safe, min=-(cy / fy + 0.3 * tan_y), max=(height - cy) / fy + 0.3 * tan_y)
    zero = torch.zeros_like(tz)
    jac = torch.stack([fx / tz_safe, zero, -fx * jx / tz_safe**2, zero, fy / tz_safe, -fy * jy / tz_safe**2],
                      dim=-1).reshape(-1, 2, 3)
    cov2d = jac @ cov_c @ jac.transpose(1, 2)
    cov2d = cov2d + eps2d * torch.eye(2, dtype=cov2d.dtype, device=cov2d.device)
    a, b, c = cov2d[:, 0, 0], cov2d[:, 0, 1], cov2d[:, 1, 1]
    det = a * c - b * b
    det_safe = torch.where(det > 0, det, torch.ones_like(det))
    conics = torch.stack([c / det_safe, -b / det_safe, a / det_safe], dim=-1)
    means2d = torch.stack([fx * tx / tz_safe + cx, fy * ty / tz_safe + cy], dim=-1)

    extend = torch.sqrt(2.0 * torch.log(opacities.clamp(min=ALPHA_MIN) / ALPHA_MIN)).clamp(max=3.33)
    radii = torch.ceil(extend[:, None] * torch.sqrt(torch.stack([a, c], dim=-1).clamp(min=0)))
    valid = (tz >= near_plane) & (tz <= far_plane) & (det > 0) & (opacities >= ALPHA_MIN)
    valid &= (radii > 0).any(dim=-1)
    valid &= (means2d[:, 0] + radii[:, 0] > 0) & (means2d[:, 0] - radii[:, 0] < width)
    valid &= (means2d[:, 1] + radii[:, 1] > 0) & (means2d[:, 1] - radii[:, 1] < height)
    radii = torch.where(valid[:, None], radii, torch.zeros_like(radii)).to(torch.int32)
    return {"means2d": means2d, "conics": conics, "depths": tz, "radii": radii}


def footprint_pairs(
    means2d: torch.Tensor, radii: torch.Tensor, ids: torch.Tensor, width: int, height: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(Gaussian id, pixel index) for every pixel centre inside each Gaussian's radius box, Gaussian-major."""
    m, r = means2d[ids], radii[ids].to(means2d.dtype)
    # Pixel (col, row) has its centre at col + 0.5: the columns in [m - r, m + r] are these.
    lo = torch.ceil(m - r - 0.5).long().clamp(min=0)
    hi = torch.floor(m + r - 0.5).long() + 1
    hi[:, 0].clamp_(max=width)
    hi[:, 1].clamp_(max=height)
    span = (hi - lo).clamp(min=0)
    counts = span[:, 0] * span[:, 1]
    owner = torch.repeat_interleave(torch.arange(len(ids)), counts)
    local = torch.arange(len(owner)) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    span_x = span[owner, 0]
    cols = lo[owner, 0] + local % span_x
    rows = lo[owner, 1] + local // span_x
    return ids[owner], rows * width + cols


def composite(
    proj: dict[str, torch.Tensor], values: torch.Tensor, opacities: torch.Tensor, width: int, height: int,
    max_pairs: int = 1 << 21,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Alpha-composite per-Gaussian ``values`` (G, D) front to back; returns (H, W, D) sums and (H, W) alpha.

    Gaussians go through in global depth order, in chunks of about ``max_pairs`` (Gaussian, pixel) pairs;
    inside a chunk the pairs are grouped by pixel (stable, so still front to back) and each pixel's
    transmittance is an exclusive segmented product, in float64 log space. Saturated pixels are skipped.
    Because the opacity-aware radius bounds ``alpha >= 1/255`` exactly, binning per pixel instead of per
    16-pixel tile changes no result, only the work.
    """
    means2d, conics, radii = proj["means2d"], proj["conics"], proj["radii"]
    visible = torch.nonzero((radii > 0).all(dim=-1)).squeeze(1)
    ids = visible[torch.argsort(proj["depths"][visible], stable=True)]
    n_pix = width * height
    out = values.new_zeros(n_pix, values.shape[1])
    trans = torch.ones(n_pix, dtype=torch.float64)
    done = torch.zeros(n_pix, dtype=torch.bool)
    area = (2 * radii[ids].double() + 1).prod(dim=-1)
    bounds = torch.searchsorted(torch.cumsum(area, 0), torch.arange(max_pairs, float(area.sum()) + max_pairs, max_pairs,
                                                                    dtype=torch.float64))
    start = 0
    for stop in torch.unique(bounds.clamp(max=len(ids))).tolist() + [len(ids)]:
        if stop <= start:
            continue
        gid, pix = footprint_pairs(means2d, radii, ids[start:stop], width, height)
        start = stop
        live = ~done[pix]
        gid, pix = gid[live], pix[live]
        delta = means2d[gid] - torch.stack([pix % width, pix // width], dim=-1).to(means2d.dtype) - 0.5
        a, b, c = conics[gid].unbind(-1)
        sigma = 0.5 * (a * delta[:, 0] ** 2 + c * delta[:, 1] ** 2) + b * delta[:, 0] * delta[:, 1]
        alpha = torch.clamp(opacities[gid] * torch.exp(-sigma), max=0.999)
        hit = (sigma >= 0) & (alpha >= ALPHA_MIN)
        order = torch.argsort(pix[hit], stable=True)
        gid, pix, alpha = gid[hit][order], pix[hit][order], alpha[hit][order].double()
        if len(pix) == 0:
            continue
        log_keep = torch.log1p(-alpha)
        running = torch.cumsum(log_keep, 0) - log_keep  # exclusive prefix sum over the whole chunk
        first = torch.ones_like(pix, dtype=torch.bool)
        first[1:] = pix[1:] != pix[:-1]
        seg_start = torch.cummax(torch.where(first, torch.arange(len(pix)), 0), 0).values
        t_before = trans[pix] * torch.exp(running - running[seg_start])
        t_after = t_before * (1 - alpha)
        keep = t_after > T_MIN
        weight = torch.where(keep, alpha * t_before, 0.0)
        out.index_add_(0, pix, weight.to(values.dtype)[:, None] * values[gid])
        trans.index_add_(0, pix, -weight)
        done[pix[~keep]] = True
    return out.reshape(height, width, -1), (1.0 - trans).to(values.dtype).reshape(height, width)


@torch.no_grad()
def rasterization(
    means: torch.Tensor, quats: torch.Tensor, scales: torch.Tensor, opacities: torch.Tensor, colors: torch.Tensor,
    viewmats: torch.Tensor, Ks: torch.Tensor, width: int, height: int, near_plane: float = 0.01,
    far_plane: float = 1e10, eps2d: float = 0.3, sh_degree: int | None = None, packed: bool = False,
    tile_size: int = 16, backgrounds: torch.Tensor | None = None, render_mode: str = "RGB",
    **unsupported: Any,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """CPU stand-in for ``gsplat.rasterization`` (same arguments and outputs, single scene, no gradients).

    means (G, 3), quats (G, 4) wxyz, scales (G, 3), opacities (G,), colors (G, D) or SH (G, K, 3) with
    ``sh_degree``, viewmats (C, 4, 4) w2c, Ks (C, 3, 3). Returns render_colors (C, H, W, D[+1]),
    render_alphas (C, H, W, 1) and a meta dict (radii, means2d, depths, conics per camera).
    """
    del tile_size  # accepted for gsplat compatibility; binning is per pixel
    if unsupported:
        raise TypeError(f"the CPU rasterizer does not support {sorted(unsupported)}")
    if render_mode not in ("RGB", "D", "ED", "RGB+D", "RGB+ED"):
        raise ValueError(f"unknown render_mode {render_mode!r}")
    covars = quat_scale_to_covar(quats, scales)
    campos = torch.linalg.inv(viewmats)[:, :3, 3]
    images, alphas, meta = [], [], {"radii": [], "means2d": [], "depths": [], "conics": []}
    for cam in range(len(viewmats)):
        proj = project(means, covars, opacities, viewmats[cam], Ks[cam], width, height, eps2d, near_plane, far_plane)
        rgb = colors
        if sh_degree is not None:
            rgb = torch.clamp_min(eval_sh(sh_degree, means - campos[cam], colors) + 0.5, 0.0)
        depth = proj["depths"][:, None]
        values = {"RGB": rgb, "D": depth, "ED": depth}.get(render_mode)
        values = torch.cat([rgb, depth], dim=-1) if values is None else values
        image, alpha = composite(proj, values, opacities, width, height)
        if backgrounds is not None and render_mode not in ("D", "ED"):  # depth channels get no background
            bg = backgrounds[cam]
            bg = torch.cat([bg, bg.new_zeros(1)]) if render_mode != "RGB" else bg
            image = image + (1.0 - alpha[..., None]) * bg
        if render_mode in ("ED", "RGB+ED"):
            image = torch.cat([image[..., :-1], image[..., -1:] / alpha[..., None].clamp(min=1e-10)], dim=-1)
        images.append(image)
        alphas.append(alpha[..., None])
        for key in meta:
            meta[key].append(proj[key])
    return torch.stack(images), torch.stack(alphas), {k: torch.stack(v) for k, v in meta.items()}
