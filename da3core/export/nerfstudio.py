"""``nerfstudio``: a self-contained nerfstudio dataset in ``nerfstudio/`` (``ns-train splatfacto --data ...``).

- ``images/<stem>.png``: the processed images (what depth, cameras and points were predicted for);
- ``transforms.json``: ``camera_model: OPENCV`` and per frame ``file_path``, ``fl_x fl_y cx cy w h`` (processed
  pixels; nerfstudio casts pixel (col, row)'s ray through (col + 0.5, row + 0.5), COLMAP's convention, so the
  principal point is shifted by +0.5 from ours) and ``transform_matrix``, the camera-to-world pose with OpenGL
  axes (OpenCV c2w with its y and z columns negated), in the prediction's world frame; top-level
  ``ply_file_path: points3D.ply``;
- ``points3D.ply``: at most ``num_points`` confident points (same rule as glb) to seed splatfacto; when no point
  passes the threshold, neither the file nor ``ply_file_path`` is written (splatfacto then starts at random).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import PurePosixPath
from typing import Any

import numpy as np
from PIL import Image

from da3core.errors import UserError
from da3core.export.colmap import source_names
from da3core.export.ply import save_point_ply
from da3core.export.points import PointSet, confident_points
from da3core.export.target import ExportTarget
from da3core.geometry import affine_inverse, as_homogeneous, intrinsics_to_colmap
from da3core.prediction import Prediction, present

ROOT = "nerfstudio"
log = logging.getLogger(__name__)
OPENCV_TO_OPENGL = np.diag([1.0, -1.0, -1.0, 1.0])


class NerfstudioNameError(UserError, ValueError):
    """Two input files whose names differ only in extension or folder: both would be ``images/<stem>.png``."""


def image_relpaths(names: Sequence[str]) -> list[str]:
    """The dataset's ``images/<stem>.png`` for each source file name."""
    return [f"images/{PurePosixPath(name).stem}.png" for name in names]


def check_source_names(names: Sequence[str]) -> None:
    """Raise :class:`NerfstudioNameError` when two source files would be written as the same image.

    Needs only the input's file names (``Scene.names``), so a run can call it before inference.
    """
    first: dict[str, str] = {}
    for name, path in zip(names, image_relpaths(names)):
        if path in first:
            raise NerfstudioNameError(
                f"nerfstudio export needs input files with distinct names without extension: {first[path]} and "
                f"{name} would both be {ROOT}/{path}; rename one of them or drop nerfstudio from export"
            )
        first[path] = name


def check_prediction_names(prediction: Prediction) -> None:
    """:func:`check_source_names` for ``prediction``'s views (export() runs it before any format is written)."""
    check_source_names(source_names(prediction))


def transforms(prediction: Prediction, image_paths: list[str], ply_path: str | None) -> dict:
    """The transforms.json content for ``image_paths`` (relative to the dataset folder); no ``ply_file_path``
    when ``ply_path`` is None."""
    h, w = prediction.depth.shape[1:]
    intrinsics, extrinsics = present(prediction.intrinsics, "intrinsics"), present(prediction.extrinsics, "extrinsics")
    frames = []
    for i, path in enumerate(image_paths):
        c2w = affine_inverse(as_homogeneous(extrinsics[i].astype(np.float64))) @ OPENCV_TO_OPENGL
        K = intrinsics_to_colmap(intrinsics[i])
        frames.append(
            {
                "file_path": path,
                "fl_x": K[0, 0],
                "fl_y": K[1, 1],
                "cx": K[0, 2],
                "cy": K[1, 2],
                "w": w,
                "h": h,
                "transform_matrix": c2w.tolist(),
            }
        )
    return {"camera_model": "OPENCV", **({"ply_file_path": ply_path} if ply_path else {}), "frames": frames}


def write_nerfstudio(
    prediction: Prediction, target: ExportTarget, num_points: int = 200_000, seed: int = 0, **point_options: Any
) -> list[str]:
    """Write the dataset (point options: see :func:`confident_points`); returns the written locations."""
    cloud = confident_points(prediction, num_max_points=num_points, seed=seed, **point_options)
    return write_dataset(prediction, cloud, target)


def write_dataset(prediction: Prediction, cloud: PointSet, target: ExportTarget) -> list[str]:
    """Write every view's image and camera, and ``cloud`` as the seed points; returns the written locations."""
    names = source_names(prediction)
    check_source_names(names)  # before the first file is written
    images = present(prediction.processed_images, "processed images")
    paths = []
    relpaths = image_relpaths(names)
    for i, rel in enumerate(relpaths):
        with target.staged(f"{ROOT}/{rel}") as local:
            Image.fromarray(images[i]).save(local, format="PNG")
        paths.append(target.url(f"{ROOT}/{rel}"))
    ply_path = None
    if len(cloud):
        ply_path = "points3D.ply"
        with target.staged(f"{ROOT}/{ply_path}") as local:
            save_point_ply(local, cloud.xyz, cloud.rgb)
        paths.append(target.url(f"{ROOT}/{ply_path}"))
    else:  # a 0-vertex PLY is refused by nerfstudio's reader (Open3D); without one, splatfacto starts at random
        log.warning("nerfstudio: no point passed the confidence threshold; transforms.json names no seed points")
    content = json.dumps(transforms(prediction, relpaths, ply_path), indent=2)
    paths.append(target.write_bytes(f"{ROOT}/transforms.json", content.encode()))
    return paths
