"""``ply``: ``points.ply``, the confident pixels as a coloured point cloud in the prediction's world frame.

Binary little-endian PLY, element ``vertex`` with ``x y z`` (float32) and ``red green blue`` (uint8), the
layout Open3D, CloudCompare, MeshLab and nerfstudio read. Points follow :mod:`da3core.export.points`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from plyfile import PlyData, PlyElement

from da3core.export.points import confident_points
from da3core.export.target import ExportTarget
from da3core.prediction import Prediction

log = logging.getLogger(__name__)


def save_point_ply(path: str | Path, xyz: np.ndarray, rgb: np.ndarray) -> None:
    """Write (P, 3) points and (P, 3) uint8 colours as a binary PLY."""
    vertex = np.empty(
        len(xyz), dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")]
    )
    for j, name in enumerate(("x", "y", "z")):
        vertex[name] = xyz[:, j]
    for j, name in enumerate(("red", "green", "blue")):
        vertex[name] = rgb[:, j]
    PlyData([PlyElement.describe(vertex, "vertex")]).write(str(path))


def write_ply(prediction: Prediction, target: ExportTarget, **options: Any) -> list[str]:
    """Write ``points.ply`` (options: see :func:`confident_points`)."""
    cloud = confident_points(prediction, **options)
    if not len(cloud):  # still written, as asked: a valid PLY, though some readers (Open3D) refuse 0 vertices
        log.warning("ply: no point passed the confidence threshold; points.ply has 0 vertices")
    with target.staged("points.ply") as local:
        save_point_ply(local, cloud.xyz, cloud.rgb)
    return [target.url("points.ply")]
