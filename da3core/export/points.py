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

from da3core.geometry import affine_inverse, as_homogeneous
from da3core.prediction import Prediction, present


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
        """The subset at ``index`` (integer indices or a boolean mask)."""
        # compress/take along axis 0 copy rows 3-4x faster than fancy indexing of (P, k) arrays.
        if index.dtype == bool:
            rows = lambda a: np.compress(index, a, axis=0)  # noqa: E731
        else:
            rows = lambda a: np.take(a, index, axis=0)  # noqa: E731
        return PointSet(rows(self.xyz), rows(self.rgb), rows(self.view), rows(self.pixel))

    def downsample(self, max_points: int | None, seed: int = 0) -> PointSet:
        """At most ``max_points`` points drawn without replacement by a seeded RNG (order kept)."""
        if max_points is None or len(self) <= max_points:
            return self
        keep = np.zeros(len(self), dtype=bool)  # a mask puts the drawn indices in order without a sort
        keep[np.random.default_rng(seed).choice(len(self), size=max_points, replace=False)] = True
        return self.take(keep)


def conf_threshold(
    conf: np.ndarray, percentile: float, floor: float | None = None, ensure_percentile: float | None = None
) -> float:
    """``percentile`` of ``conf``, raised to ``floor`` and then capped at the ``ensure_percentile`` value."""
    wanted = [percentile] if ensure_percentile is None else [percentile, ensure_percentile]
    values = np.percentile(conf, wanted)  # one partition for both
    thr = float(values[0])
    if floor is not None:
        thr = max(floor, thr)
    if ensure_percentile is not None:
        thr = min(thr, float(values[1]))
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
    conf = present(
        prediction.conf, "confidence"
    ).copy()  # the background filters must not touch the caller's prediction
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


def select_points(prediction: Prediction, mask: np.ndarray, frame: np.ndarray | None = None) -> PointSet:
    """Back-project the ``mask`` pixels (integer pixel centres, OpenCV w2c) to world points with colours.

    ``frame`` (4, 4), when given, is applied to the world points on the way (``xyz`` is then in that frame):
    one 3x3 product per view instead of a second pass over every point.
    """
    intrinsics, extrinsics = present(prediction.intrinsics, "intrinsics"), present(prediction.extrinsics, "extrinsics")
    images = present(prediction.processed_images, "processed images")
    width = mask.shape[2]
    flat = [np.flatnonzero(m) for m in mask]
    bounds = np.concatenate([[0], np.cumsum([len(f) for f in flat])])
    xyz = np.empty((bounds[-1], 3), dtype=np.float32)
    rgb = np.empty((bounds[-1], 3), dtype=np.uint8)
    pixel = np.empty((bounds[-1], 2), dtype=np.int32)
    for i, idx in enumerate(flat):
        if not len(idx):
            continue
        rows, cols = np.divmod(idx, width)
        depth = prediction.depth[i].reshape(-1)[idx].astype(np.float64)
        # world = R_c2w K^-1 (u d, v d, d) + t_c2w, composed with the output frame into one affine map.
        c2w = as_homogeneous(affine_inverse(extrinsics[i].astype(np.float64)))
        to_out = (c2w if frame is None else np.asarray(frame, dtype=np.float64) @ c2w)[:3]
        linear = to_out[:, :3] @ np.linalg.inv(intrinsics[i].astype(np.float64))
        s = slice(bounds[i], bounds[i + 1])
        # A C-contiguous right operand: OpenBLAS is ~15x slower on (P, 3) @ (3, 3) with a transposed view.
        xyz[s] = np.stack([cols * depth, rows * depth, depth], axis=-1) @ np.ascontiguousarray(linear.T) + to_out[:, 3]
        rgb[s] = images[i].reshape(-1, 3)[idx]
        pixel[s, 0], pixel[s, 1] = cols, rows
    view = np.repeat(np.arange(len(flat), dtype=np.int32), np.diff(bounds))
    return PointSet(xyz, rgb, view, pixel)


def confident_points(
    prediction: Prediction,
    num_max_points: int | None = 1_000_000,
    conf_thresh: float = 1.05,
    conf_thresh_percentile: float = 40.0,
    ensure_thresh_percentile: float = 90.0,
    filter_black_bg: bool = False,
    filter_white_bg: bool = False,
    seed: int = 0,
    frame: np.ndarray | None = None,
) -> PointSet:
    """Points picked by this module's rule, then at most ``num_max_points`` by seeded downsampling.

    Points are in the world frame, or in ``frame`` (4, 4 applied to world points) when given.
    """
    mask = valid_mask(
        prediction, conf_thresh_percentile, conf_thresh, ensure_thresh_percentile, filter_black_bg, filter_white_bg
    )
    return select_points(prediction, mask, frame).downsample(num_max_points, seed)
