"""A pure-torch 3D Gaussian rasterizer with ``gsplat.rasterization``'s interface and compositing rules.

It follows gsplat 1.5.3's CUDA path (EWA projection, ``packed=False``, ``rasterize_mode="classic"``):
- projection: Jacobian with the view-frustum clamp at 1.3 x the half field of view, ``eps2d`` added to the
  2-D covariance, culling at ``near_plane``/``far_plane``, non-positive determinant and off-screen boxes;
- per-axis radii ``ceil(extend * sqrt(cov_ii))`` with the opacity-aware ``extend = min(3.33, sqrt(2 ln(255 o)))``,
  Gaussians below opacity 1/255 dropped;
- compositing front to back by camera z, pixel centres at ``(col + 0.5, row + 0.5)``,
  ``alpha = min(0.999, o exp(-sigma))``, skip ``sigma < 0`` or ``alpha < 1/255``, stop (exclusive) once the
  transmittance would fall to ``<= 1e-4``; the background is added with weight ``T``.
Like gsplat, Gaussians are binned into square tiles (8 or 16 pixels) and each tile composites its depth-sorted
list; here a round evaluates the next few Gaussians of many tiles at once as dense tensors (see
:func:`composite`), Gaussians whose box only covers finished pixels are culled between depth chunks, and no
Python loop runs over Gaussians or pixels. Tile size, batching and culling change the work, not the images.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import torch
from torch.nn.functional import threshold_

from da3core.render.sh import eval_sh

ALPHA_MIN = 1.0 / 255.0
T_MIN = 1e-4
# threshold(x, bound, v) keeps x > bound: these bounds make that x >= 1/255 (float32) and x >= 0.
ALPHA_BOUND = float(torch.nextafter(torch.tensor(ALPHA_MIN, dtype=torch.float32), torch.tensor(0.0)))
NEG_ZERO_BOUND = float(torch.nextafter(torch.tensor(0.0), torch.tensor(-1.0)))


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
    # R C R^T for every Gaussian as one (G, 9) x (9, 9) product: row-major vec(R C R^T) = (R kron R) vec(C).
    cov_c = (covars.reshape(-1, 9) @ torch.kron(rot, rot).T).reshape(-1, 3, 3)
    tx, ty, tz = mc.unbind(-1)
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    tan_x, tan_y = 0.5 * width / fx, 0.5 * height / fy
    # Clamp the Jacobian's evaluation point to 1.3x the frustum, as gsplat does, so Gaussians far off-screen
    # do not get huge 2-D footprints.
    tz_safe = torch.where(tz.abs() > 1e-12, tz, torch.full_like(tz, 1e-12))
    jx = tz * torch.clamp(tx / tz_safe, min=-(cx / fx + 0.3 * tan_x), max=(width - cx) / fx + 0.3 * tan_x)
    jy = tz * torch.clamp(ty / tz_safe, min=-(cy / fy + 0.3 * tan_y), max=(height - cy) / fy + 0.3 * tan_y)
    # J C J^T with J = [[j00, 0, j02], [0, j11, j12]], written out (batched 2x3 matmuls are slow on CPU).
    j00, j02, j11, j12 = fx / tz_safe, -fx * jx / tz_safe**2, fy / tz_safe, -fy * jy / tz_safe**2
    c00, c01, c02, c11, c12, c22 = (cov_c[:, i, j] for i, j in ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)))
    a = j00 * j00 * c00 + 2 * j00 * j02 * c02 + j02 * j02 * c22 + eps2d
    b = j00 * j11 * c01 + j00 * j12 * c02 + j02 * j11 * c12 + j02 * j12 * c22
    c = j11 * j11 * c11 + 2 * j11 * j12 * c12 + j12 * j12 * c22 + eps2d
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


def pixel_boxes(means2d: torch.Tensor, radii: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """(G, 2, 2) first and last (col, row) whose pixel centre lies in each radius box, clipped to the image."""
    r = radii.to(means2d.dtype)
    # Pixel (col, row) has its centre at col + 0.5: the columns in [m - r, m + r] are lo..hi.
    lo = torch.ceil(means2d - r - 0.5).long().clamp(min=0)
    hi = torch.minimum(torch.floor(means2d + r - 0.5).long(), torch.tensor([width - 1, height - 1]))
    return torch.stack([lo, hi], dim=1)


def tile_pairs(
    boxes: torch.Tensor, tile: int, tiles_x: int, tile_live: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(Gaussian index, offsets (T + 1,)): the (tile, Gaussian) pairs of live tiles grouped by row-major tile.

    ``boxes`` (G, 2, 2) are in front-to-back order and the sort is stable, so each tile's list stays that way.
    """
    t_lo = torch.div(boxes[:, 0], tile, rounding_mode="floor")
    span = (torch.div(boxes[:, 1], tile, rounding_mode="floor") + 1 - t_lo).clamp(min=0)
    counts = span[:, 0] * span[:, 1]
    owner = torch.repeat_interleave(torch.arange(len(boxes)), counts)
    local = torch.arange(len(owner)) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    span_x = span[owner, 0]
    tile_ids = (t_lo[owner, 1] + local // span_x) * tiles_x + t_lo[owner, 0] + local % span_x
    live = tile_live[tile_ids]
    owner, tile_ids = owner[live], tile_ids[live]
    order = torch.argsort(tile_ids, stable=True)
    offsets = torch.zeros(len(tile_live) + 1, dtype=torch.long)
    offsets[1:] = torch.cumsum(torch.bincount(tile_ids, minlength=len(tile_live)), 0)
    return owner[order], offsets


def any_live(live: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """(G,) bool: whether each pixel box (G, 2, 2) holds a pixel of the (H, W) bool mask (summed-area table)."""
    sat = torch.nn.functional.pad(live.int().cumsum(0).cumsum(1), (1, 0, 1, 0))
    (x0, y0), (x1, y1) = boxes[:, 0].T, boxes[:, 1].T + 1
    return (sat[y1, x1] - sat[y0, x1] - sat[y1, x0] + sat[y0, x0]) > 0


def composite_tiles(
    packed: torch.Tensor, owner: torch.Tensor, offsets: torch.Tensor, origin: torch.Tensor, live_t: torch.Tensor,
    out: torch.Tensor, batch: int, group_size: int,
) -> None:
    """Composite each tile's Gaussians (rows of ``packed``, listed by ``owner``/``offsets``) into ``out``/``live_t``.

    Tiles go in groups; each round takes the next ``batch`` Gaussians of every unfinished tile of the group and
    evaluates them densely on the tile's pixels as (tiles, batch, rows, cols) tensors; the transmittance is a
    float32 running product, as in gsplat. ``live_t`` (T, tile, tile) is the transmittance of pixels still
    compositing, 0 once they stopped.
    """
    tile = live_t.shape[-1]
    start, stop = offsets[:-1].clone(), offsets[1:]
    counts = stop - start
    # Tiles go in groups of similar list length, small enough for the round's tensors to stay in cache.
    todo = torch.argsort(counts, descending=True)[:int((counts > 0).sum())]
    per_group = max(group_size // (batch * tile * tile), 1)
    for first in range(0, len(todo), per_group):
        composite_group(packed, owner, start, stop, todo[first:first + per_group], origin, live_t, out, batch)


def composite_group(
    packed: torch.Tensor, owner: torch.Tensor, start: torch.Tensor, stop: torch.Tensor, active: torch.Tensor,
    origin: torch.Tensor, live_t: torch.Tensor, out: torch.Tensor, batch: int,
) -> None:
    """Rounds of :func:`composite_tiles` for the ``active`` tiles until each finishes."""
    tile = live_t.shape[-1]
    centre = torch.arange(tile, dtype=torch.float32) + 0.5
    steps = torch.arange(batch)
    while len(active):
        idx = start[active, None] + steps
        g = packed[owner[idx.clamp(max=len(owner) - 1)]]
        g[..., 5].masked_fill_(idx >= stop[active, None], 0.0)  # past the list's end: opacity 0, never a hit
        # sigma = 0.5 a dx^2 + 0.5 c dy^2 + b dx dy, built from per-column and per-row terms (separable).
        dx = (g[..., 0] - origin[active, None, 0])[..., None] - centre
        dy = (g[..., 1] - origin[active, None, 1])[..., None] - centre
        sigma = ((0.5 * g[..., 4, None]) * dy * dy)[..., :, None] + ((0.5 * g[..., 2, None]) * dx * dx)[..., None, :]
        sigma.addcmul_((g[..., 3, None] * dy)[..., :, None], dx[..., None, :])
        # Masks as thresholds, which are far cheaper than masked_fill/where on CPU: sigma < 0 becomes +inf
        # (alpha 0), then alpha < 1/255 becomes 0.
        threshold_(sigma, NEG_ZERO_BOUND, math.inf)
        alpha = torch.sub(torch.log(g[..., 5])[..., None, None], sigma).exp_().clamp_(max=0.999).flatten(2)
        threshold_(alpha, ALPHA_BOUND, 0.0)
        keep = 1.0 - alpha
        t_start = live_t[active].flatten(1)
        # The product only falls, so the kept Gaussians of a pixel are a prefix; stopped pixels have T = 0 here.
        t_after = threshold_(torch.cumprod(keep, dim=1).mul_(t_start[:, None]), T_MIN, 0.0)
        weight = alpha.div_(keep).mul_(t_after)  # alpha * T_before for the kept Gaussians, else 0
        out[active] += torch.bmm(weight.transpose(1, 2), g[..., 6:])
        live_t[active] = t_after[:, -1].view(-1, tile, tile)
        start[active] += batch
        active = active[(start[active] < stop[active]) & (live_t[active] > 0).flatten(1).any(dim=1)]


def composite(
    proj: dict[str, torch.Tensor], values: torch.Tensor, opacities: torch.Tensor, width: int, height: int,
    tile: int = 16, batch: int = 16, first_chunk: int = 1 << 16, group_size: int = 1 << 18,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Alpha-composite per-Gaussian ``values`` (G, D) front to back; returns (H, W, D) sums and (H, W) alpha.

    Gaussians go through in depth order in chunks of growing size (``first_chunk`` (tile, Gaussian) pairs, then
    twice as many each time). Before a chunk is binned into tiles, Gaussians whose box holds no pixel still
    compositing are dropped, so occluded layers cost little. Because the opacity-aware radius bounds
    ``alpha >= 1/255`` exactly, culling by box instead of by 16-pixel tile changes no result, only the work.
    """
    radii = proj["radii"]
    visible = torch.nonzero((radii > 0).all(dim=-1)).squeeze(1)
    ids = visible[torch.argsort(proj["depths"][visible], stable=True)]
    boxes = pixel_boxes(proj["means2d"][ids], radii[ids], width, height)
    # One row per Gaussian, so a round gathers one tensor: x, y, a, b, c, opacity, values, 1.
    # The trailing 1 makes the weighted sum also return each pixel's accumulated alpha.
    ones = torch.ones_like(opacities)[:, None]
    packed = torch.cat([proj["means2d"], proj["conics"], opacities[:, None], values, ones], dim=1).float()[ids]
    tiles_x, tiles_y, dim = -(-width // tile), -(-height // tile), values.shape[1]
    n_tiles = tiles_x * tiles_y
    origin = torch.stack([torch.arange(n_tiles) % tiles_x, torch.arange(n_tiles) // tiles_x], dim=-1) * tile
    cols, rows = origin[:, None, None, 0] + torch.arange(tile), origin[:, None, None, 1] + torch.arange(tile)
    # Pixels of the padded border tiles start stopped, so they never keep a tile running.
    live_t = torch.where((cols >= width) | (rows.transpose(1, 2) >= height), 0.0, 1.0)
    out = torch.zeros(n_tiles, tile * tile, dim + 1)
    spans = torch.div(boxes[:, 1], tile, rounding_mode="floor") - torch.div(boxes[:, 0], tile, rounding_mode="floor")
    ends = torch.cumsum((spans + 1).prod(dim=1), 0)  # running count of (tile, Gaussian) pairs
    start, budget = 0, first_chunk
    while start < len(ids):
        done_pairs = int(ends[start - 1]) if start else 0
        stop = max(int(torch.searchsorted(ends, done_pairs + budget, right=True)), start + 1)
        live = image_layout(live_t, tiles_y, tiles_x)[:height, :width] > 0
        if not live.any():
            break
        sel = start + torch.nonzero(any_live(live, boxes[start:stop])).squeeze(1)
        owner, offsets = tile_pairs(boxes[sel], tile, tiles_x, (live_t > 0).flatten(1).any(dim=1))
        composite_tiles(packed[sel], owner, offsets, origin, live_t, out, batch, group_size)
        start, budget = stop, budget * 2
    out = image_layout(out.view(n_tiles, tile, tile, dim + 1), tiles_y, tiles_x)[:height, :width]
    return out[..., :dim].to(values.dtype), out[..., dim].to(values.dtype)


def image_layout(per_tile: torch.Tensor, tiles_y: int, tiles_x: int) -> torch.Tensor:
    """(T, tile, tile, ...) row-major tiles -> (tiles_y * tile, tiles_x * tile, ...) image."""
    tile = per_tile.shape[1]
    grid = per_tile.view(tiles_y, tiles_x, tile, tile, *per_tile.shape[3:]).transpose(1, 2)
    return grid.reshape(tiles_y * tile, tiles_x * tile, *per_tile.shape[3:])


_threads_lock, _saved_threads, _users = threading.Lock(), 1, 0


@contextmanager
def ops_on_calling_thread() -> Iterator[int]:
    """Run torch CPU ops single-threaded inside the block; yields the thread count to use for frames instead.

    The compositor issues thousands of small ops per frame; with several intra-op threads each op waits for
    all of them, which on a shared, loaded machine costs far more than the op (measured 10-30x slower with
    2 threads than with 1 on 2 busy cores). Parallelism moves to whole frames instead. The setting is
    process-wide, so other threads' torch ops also run single-threaded meanwhile; nested and concurrent uses
    share one saved setting, restored when the last one leaves.
    """
    global _saved_threads, _users
    with _threads_lock:
        if _users == 0:
            _saved_threads = torch.get_num_threads()
            torch.set_num_threads(1)
        _users += 1
        workers = _saved_threads
    try:
        yield workers
    finally:
        with _threads_lock:
            _users -= 1
            if _users == 0:
                torch.set_num_threads(_saved_threads)


def auto_tile_size(radii: torch.Tensor) -> int:
    """8-pixel tiles for small footprints (less wasted work per pair), 16 for large ones (fewer pairs to sort)."""
    shown = radii[(radii > 0).all(dim=-1)]
    return 16 if len(shown) and float(shown.float().median()) > 8 else 8


@torch.no_grad()
def rasterization(
    means: torch.Tensor, quats: torch.Tensor, scales: torch.Tensor, opacities: torch.Tensor, colors: torch.Tensor,
    viewmats: torch.Tensor, Ks: torch.Tensor, width: int, height: int, near_plane: float = 0.01,
    far_plane: float = 1e10, eps2d: float = 0.3, sh_degree: int | None = None, packed: bool = False,
    tile_size: int | None = None, backgrounds: torch.Tensor | None = None, render_mode: str = "RGB",
    **unsupported: Any,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """CPU stand-in for ``gsplat.rasterization`` (same arguments and outputs, single scene, no gradients).

    means (G, 3), quats (G, 4) wxyz, scales (G, 3), opacities (G,), colors (G, D) or SH (G, K, 3) with
    ``sh_degree``, viewmats (C, 4, 4) w2c, Ks (C, 3, 3). Returns render_colors (C, H, W, D[+1]),
    render_alphas (C, H, W, 1) and a meta dict (radii, means2d, depths, conics per camera). ``tile_size`` only
    changes the speed (None: chosen per camera); cameras render in parallel, ``torch.get_num_threads()`` at once.
    """
    if unsupported:
        raise TypeError(f"the CPU rasterizer does not support {sorted(unsupported)}")
    if render_mode not in ("RGB", "D", "ED", "RGB+D", "RGB+ED"):
        raise ValueError(f"unknown render_mode {render_mode!r}")

    with ops_on_calling_thread() as workers:
        covars = quat_scale_to_covar(quats, scales)
        campos = torch.linalg.inv(viewmats)[:, :3, 3]

        @torch.no_grad()  # no_grad is thread-local: the workers need their own
        def render(cam: int) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
            proj = project(means, covars, opacities, viewmats[cam], Ks[cam], width, height, eps2d, near_plane,
                           far_plane)
            rgb = colors
            if sh_degree is not None:
                rgb = torch.clamp_min(eval_sh(sh_degree, means - campos[cam], colors) + 0.5, 0.0)
            depth = proj["depths"][:, None]
            values = {"RGB": rgb, "D": depth, "ED": depth}.get(render_mode)
            values = torch.cat([rgb, depth], dim=-1) if values is None else values
            tile = tile_size or auto_tile_size(proj["radii"])
            image, alpha = composite(proj, values, opacities, width, height, tile)
            if backgrounds is not None and render_mode not in ("D", "ED"):  # depth channels get no background
                bg = backgrounds[cam]
                bg = torch.cat([bg, bg.new_zeros(1)]) if render_mode != "RGB" else bg
                image = image + (1.0 - alpha[..., None]) * bg
            if render_mode in ("ED", "RGB+ED"):
                image = torch.cat([image[..., :-1], image[..., -1:] / alpha[..., None].clamp(min=1e-10)], dim=-1)
            return image, alpha[..., None], proj

        if workers > 1 and len(viewmats) > 1:
            with ThreadPoolExecutor(min(workers, len(viewmats))) as pool:
                frames = list(pool.map(render, range(len(viewmats))))
        else:
            frames = [render(cam) for cam in range(len(viewmats))]
        meta = {k: torch.stack([proj[k] for _, _, proj in frames]) for k in ("radii", "means2d", "depths", "conics")}
        return torch.stack([f[0] for f in frames]), torch.stack([f[1] for f in frames]), meta
