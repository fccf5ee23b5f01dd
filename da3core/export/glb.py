"""``glb``: ``scene.glb`` (coloured point cloud + camera frustums, glTF axes) with ``scene.jpg`` and ``depth_vis/``.

The transform ``A = T_center @ M @ w2c_0`` (stored as ``scene.metadata["hf_alignment"]``) maps prediction
world points into the file: ``w2c_0`` puts view 0's camera at the origin, ``M = diag(1, -1, -1, 1)`` turns
OpenCV camera axes into glTF's (y up, z backward), and ``T_center`` moves the median of all selected
points (before downsampling) to the origin. No rescaling.
"""

from __future__ import annotations

import colorsys
from typing import Any

import numpy as np
import trimesh
from trimesh.path.entities import Line

from da3core.export.depth_vis import depth_vis_image, write_depth_vis
from da3core.export.media import save_jpeg
from da3core.export.points import confident_points
from da3core.export.target import ExportTarget
from da3core.geometry import affine_inverse, as_homogeneous
from da3core.prediction import Prediction

OPENCV_TO_GLTF = np.diag([1.0, -1.0, -1.0, 1.0])
# Frustum polylines: camera centre (vertex 0) to the four image corners (1..4), then the image rectangle.
FRUSTUM_SEGMENTS = [(0, 1), (0, 2), (0, 3), (0, 4), (1, 2), (2, 3), (3, 4), (4, 1)]


def alignment_transform(w2c0: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(4, 4) ``A``: view-0 camera frame, glTF axes, median of ``points`` (P, 3) world at the origin."""
    a = OPENCV_TO_GLTF @ as_homogeneous(np.asarray(w2c0, dtype=np.float64))
    center = np.median(trimesh.transform_points(points, a), axis=0) if len(points) else np.zeros(3)
    shift = np.eye(4)
    shift[:3, 3] = -center
    return shift @ a


def view_color(index: int, count: int) -> np.ndarray:
    """Distinct RGB uint8 colour of camera ``index`` of ``count`` (hue spread over the circle)."""
    rgb = colorsys.hsv_to_rgb((index + 0.5) / max(count, 1), 0.85, 0.95)
    return (np.array(rgb) * 255).astype(np.uint8)


def frustum_vertices(intrinsics: np.ndarray, w2c: np.ndarray, height: int, width: int, size: float) -> np.ndarray:
    """(5, 3) world points: camera centre and the image corners unprojected to depth ``size``."""
    corners = np.array([[0, 0, 1], [width - 1, 0, 1], [width - 1, height - 1, 1], [0, height - 1, 1]], float)
    rays = corners @ np.linalg.inv(np.asarray(intrinsics, dtype=np.float64)).T
    cam = np.concatenate([np.zeros((1, 3)), rays / rays[:, 2:3] * size])
    c2w = affine_inverse(np.asarray(w2c, dtype=np.float64)[:3])
    return cam @ c2w[:, :3].T + c2w[:, 3]


def scene_scale(points: np.ndarray, fallback: float = 1.0) -> float:
    """Length of the 5th-95th percentile box diagonal of ``points`` (P, 3); ``fallback`` if degenerate."""
    if len(points) < 2:
        return fallback
    diag = float(np.linalg.norm(np.percentile(points, 95, axis=0) - np.percentile(points, 5, axis=0)))
    return diag if np.isfinite(diag) and diag > 0 else fallback


def build_scene(
    prediction: Prediction,
    num_max_points: int = 1_000_000,
    show_cameras: bool = True,
    camera_size: float = 0.03,
    seed: int = 0,
    **point_rule: Any,
) -> trimesh.Scene:
    """The GLB scene: geometry ``points`` (PointCloud) and ``camera_NNN`` (Path3D, 8 lines each).

    ``point_rule``: the confidence/background options of :func:`~da3core.export.points.confident_points`;
    the frustums are ``camera_size`` times the scene's 5-95 percentile diagonal deep.
    """
    cloud = confident_points(prediction, num_max_points=None, **point_rule)
    align = alignment_transform(prediction.extrinsics[0], cloud.xyz)
    cloud.xyz = trimesh.transform_points(cloud.xyz, align).astype(np.float32)
    cloud = cloud.take(np.isfinite(cloud.xyz).all(axis=1)).downsample(num_max_points, seed)

    scene = trimesh.Scene()
    scene.metadata["hf_alignment"] = align.tolist()
    if len(cloud):
        scene.add_geometry(trimesh.PointCloud(cloud.xyz, colors=cloud.rgb), geom_name="points")
    if show_cameras:
        size = scene_scale(cloud.xyz) * camera_size
        n, height, width = prediction.depth.shape
        lines = [Line(points=list(seg)) for seg in FRUSTUM_SEGMENTS]
        for i in range(n):
            verts = frustum_vertices(prediction.intrinsics[i], prediction.extrinsics[i], height, width, size)
            color = np.append(view_color(i, n), 255)
            path = trimesh.path.Path3D(entities=[line.copy() for line in lines],
                                       vertices=trimesh.transform_points(verts, align),
                                       colors=np.tile(color, (len(lines), 1)), process=False)
            scene.add_geometry(path, geom_name=f"camera_{i:03d}")
    return scene


def write_glb(prediction: Prediction, target: ExportTarget, export_depth_vis: bool = True, **options: Any) -> list[str]:
    """Write ``scene.glb`` (options: see :func:`build_scene`), plus ``depth_vis/`` and ``scene.jpg``."""
    scene = build_scene(prediction, **options)
    with target.staged("scene.glb") as local:
        scene.export(local, file_type="glb")
    paths = [target.url("scene.glb")]
    if export_depth_vis:
        paths += write_depth_vis(prediction, target)
        with target.staged("scene.jpg") as local:
            save_jpeg(local, depth_vis_image(prediction, 0))
        paths.append(target.url("scene.jpg"))
    return paths
