"""``mini_npz`` and ``npz``: the prediction's arrays as compressed numpy archives, upstream keys and rounding."""

from __future__ import annotations

import zipfile
from typing import Any

import numpy as np

from da3core.export.target import ExportTarget
from da3core.prediction import Prediction


class _PerFrame:
    """An array of a prediction read a frame at a time (a long scene), written into the archive frame by frame."""

    def __init__(self, frames: Any, decimals: int | None) -> None:
        self.frames, self.decimals = frames, decimals

    def write(self, f: Any) -> None:
        first = _round(self.frames[0], self.decimals)
        np.lib.format.write_array_header_1_0(
            f,
            {
                "descr": np.lib.format.dtype_to_descr(first.dtype),
                "fortran_order": False,
                "shape": (len(self.frames), *first.shape),
            },
        )
        for i in range(len(self.frames)):  # the bytes np.save writes for the whole array, in C order
            f.write(np.ascontiguousarray(_round(self.frames[i], self.decimals)).tobytes())


def _round(values: Any, decimals: int | None) -> Any:
    """float32 values rounded as upstream rounds them; a long scene's frames are rounded one at a time when written."""
    if hasattr(values, "shape") and not isinstance(values, np.ndarray):  # a store's FrameArray
        return _PerFrame(values, decimals)
    return values if decimals is None else np.round(values, decimals).astype(np.float32)


def _conf_and_cameras(prediction: Prediction) -> dict[str, np.ndarray]:
    out = {}
    if prediction.conf is not None:
        out["conf"] = _round(prediction.conf, 2)
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
                if isinstance(array, _PerFrame):
                    array.write(f)
                else:
                    np.lib.format.write_array(f, np.asanyarray(array), allow_pickle=False)
    return [target.url(relpath)]


def write_mini_npz(prediction: Prediction, target: ExportTarget) -> list[str]:
    """``exports/mini_npz/results.npz``: depth (8 decimals), conf (2), extrinsics (N,3,4) w2c, intrinsics."""
    arrays = {"depth": _round(prediction.depth, 8), **_conf_and_cameras(prediction)}
    return _save(target, "exports/mini_npz/results.npz", arrays)


def write_npz(prediction: Prediction, target: ExportTarget) -> list[str]:
    """``exports/npz/results.npz``: image (N,H,W,3) uint8, depth (6 decimals), conf, extrinsics, intrinsics."""
    arrays = {
        "image": _round(prediction.processed_images, None),
        "depth": _round(prediction.depth, 6),
        **_conf_and_cameras(prediction),
    }
    return _save(target, "exports/npz/results.npz", arrays)
