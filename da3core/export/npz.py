"""``mini_npz`` and ``npz``: the prediction's arrays as compressed numpy archives, upstream keys and rounding."""

from __future__ import annotations

import zipfile

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
    # What np.savez_compressed writes, at deflate level 1 instead of 6: several times faster on float
    # depth/confidence, barely larger, and read by np.load exactly the same way.
    with target.staged(relpath) as local, zipfile.ZipFile(local, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for key, array in arrays.items():
            with zf.open(f"{key}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(array), allow_pickle=False)
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
