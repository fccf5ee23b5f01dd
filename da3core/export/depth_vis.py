"""``depth_vis``: ``depth_vis/NNNN.jpg`` per view, the processed image beside colour-coded inverse depth."""

from __future__ import annotations

import numpy as np

from da3core.export.media import colormap, save_jpeg
from da3core.export.target import ExportTarget
from da3core.prediction import Prediction, present


def colorize_depth(depth: np.ndarray, percentile: float = 2.0) -> np.ndarray:
    """(H, W) z-depth -> (H, W, 3) uint8 Spectral of inverse depth between its 2nd/98th percentiles (near = red)."""
    valid = depth > 0
    inv = depth.astype(np.float32, copy=True)
    inv[valid] = 1.0 / inv[valid]
    if valid.sum() <= 10:
        lo = hi = 0.0
    else:
        lo, hi = np.percentile(inv[valid], [percentile, 100.0 - percentile])
    if lo == hi:
        lo, hi = lo - 1e-6, hi + 1e-6
    # float32 arithmetic as upstream's (numpy 1 casts the float64 scalars down), so colours match bin for bin.
    value = (inv - np.float32(lo)) / np.float32(hi - lo)
    return colormap(np.float32(1.0) - np.clip(value, 0.0, 1.0))


def depth_vis_image(prediction: Prediction, index: int) -> np.ndarray:
    """(H, 2W, 3) uint8: processed image | colour depth of view ``index``."""
    images = present(prediction.processed_images, "processed images")
    return np.concatenate([images[index], colorize_depth(prediction.depth[index])], axis=1)


def write_depth_vis(prediction: Prediction, target: ExportTarget) -> list[str]:
    """Write ``depth_vis/{i:04d}.jpg`` (JPEG quality 95) for every view."""
    paths = []
    for i in range(len(prediction)):
        relpath = f"depth_vis/{i:04d}.jpg"
        with target.staged(relpath) as local:
            save_jpeg(local, depth_vis_image(prediction, i))
        paths.append(target.url(relpath))
    return paths
