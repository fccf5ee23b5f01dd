"""``feat_vis``: PCA colourings of ``prediction.aux["feat_layer_L"]`` beside each image, as JPEGs and an mp4.

Per layer: ``feat_vis/feat_layer_L/{i:06d}.jpg`` (image | PCA colours, nearest-neighbour upsampled) and
``feat_vis/feat_layer_L.mp4`` at ``fps``. One exact PCA basis over all frames (upstream uses a randomized
one), each component's sign fixed so its largest loading is positive: the colours are deterministic and
stable across frames. Channels are clipped to their global ``clip_percent``/``100 - clip_percent`` percentiles.
"""

from __future__ import annotations

import math
import numbers

import cv2
import numpy as np

from da3core.export.media import VIDEO_QUALITY, save_jpeg, write_mp4
from da3core.export.target import ExportTarget
from da3core.prediction import Prediction, present

FEATURE_PREFIX = "feat_layer_"


def _rows(frame: np.ndarray) -> np.ndarray:
    """(h, w, C) -> (h*w, C) float64 with non-finite values made finite as upstream does."""
    return np.nan_to_num(frame.reshape(-1, frame.shape[-1]).astype(np.float64), nan=0.0, posinf=1e6, neginf=-1e6)


def pca_colors(features: np.ndarray, clip_percent: float = 10.0) -> np.ndarray:
    """(T, h, w, C) features -> (T, h, w, 3) float32 in [0, 1] along the top three principal components."""
    n_rows = features.shape[0] * features.shape[1] * features.shape[2]
    mean = sum(_rows(f).sum(0) for f in features) / n_rows
    # Accumulate the covariance frame by frame: no centred copy of all features in memory.
    cov = np.zeros((features.shape[-1],) * 2)
    for frame in features:
        centred = _rows(frame) - mean
        cov += centred.T @ centred
    _, vectors = np.linalg.eigh(cov)
    basis = vectors[:, ::-1][:, :3]
    basis *= np.sign(basis[np.abs(basis).argmax(axis=0), np.arange(3)])
    pcs = np.stack([(_rows(f) - mean) @ basis for f in features])  # (T, h*w, 3)
    lo, hi = np.percentile(pcs.reshape(-1, 3), [clip_percent, 100.0 - clip_percent], axis=0)
    out = np.clip((np.clip(pcs, lo, hi) - lo) / np.maximum(hi - lo, 1e-4), 0.0, 1.0)
    return out.reshape(*features.shape[:3], 3).astype(np.float32)


def feature_layers(prediction: Prediction) -> list[str]:
    """The ``feat_layer_L`` keys of ``prediction.aux`` in layer order."""
    keys = [k for k in prediction.aux if k.startswith(FEATURE_PREFIX)]
    return sorted(keys, key=lambda k: int(k[len(FEATURE_PREFIX) :]) if k[len(FEATURE_PREFIX) :].isdigit() else k)


def check_feat_vis_options(
    fps: float = 15, clip_percent: float = 10.0, video_quality: str = "medium", **_: object
) -> None:
    """Reject option values the writer cannot use, before inference."""
    if isinstance(fps, bool) or not isinstance(fps, numbers.Real) or not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps={fps!r} is not a positive number; use a frame rate such as 15")
    if isinstance(clip_percent, bool) or not isinstance(clip_percent, numbers.Real) or not 0 <= clip_percent < 50:
        # clip_percent and 100 - clip_percent are the low and high percentiles: 50 or more leaves no range.
        raise ValueError(f"clip_percent={clip_percent!r} is out of range; use a percentile from 0 to below 50")
    if not isinstance(video_quality, str) or video_quality not in VIDEO_QUALITY:
        raise ValueError(f"video_quality={video_quality!r} is unknown; use one of {', '.join(VIDEO_QUALITY)}")


def write_feat_vis(
    prediction: Prediction,
    target: ExportTarget,
    fps: float = 15,
    clip_percent: float = 10.0,
    video_quality: str = "medium",
) -> list[str]:
    """Write the per-frame JPEGs and the mp4 of every exported feature layer."""
    check_feat_vis_options(fps, clip_percent, video_quality)
    images = present(prediction.processed_images, "processed images")
    h, w = images.shape[1:3]
    paths = []
    for key in feature_layers(prediction):
        colors = (pca_colors(np.asarray(prediction.aux[key]), clip_percent) * 255).astype(np.uint8)
        frames = [
            np.concatenate([images[i], cv2.resize(colors[i], (w, h), interpolation=cv2.INTER_NEAREST)], 1)
            for i in range(len(colors))
        ]
        for i, frame in enumerate(frames):
            relpath = f"feat_vis/{key}/{i:06d}.jpg"
            with target.staged(relpath) as local:
                save_jpeg(local, frame)
            paths.append(target.url(relpath))
        with target.staged(f"feat_vis/{key}.mp4") as local:
            write_mp4(local, frames, fps=fps, quality=video_quality)
        paths.append(target.url(f"feat_vis/{key}.mp4"))
    return paths
