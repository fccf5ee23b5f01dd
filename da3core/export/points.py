"""Which pixels become 3-D points: the one selection rule shared by glb, colmap, ply and nerfstudio.

Rule (documented for users in :func:`select_points`):
- a pixel needs a finite, positive depth;
- sky pixels are removed when the prediction has a sky mask (upstream's sky code never runs; filling
  sky with a far depth would add a fake dome, so we drop it);
- with confidence (any-view presets): keep ``conf >= thr``; upstream's GLB threshold is
  ``thr = min(max(conf_floor, P_lo), P_hi)`` over non-sky pixels (all pixels when <= 10 are non-sky),
  ``P_lo = percentile(conf, conf_thresh_percentile)``, ``P_hi = percentile(conf, ensure_thresh_percentile)``;
  the black/white background filters set the confidence of near-black / near-white pixels to 1.0 first;
- without confidence (mono/metric presets): every valid non-sky pixel is kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from da3core.geometry import affine_inverse
from da3core.prediction import Prediction


@dataclass
class PointSet:
    """Selected pixels as world points, in view-major, row-major pixel order."""

    xyz: np.ndarray  # (P, 3) float32 world (prediction frame)
    rgb: np.ndarray  # (P, 3) uint8
    view: np.ndarray  # (P,) int32 view index
    pixel: np.ndarray  # (P, 2) int32 (col, row) in the processed image

    def __len__(self) -> int:
        return len(self.xyz)

    def take(self, index: np.ndarray) -> PointSet:
        """The subset at ``index``."""
        return PointSet(self.xyz[index], self.rgb[index], self.view[index], self.pixel[index])

    def downsample(self, max_points: int | None, seed: int = 0) -> PointSet:
        """At most ``max_points`` points drawn without replacement by a seeded RNG (order kept)."""
        if max_points is None or len(self) <= max_points:
            return self
        index = np.sort(np.random.default_rng(seed).choice(len(self), size=max_points, replace=False))
        return self.take(index)


def conf_threshold(
    conf: np.ndarray, percentile: float, floor: float | None = None, ensure_percentile: float | None = None
) -> float:
    """``percentile`` of ``conf``, raised to ``floor`` and then capped at the ``ensure_percentile`` value."""
    thr = float(np.percentile(conf, percentile))
    if floor is not None:
        thr = max(floor, thr)
    if ensure_percentile is not None:
        thr = min(thr, float(np.percentile(conf, ensure_percentile)))
    return thr


def valid_mask(
    prediction: Prediction,
    conf_thresh_percentile: float = 40.0,
    conf_floor: float | None = 1.05,
    ensure_thresh_percentile: float | None = 90.0,
    filter_black_bg: bool = False,
    filter_white_bg: bool = False,
    threshold: float | None = None,
) -> np.ndarray:
    """(N, H, W) bool: the pixels that become points under the rule in this module's docstring.

    ``threshold`` replaces the confidence threshold computed from these views (a long scene read a frame at a time
    computes one for all its views).
    """
    depth = prediction.depth
    keep = np.isfinite(depth) & (depth > 0)
    sky = prediction.sky
    if sky is not None:
        keep &= ~sky
    if prediction.conf is None:
        return keep
    conf = filtered_conf(prediction, filter_black_bg, filter_white_bg)
    if threshold is None:
        threshold = conf_threshold(conf_pool(conf, sky), conf_thresh_percentile, conf_floor, ensure_thresh_percentile)
    return keep & (conf >= threshold)


def filtered_conf(prediction: Prediction, filter_black_bg: bool = False, filter_white_bg: bool = False) -> np.ndarray:
    """A copy of the confidence with the background filters applied (near-black / near-white pixels set to 1.0)."""
    conf = prediction.conf.copy()  # the background filters must not touch the caller's prediction
    if filter_black_bg or filter_white_bg:
        if prediction.processed_images is None:
            raise ValueError("the black/white background filters need prediction.processed_images")
        if filter_black_bg:
            conf[(prediction.processed_images < 16).all(-1)] = 1.0
        if filter_white_bg:
            conf[(prediction.processed_images >= 240).all(-1)] = 1.0
    return conf


def conf_pool(conf: np.ndarray, sky: np.ndarray | None) -> np.ndarray:
    """The confidences the threshold's percentiles are taken over: the non-sky ones (all when <= 10 are non-sky)."""
    return conf[~sky] if sky is not None and (~sky).sum() > 10 else conf


def select_points(prediction: Prediction, mask: np.ndarray) -> PointSet:
    """Back-project the ``mask`` pixels (integer pixel centres, OpenCV w2c) to world points with colours."""
    for name in ("intrinsics", "extrinsics", "processed_images"):
        if getattr(prediction, name) is None:
            raise ValueError(f"point export needs prediction.{name}, which this prediction lacks")
    views, rows, cols = np.nonzero(mask)
    depth = prediction.depth[views, rows, cols].astype(np.float64)
    xyz = np.empty((len(views), 3), dtype=np.float32)
    for i in np.unique(views):
        sel = views == i
        k_inv = np.linalg.inv(prediction.intrinsics[i].astype(np.float64))
        c2w = affine_inverse(prediction.extrinsics[i].astype(np.float64))
        pix = np.stack([cols[sel], rows[sel], np.ones(sel.sum())], axis=-1)
        cam = (pix @ k_inv.T) * depth[sel, None]
        xyz[sel] = cam @ c2w[:3, :3].T + c2w[:3, 3]
    rgb = prediction.processed_images[views, rows, cols]
    pixel = np.stack([cols, rows], axis=-1).astype(np.int32)
    return PointSet(xyz, rgb, views.astype(np.int32), pixel)


def confident_points(
    prediction: Prediction,
    num_max_points: int | None = 1_000_000,
    conf_thresh: float = 1.05,
    conf_thresh_percentile: float = 40.0,
    ensure_thresh_percentile: float = 90.0,
    filter_black_bg: bool = False,
    filter_white_bg: bool = False,
    seed: int = 0,
) -> PointSet:
    """Points picked by this module's rule, then at most ``num_max_points`` by seeded downsampling (world frame)."""
    mask = valid_mask(prediction, conf_thresh_percentile, conf_thresh, ensure_thresh_percentile,
                      filter_black_bg, filter_white_bg)
    return select_points(prediction, mask).downsample(num_max_points, seed)
