"""``gs_ply``: ``gs_ply/0000.ply``, the predicted 3D Gaussians in the INRIA 3DGS PLY layout.

Properties (all float32, element ``vertex``): ``x y z nx ny nz f_dc_0..2 [f_rest_0..] opacity scale_0..2
rot_0..3`` with zero normals, opacity as a logit, log scales and wxyz quaternions; ``f_rest`` is channel-major
(all R coefficients, then G, then B), 3 * ((D + 1)^2 - 1) of them for ``sh_degree`` D. The default D = 0 writes
the DC term only, as upstream (load with ``--sh_degree 0``); DA3 predicts degree 2, so ``sh_degree=2`` keeps
the view-dependent colour (load with ``--sh_degree 2``). Pruning follows upstream: a border of ``int(8/256 * H)``
rows and ``int(8/256 * W)`` columns is dropped (nothing when that rounds to 0; upstream then drops everything),
and each view keeps pixels whose depth is at most its ``prune_by_depth_percent`` quantile. Unlike upstream, a
Gaussian whose scale is 0 or negative (no log scale) or with any non-finite property is left out, with a warning.
"""

from __future__ import annotations

import logging

import numpy as np
from plyfile import PlyData, PlyElement

from da3core.export.target import ExportTarget
from da3core.prediction import Prediction, present
from da3core.render.sh import MAX_SH_DEGREE

log = logging.getLogger(__name__)
OPACITY_EPS = 1e-6  # keeps the logit finite for opacities of exactly 0 or 1


def keep_mask(depth: np.ndarray, prune_by_depth_percent: float | None = 0.9, prune_border: bool = True) -> np.ndarray:
    """(N, H, W) bool: Gaussians kept after border and per-view depth-quantile pruning of (N, H, W) ``depth``."""
    n, h, w = depth.shape
    keep = np.ones(depth.shape, dtype=bool)
    if prune_border:
        bh, bw = int(8 / 256 * h), int(8 / 256 * w)
        keep[:, :bh], keep[:, h - bh :], keep[:, :, :bw], keep[:, :, w - bw :] = False, False, False, False
    if prune_by_depth_percent is not None and prune_by_depth_percent < 1:
        limit = np.quantile(depth.reshape(n, -1).astype(np.float32), prune_by_depth_percent, axis=1)
        keep &= depth <= limit[:, None, None]
    return keep


def ply_properties(n_rest: int) -> list[str]:
    """INRIA property names with ``n_rest`` f_rest entries."""
    return (
        ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
        + [f"f_rest_{i}" for i in range(n_rest)]
        + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    )


def check_gs_ply_options(
    gs_views_interval: int | None = 1, prune_by_depth_percent: float | None = 0.9, sh_degree: int = 0, **_: object
) -> None:
    """Reject option values the writer cannot use, before inference."""
    if gs_views_interval is not None and (
        isinstance(gs_views_interval, bool) or not isinstance(gs_views_interval, int) or gs_views_interval < 1
    ):
        raise ValueError(
            f"gs_views_interval must be a positive integer or None (about 12 views), got {gs_views_interval!r}"
        )
    if prune_by_depth_percent is not None and (
        isinstance(prune_by_depth_percent, bool)
        or not (isinstance(prune_by_depth_percent, (int, float)) and 0 < prune_by_depth_percent <= 1)
    ):
        raise ValueError(f"prune_by_depth_percent must be in (0, 1] or None, got {prune_by_depth_percent!r}")
    if isinstance(sh_degree, bool) or not isinstance(sh_degree, int) or not 0 <= sh_degree <= MAX_SH_DEGREE:
        raise ValueError(
            f"sh_degree must be an integer from 0 (DC colour only) to {MAX_SH_DEGREE} "
            f"(all the model predicts), got {sh_degree!r}"
        )


def write_gs_ply(
    prediction: Prediction,
    target: ExportTarget,
    gs_views_interval: int | None = 1,
    prune_by_depth_percent: float | None = 0.9,
    prune_border: bool = True,
    sh_degree: int = 0,
) -> list[str]:
    """Write every ``gs_views_interval``-th view's kept Gaussians (None: about 12 views in total)."""
    check_gs_ply_options(gs_views_interval, prune_by_depth_percent, sh_degree)
    gs = present(prediction.gaussians, "Gaussians (infer_gs=true)")
    n, h, w = prediction.depth.shape
    if len(gs) != n * h * w:
        raise ValueError(f"gs_ply expects one Gaussian per pixel ({n}x{h}x{w} = {n * h * w}), got {len(gs)}")
    n_coeffs = (sh_degree + 1) ** 2
    if gs.harmonics.shape[-1] < n_coeffs:
        have = int(round(np.sqrt(gs.harmonics.shape[-1]))) - 1
        raise ValueError(f"gs_ply sh_degree={sh_degree} but these Gaussians carry SH up to degree {have}")
    if gs_views_interval is None:
        gs_views_interval = max(n // 12, 1)
    keep = keep_mask(prediction.depth, prune_by_depth_percent, prune_border)
    keep[np.arange(n) % gs_views_interval != 0] = False
    idx = np.flatnonzero(keep.reshape(-1))
    harmonics = gs.harmonics[idx]
    rest = harmonics[:, :, 1:n_coeffs].reshape(len(idx), -1)  # (G, 3, K-1) flattened: channel-major, as INRIA
    opacity = np.clip(gs.opacities[idx].astype(np.float64), OPACITY_EPS, 1 - OPACITY_EPS)
    with np.errstate(divide="ignore", invalid="ignore"):  # a scale <= 0 has no log: that Gaussian is dropped below
        columns = [
            gs.means[idx],
            np.zeros((len(idx), 3)),
            harmonics[:, :, 0],
            rest,
            np.log(opacity / (1 - opacity))[:, None],
            np.log(gs.scales[idx]),
            gs.rotations[idx],
        ]
    data = np.concatenate([np.asarray(c, dtype=np.float32) for c in columns], axis=1)
    # The head's scale is (depth + a predicted offset) x footprint, which can reach 0 or below (upstream writes
    # NaN then); a NaN or infinite property breaks every 3DGS reader, so such Gaussians are left out.
    finite = np.isfinite(data).all(axis=1)
    if not finite.all():
        log.warning(
            "gs_ply: left out %d of %d Gaussians with a scale <= 0 or a non-finite value", (~finite).sum(), len(data)
        )
        data = data[finite]
    names = ply_properties(rest.shape[1])
    vertex = np.empty(len(data), dtype=[(name, "f4") for name in names])
    for j, name in enumerate(names):
        vertex[name] = data[:, j]
    with target.staged("gs_ply/0000.ply") as local:
        PlyData([PlyElement.describe(vertex, "vertex")]).write(str(local))
    return [target.url("gs_ply/0000.ply")]
