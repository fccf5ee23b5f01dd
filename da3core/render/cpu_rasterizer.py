"""A pure-torch 3D Gaussian rasterizer with ``gsplat.rasterization``'s interface and compositing rules.

It follows gsplat 1.5.3's CUDA path (EWA projection, ``packed=False``, ``rasterize_mode="classic"``):
- projection: Jacobian with the view-frustum clamp at 1.3 x the half field of view, ``eps2d`` added to the
  2-D covariance, culling at ``near_plane``/``far_plane``, non-positive determinant and off-screen boxes;
- per-axis radii ``ceil(extend * sqrt(cov_ii))`` with the opacity-aware ``extend = min(3.33, sqrt(2 ln(255 o)))``,
  Gaussians below opacity 1/255 dropped;
- compositing front to back by camera z, pixel centres at ``(col + 0.5, row + 0.5)``,
  ``alpha = min(0.999, o exp(-sigma))``, skip ``alpha < 1/255``, stop (exclusive) once the transmittance would
  fall to ``<= 1e-4``; the background is added with weight ``T``. gsplat also skips ``sigma < 0``, which the
  positive-definite conics that pass projection give only through rounding at a Gaussian's centre; there
  alpha is ``o exp(+tiny)`` here, the exact value.
Like gsplat, Gaussians are binned into square tiles (4, 8 or 16 pixels) and each tile composites its depth-sorted
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
from torch.nn.functional import threshold_  # type: ignore[attr-defined]  # public, missing from the stubs

from da3core.render.sh import eval_sh

ALPHA_MIN = 1.0 / 255.0
T_MIN = 1e-4
# threshold(x, bound, v) keeps x > bound: these bounds make that x >= 1/255 (float32) and x >= 0.
ALPHA_BOUND = float(torch.nextafter(torch.tensor(ALPHA_MIN, dtype=torch.float32), torch.tensor(0.0)))
POWER_FLOOR = -20.0  # exp(-20) = 2e-9 < 1/255


def quat_scale_to_covar(quats: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """(G, 3, 3) covariances ``R S S R^T`` from quaternions (G, 4) wxyz (normalised here) and scales (G, 3)."""
    # Entry by entry on contiguous (G,) rows: CPU batched 3x3 products and strided columns are several times slower.
    w, x, y, z = torch.nn.functional.normalize(quats, dim=-1).T.contiguous()
    rot = [
        1 - 2 * (y * y + z * z),
        2 * (x * y - w * z),
        2 * (x * z + w * y),
        2 * (x * y + w * z),
        1 - 2 * (x * x + z * z),
        2 * (y * z - w * x),
        2 * (x * z - w * y),
        2 * (y * z + w * x),
        1 - 2 * (x * x + y * y),
    ]
    s = scales.T.contiguous()
    m = [rot[3 * i + k] * s[k] for i in range(3) for k in range(3)]  # R S, row-major
    cov = {}
    for i in range(3):
        for j in range(i, 3):
            cov[i, j] = cov[j, i] = m[3 * i] * m[3 * j] + m[3 * i + 1] * m[3 * j + 1] + m[3 * i + 2] * m[3 * j + 2]
    return torch.stack([cov[i, j] for i in range(3) for j in range(3)], dim=-1).view(-1, 3, 3)


def project(
    means: torch.Tensor,
    covars: torch.Tensor,
    opacities: torch.Tensor,
    viewmat: torch.Tensor,
    K: torch.Tensor,
    width: int,
    height: int,
    eps2d: float = 0.3,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
) -> dict[str, torch.Tensor]:
    """Project (G,) Gaussians into one pinhole camera (viewmat (4, 4) w2c, K (3, 3)).

    Returns means2d (G, 2), conics (G, 3) = (a, b, c) of the inverse 2-D covariance, depths (G,) camera z,
    radii (G, 2) int32 (0 for culled Gaussians).
    """
    rot, trans = viewmat[:3, :3], viewmat[:3, 3]
    # Everything below runs on contiguous (G,) rows (strided columns make each op several times slower).
    tx, ty, tz = torch.addmm(trans[:, None], rot, means.T)
    # The six distinct entries of R C R^T as one (6, 9) x (9, G) product: vec(R C R^T) = (R kron R) vec(C).
    c00, c01, c02, c11, c12, c22 = torch.kron(rot, rot)[[0, 1, 2, 4, 5, 8]] @ covars.reshape(-1, 9).T
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    tan_x, tan_y = 0.5 * width / fx, 0.5 * height / fy
    # Clamp the Jacobian's evaluation point to 1.3x the frustum, as gsplat does, so Gaussians far off-screen
    # do not get huge 2-D footprints.
    tz_safe = torch.where(tz.abs() > 1e-12, tz, torch.full_like(tz, 1e-12))
    jx = tz * torch.clamp(tx / tz_safe, min=-(cx / fx + 0.3 * tan_x), max=(width - cx) / fx + 0.3 * tan_x)
    jy = tz * torch.clamp(ty / tz_safe, min=-(cy / fy + 0.3 * tan_y), max=(height - cy) / fy + 0.3 * tan_y)
    # J C J^T with J = [[j00, 0, j02], [0, j11, j12]], written out (batched 2x3 matmuls are slow on CPU).
    j00, j02, j11, j12 = fx / tz_safe, -fx * jx / tz_safe**2, fy / tz_safe, -fy * jy / tz_safe**2
    a = j00 * j00 * c00 + 2 * j00 * j02 * c02 + j02 * j02 * c22 + eps2d
    b = j00 * j11 * c01 + j00 * j12 * c02 + j02 * j11 * c12 + j02 * j12 * c22
    c = j11 * j11 * c11 + 2 * j11 * j12 * c12 + j12 * j12 * c22 + eps2d
    det = a * c - b * b
    det_safe = torch.where(det > 0, det, torch.ones_like(det))
    conics = torch.stack([c / det_safe, -b / det_safe, a / det_safe], dim=-1)
    mx, my = fx * tx / tz_safe + cx, fy * ty / tz_safe + cy

    extend = torch.sqrt(2.0 * torch.log(opacities.clamp(min=ALPHA_MIN) / ALPHA_MIN)).clamp(max=3.33)
    rx, ry = (torch.ceil(extend * torch.sqrt(v.clamp(min=0))) for v in (a, c))
    valid = (tz >= near_plane) & (tz <= far_plane) & (det > 0) & (opacities >= ALPHA_MIN) & ((rx > 0) | (ry > 0))
    valid &= (mx + rx > 0) & (mx - rx < width) & (my + ry > 0) & (my - ry < height)
    radii = torch.where(valid[:, None], torch.stack([rx, ry], dim=-1), 0.0).to(torch.int32)
    return {"means2d": torch.stack([mx, my], dim=-1), "conics": conics, "depths": tz, "radii": radii}


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
    # 1-D index_select/masked_select throughout: advanced indexing of 2-D tensors is several times slower.
    (x0, y0), (x1, y1) = (torch.div(boxes[:, k], tile, rounding_mode="floor").T.contiguous() for k in (0, 1))
    span_x, span_y = (x1 + 1 - x0).clamp_(min=0), (y1 + 1 - y0).clamp_(min=0)
    counts = span_x * span_y
    owner = torch.repeat_interleave(counts)
    local = torch.arange(len(owner)) - (torch.cumsum(counts, 0) - counts).index_select(0, owner)
    span_x = span_x.index_select(0, owner)
    row = torch.div(local, span_x, rounding_mode="floor")
    tile_ids = (y0.index_select(0, owner) + row) * tiles_x + x0.index_select(0, owner) + local - row * span_x
    live = tile_live.index_select(0, tile_ids)
    owner, tile_ids = owner.masked_select(live), tile_ids.masked_select(live)
    order = torch.argsort(tile_ids.int(), stable=True)  # int32 keys: the faster radix sort
    offsets = torch.zeros(len(tile_live) + 1, dtype=torch.long)
    offsets[1:] = torch.cumsum(torch.bincount(tile_ids, minlength=len(tile_live)), 0)
    return owner.index_select(0, order), offsets


def any_live(live: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """(G,) bool: whether each pixel box (G, 2, 2) holds a pixel of the (H, W) bool mask (summed-area table)."""
    sat = torch.nn.functional.pad(live.int().cumsum(0).cumsum(1), (1, 0, 1, 0))
    (x0, y0), (x1, y1) = boxes[:, 0].T, boxes[:, 1].T + 1
    return (sat[y1, x1] - sat[y0, x1] - sat[y1, x0] + sat[y0, x0]) > 0


def composite_tiles(
    packed: torch.Tensor,
    owner: torch.Tensor,
    offsets: torch.Tensor,
    origin: torch.Tensor,
    live_t: torch.Tensor,
    out: torch.Tensor,
    batch: int,
    group_size: int,
) -> None:
    """Composite each tile's Gaussians (rows of ``packed``, listed by ``owner``/``offsets``) into ``out``/``live_t``.

    Tiles go in groups; each round takes the next ``batch`` Gaussians of every unfinished tile of the group and
    evaluates them densely on the tile's pixels; the transmittance is a float32 running product, as in gsplat.
    ``live_t`` (T, tile, tile) is the transmittance of pixels still compositing, 0 once they stopped.
    """
    tile = live_t.shape[-1]
    counts = offsets[1:] - offsets[:-1]
    # Tiles go in groups of similar list length, small enough for the round's tensors to stay in cache.
    todo = torch.argsort(counts, descending=True)[: int((counts > 0).sum())]
    per_group = max(group_size // (batch * tile * tile), 1)
    for first in range(0, len(todo), per_group):
        composite_group(packed, owner, offsets, todo[first : first + per_group], origin, live_t, out, batch)


def composite_group(
    packed: torch.Tensor,
    owner: torch.Tensor,
    offsets: torch.Tensor,
    tiles: torch.Tensor,
    origin: torch.Tensor,
    live_t: torch.Tensor,
    out: torch.Tensor,
    batch: int,
) -> None:
    """Rounds of :func:`composite_tiles` for ``tiles`` until each finishes.

    A round's tensors are (tiles, rows, cols, batch): the Gaussians are the innermost axis, so the separable
    sigma terms broadcast over contiguous rows (7x faster than with pixels innermost), the transmittance is a
    running product along the last axis and the weighted sum is one batched (values x batch) @ (batch x pixels)
    product. The group's state lives in its own compact tensors, written back as tiles finish.
    """
    tile = live_t.shape[-1]
    centre = torch.arange(tile, dtype=torch.float32) + 0.5
    steps = torch.arange(batch)
    # (x, y) of each column's / row's pixel centre, per tile: (n, tile, 1).
    px, py = ((origin[tiles, axis, None] + centre)[:, :, None] for axis in (0, 1))
    first, last = offsets[tiles].clone(), offsets[tiles + 1]
    trans, acc = live_t[tiles].flatten(1), out[tiles]
    while True:
        n = len(tiles)
        idx = first[:, None] + steps
        g = packed.index_select(0, owner.index_select(0, idx.clamp(max=len(owner) - 1).flatten())).view(n, batch, -1)
        log_o = g[..., 5].masked_fill(idx >= last[:, None], -math.inf)  # past the list's end: alpha 0, never a hit
        dx, dy = g[:, None, :, 0] - px, g[:, None, :, 1] - py  # (n, tile, batch): per column, per row
        # log(o) - sigma with sigma = 0.5 a dx^2 + 0.5 c dy^2 + b dx dy (packed holds 0.5 a, b, 0.5 c), from
        # per-row and per-column terms, as (n, rows, cols, batch).
        power = (log_o[:, None] - (g[:, None, :, 4] * dy) * dy)[:, :, None] - ((g[:, None, :, 2] * dx) * dx)[:, None]
        power.addcmul_((g[:, None, :, 3] * dy)[:, :, None], dx[:, None], value=-1.0)
        # Flooring the exponent first keeps exp on its fast path (far below 0 it is 3-30x slower, denormal
        # results worst); every floored value lands below 1/255 and becomes 0 through the threshold, which is
        # far cheaper than masked_fill/where on CPU.
        alpha = power.clamp_(min=POWER_FLOOR).exp_().clamp_(max=0.999).view(n, tile * tile, batch)
        threshold_(alpha, ALPHA_BOUND, 0.0)
        keep = 1.0 - alpha
        # The product only falls, so the kept Gaussians of a pixel are a prefix; stopped pixels have T = 0 here.
        t_after = threshold_(torch.cumprod(keep, dim=2).mul_(trans[..., None]), T_MIN, 0.0)
        # Weights alpha * T_before of the kept Gaussians; values x weights in this order is ~5x faster than
        # weights x values (the (values, pixels) product has a wide output).
        acc.baddbmm_(g[..., 6:].transpose(1, 2), alpha.div_(keep).mul_(t_after).transpose(1, 2))
        trans = t_after[..., -1]
        first += batch
        going = (first < last) & (trans > 0).any(dim=1)
        # A finished tile left in the round changes nothing (its alphas or transmittances are 0), so rows are
        # only dropped, and written back, once a quarter of them are done.
        finished = n - int(going.sum())
        if finished * 4 < n:
            continue
        done = ~going
        out[tiles[done]], live_t[tiles[done]] = acc[done], trans[done].view(-1, tile, tile)
        if finished == n:
            return
        tiles, first, last, px, py, trans, acc = (t[going] for t in (tiles, first, last, px, py, trans, acc))


def composite(
    proj: dict[str, torch.Tensor],
    values: torch.Tensor,
    opacities: torch.Tensor,
    width: int,
    height: int,
    tile: int = 16,
    batch: int = 32,
    first_chunk: int = 1 << 16,
    group_size: int = 1 << 18,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Alpha-composite per-Gaussian ``values`` (G, D) front to back; returns (H, W, D) sums and (H, W) alpha.

    Gaussians go through in depth order in chunks of growing size (``first_chunk`` (tile, Gaussian) pairs, then
    twice as many each time). Before a chunk is binned into tiles, Gaussians whose box holds no pixel still
    compositing are dropped, so occluded layers cost little. Because the opacity-aware radius bounds
    ``alpha >= 1/255`` exactly, culling by box instead of by 16-pixel tile changes no result, only the work.
    """
    radii = proj["radii"]
    visible = torch.nonzero((radii > 0).all(dim=-1)).squeeze(1)
    # Visible depths are positive, and positive float32 values sort like their int32 bit patterns: integer keys
    # take torch's radix sort, several times faster than sorting floats.
    ids = visible[torch.argsort(proj["depths"][visible].float().view(torch.int32), stable=True)]
    means2d = proj["means2d"].index_select(0, ids)  # index_select: row gathers 2-4x faster than t[ids]
    boxes = pixel_boxes(means2d, radii.index_select(0, ids), width, height)
    # One row per Gaussian, so a round gathers one tensor: x, y, 0.5 a, b, 0.5 c, log(opacity), values, 1.
    # The trailing 1 makes the weighted sum also return each pixel's accumulated alpha.
    conics = proj["conics"].index_select(0, ids) * torch.tensor([0.5, 1.0, 0.5])
    packed = torch.cat(
        [
            means2d,
            conics,
            torch.log(opacities.index_select(0, ids))[:, None],
            values.index_select(0, ids),
            torch.ones(len(ids), 1),
        ],
        dim=1,
    ).float()
    tiles_x, tiles_y, dim = -(-width // tile), -(-height // tile), values.shape[1]
    n_tiles = tiles_x * tiles_y
    origin = torch.stack([torch.arange(n_tiles) % tiles_x, torch.arange(n_tiles) // tiles_x], dim=-1) * tile
    cols, rows = origin[:, None, None, 0] + torch.arange(tile), origin[:, None, None, 1] + torch.arange(tile)
    # Pixels of the padded border tiles start stopped, so they never keep a tile running.
    live_t = torch.where((cols >= width) | (rows.transpose(1, 2) >= height), 0.0, 1.0)
    out = torch.zeros(n_tiles, dim + 1, tile * tile)
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
        composite_tiles(packed.index_select(0, sel), owner, offsets, origin, live_t, out, batch, group_size)
        start, budget = stop, budget * 2
    out = image_layout(out.transpose(1, 2).reshape(n_tiles, tile, tile, dim + 1), tiles_y, tiles_x)[:height, :width]
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
    """Tile side from the median footprint radius: 4 pixels up to radius 3 (the one-Gaussian-per-pixel case), 8 up
    to 8, else 16. Smaller tiles waste less work per (tile, Gaussian) pair, larger ones make fewer pairs."""
    shown = radii[(radii > 0).all(dim=-1)]
    if not len(shown):
        return 8
    median = float(shown[:: max(1, len(shown) // 65536)].float().median())  # a sample is enough to pick a size
    return 4 if median <= 3 else 8 if median <= 8 else 16


@torch.no_grad()
def rasterization(
    means: torch.Tensor,
    quats: torch.Tensor,
    scales: torch.Tensor,
    opacities: torch.Tensor,
    colors: torch.Tensor,
    viewmats: torch.Tensor,
    Ks: torch.Tensor,
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
    sh_degree: int | None = None,
    packed: bool = False,
    tile_size: int | None = None,
    backgrounds: torch.Tensor | None = None,
    render_mode: str = "RGB",
    covars: torch.Tensor | None = None,
    **unsupported: Any,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """CPU stand-in for ``gsplat.rasterization`` (same arguments and outputs, single scene, no gradients).

    means (G, 3), quats (G, 4) wxyz, scales (G, 3), opacities (G,), colors (G, D) or SH (G, K, 3) with
    ``sh_degree``, viewmats (C, 4, 4) w2c, Ks (C, 3, 3); ``covars`` (G, 3, 3), when given, replace quats and
    scales (as in gsplat). Returns render_colors (C, H, W, D[+1]),
    render_alphas (C, H, W, 1) and a meta dict (radii, means2d, depths, conics per camera). ``tile_size`` only
    changes the speed (None: chosen per camera); cameras render in parallel, ``torch.get_num_threads()`` at once.
    """
    if unsupported:
        raise TypeError(f"the CPU rasterizer does not support {sorted(unsupported)}")
    if render_mode not in ("RGB", "D", "ED", "RGB+D", "RGB+ED"):
        raise ValueError(f"unknown render_mode {render_mode!r}")

    with ops_on_calling_thread() as workers:
        covars = quat_scale_to_covar(quats, scales) if covars is None else covars
        campos = torch.linalg.inv(viewmats)[:, :3, 3]

        @torch.no_grad()  # no_grad is thread-local: the workers need their own
        def render(cam: int) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
            # OpenMP's thread count is per thread: without this a worker's ops (and GEMM blocking, hence
            # rounding) would use every core, and a frame would differ from the same frame rendered alone.
            torch.set_num_threads(1)
            proj = project(
                means, covars, opacities, viewmats[cam], Ks[cam], width, height, eps2d, near_plane, far_plane
            )
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
