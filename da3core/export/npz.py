"""``mini_npz`` and ``npz``: the prediction's arrays as compressed numpy archives, upstream keys and rounding."""

from __future__ import annotations

import numpy as np

from da3core.export.target import ExportTarget
from da3core.prediction import Prediction


def _conf_and_cameras(prediction: Prediction) -> dict[str, np.ndarray]:
    out = {}
    if prediction.conf is not None:
        out["conf"] = np.round(prediction.conf, 2).astype(np.float32)
    if prediction.extrinsics is not None:
        out["extrinsics"] = prediction.extrinsics.astype(np.float32)
    if prediction.intrinsics is not None:
        out["intrinsics"] = prediction.intrinsics.astype(np.float32)
    return out


def _save(target: ExportTarget, relpath: str, arrays: dict[str, np.ndarray]) -> list[str]:
    with target.staged(relpath) as local:
        np.savez_compressed(local, **arrays)
    return [target.url(relpath)]


def write_mini_npz(prediction: Prediction, target: ExportTarget) -> list[str]:
    """``exports/mini_npz/results.npz``: depth (8 decimals), conf (2), extrinsics (N,3,4) w2c, intrinsics."""
    arrays = {"depth": np.round(prediction.depth, 8).astype(np.float32), **_conf_and_cameras(prediction)}
    return _save(target, "exports/mini_npz/results.npz", arrays)


def write_npz(prediction: Prediction, target: ExportTarget) -> list[str]:
    """``exports/npz/results.npz``: image (N,H,W,3) uint8, depth (6 decimals), conf, extrinsics, intrinsics."""
    arrays = {
        "image": prediction.processed_images,
        "depth": np.round(prediction.depth, 6).astype(np.float32),
        **_conf_and_cameras(prediction),
    }
    return _save(target, "exports/npz/results.npz", arrays)
