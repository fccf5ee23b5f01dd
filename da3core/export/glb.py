"""``glb``: ``scene.glb`` (coloured point cloud + camera frustums, glTF axes) with ``scene.jpg`` and ``depth_vis/``.

The transform ``A = T_center @ M @ w2c_0`` (stored as ``scene.metadata["hf_alignment"]``) maps prediction
world points into the file: ``w2c_0`` puts view 0's camera at the origin, ``M = diag(1, -1, -1, 1)`` turns
OpenCV camera axes into glTF's (y up, z backward), and ``T_center`` moves the median of all selected
points (before downsampling) to the origin. No rescaling.
"""

from __future__ import annotations

import colorsys
from pathlib import Path
from typing import Any

import numpy as np
import trimesh
from trimesh.exchange.gltf import export_glb
from trimesh.path.entities import Line

from da3core.export.depth_vis import depth_vis_image, write_depth_vis
from da3core.export.media import save_jpeg
from da3core.export.points import confident_points
from da3core.export.target import ExportTarget
from da3core.geometry import affine_inverse, as_homogeneous
from da3core.prediction import Prediction, present

OPENCV_TO_GLTF = np.diag([1.0, -1.0, -1.0, 1.0])
# Frustum polylines: camera centre (vertex 0) to the four image corners (1..4), then the image rectangle.
FRUSTUM_SEGMENTS = [(0, 1), (0, 2), (0, 3), (0, 4), (1, 2), (2, 3), (3, 4), (4, 1)]
GL_FLOAT, GL_POINTS = 5126, 0
# glTF vertex colours are linear RGB (viewers apply the display's sRGB encoding themselves): image bytes are sRGB,
# so each byte is decoded with the sRGB transfer function (IEC 61966-2-1) and written as a float.
_SRGB = np.arange(256) / 255.0
SRGB_TO_LINEAR = np.where(_SRGB <= 0.04045, _SRGB / 12.92, ((_SRGB + 0.055) / 1.055) ** 2.4).astype(np.float32)
# The material trimesh gives its point primitives, so viewers shade our points as they did trimesh's.
POINT_MATERIAL = {"pbrMetallicRoughness": {"baseColorFactor": [1, 1, 1, 1], "metallicFactor": 0, "roughnessFactor": 0}}


def gltf_frame(w2c0: np.ndarray) -> np.ndarray:
    """(4, 4) ``M @ w2c_0``: world points into view 0's camera frame with glTF axes (before centring)."""
    return OPENCV_TO_GLTF @ as_homogeneous(np.asarray(w2c0, dtype=np.float64))


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
    lo, hi = np.percentile(points, [5, 95], axis=0)  # one partition per axis for both percentiles
    diag = float(np.linalg.norm(hi - lo))
    return diag if np.isfinite(diag) and diag > 0 else fallback


def point_geometry(xyz: np.ndarray, rgb: np.ndarray) -> trimesh.PointCloud:
    """Points with their images' sRGB uint8 colours (opaque); :func:`save_glb` writes them as linear float RGB."""
    rgba = np.concatenate([rgb, np.full((len(rgb), 1), 255, np.uint8)], axis=1)
    return trimesh.PointCloud(xyz, colors=rgba)


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
    extrinsics, intrinsics = present(prediction.extrinsics, "extrinsics"), present(prediction.intrinsics, "intrinsics")
    frame = gltf_frame(extrinsics[0])
    # Points come out of the selection already in the glTF frame; only the centring shift is left, and it is
    # applied after downsampling (the median still sees every selected point).
    cloud = confident_points(prediction, num_max_points=None, frame=frame, **point_rule)
    if not np.isfinite(cloud.xyz).all():
        cloud = cloud.take(np.isfinite(cloud.xyz).all(axis=1))
    center = np.median(cloud.xyz, axis=0).astype(np.float64) if len(cloud) else np.zeros(3)
    align = np.eye(4)
    align[:3, 3] = -center
    align = align @ frame
    cloud = cloud.downsample(num_max_points, seed)
    cloud.xyz = (cloud.xyz - center).astype(np.float32)

    scene = trimesh.Scene()
    scene.metadata["hf_alignment"] = align.tolist()
    if len(cloud):
        scene.add_geometry(point_geometry(cloud.xyz, cloud.rgb), geom_name="points")
    if show_cameras:
        size = scene_scale(cloud.xyz) * camera_size
        n, height, width = prediction.depth.shape
        lines = [Line(points=list(seg)) for seg in FRUSTUM_SEGMENTS]
        for i in range(n):
            verts = frustum_vertices(intrinsics[i], extrinsics[i], height, width, size)
            color = np.append(view_color(i, n), 255)
            path = trimesh.path.Path3D(
                entities=[line.copy() for line in lines],
                vertices=trimesh.transform_points(verts, align),
                colors=np.tile(color, (len(lines), 1)),
                process=False,
            )
            scene.add_geometry(path, geom_name=f"camera_{i:03d}")
    return scene


def save_glb(scene: trimesh.Scene, path: str | Path) -> None:
    """Write ``scene`` as GLB through trimesh, its point clouds straight from their arrays.

    trimesh's own point writer round-trips every coordinate and colour through Python lists (about 0.5 s
    per million points); here trimesh writes the rest of the scene and each point cloud is added as a
    POINTS primitive (float32 POSITION, float32 linear RGB COLOR_0 from the sRGB colours) through its
    ``buffer_postprocessor`` hook.
    """
    clouds = {name: g for name, g in scene.geometry.items() if isinstance(g, trimesh.PointCloud)}
    rest = trimesh.Scene(geometry={n: g for n, g in scene.geometry.items() if n not in clouds}, metadata=scene.metadata)

    def add_clouds(buffers: dict, tree: dict) -> None:
        for name, cloud in clouds.items():
            xyz = np.ascontiguousarray(cloud.vertices, dtype=np.float32)
            rgb = SRGB_TO_LINEAR[np.asarray(cloud.colors, dtype=np.uint8)[:, :3]]
            attributes = {}
            columns = np.ascontiguousarray(xyz.T)  # per-axis bounds: reducing rows of 3 is ~20x slower
            for key, data, kind, extra in (
                ("POSITION", xyz, "VEC3", {"min": columns.min(axis=1).tolist(), "max": columns.max(axis=1).tolist()}),
                ("COLOR_0", rgb, "VEC3", {}),
            ):
                buffers[f"da3pipe-{name}-{key}"] = data.tobytes()  # 12 bytes a point each: 4-byte aligned
                accessor = {
                    "bufferView": len(buffers) - 1,
                    "byteOffset": 0,
                    "count": len(data),
                    "type": kind,
                    "componentType": GL_FLOAT,
                    **extra,
                }
                tree["accessors"][f"da3pipe-{name}-{key}"] = accessor
                attributes[key] = len(tree["accessors"]) - 1
            tree["materials"].append(POINT_MATERIAL)
            tree["meshes"].append(
                {
                    "name": name,
                    "primitives": [
                        {"attributes": attributes, "mode": GL_POINTS, "material": len(tree["materials"]) - 1}
                    ],
                }
            )
            tree.setdefault("nodes", []).append({"name": name, "mesh": len(tree["meshes"]) - 1})
            tree["scenes"][0].setdefault("nodes", []).append(len(tree["nodes"]) - 1)

    Path(path).write_bytes(export_glb(rest, buffer_postprocessor=add_clouds))


def write_glb(prediction: Prediction, target: ExportTarget, export_depth_vis: bool = True, **options: Any) -> list[str]:
    """Write ``scene.glb`` (options: see :func:`build_scene`), plus ``depth_vis/`` and ``scene.jpg``."""
    scene = build_scene(prediction, **options)
    with target.staged("scene.glb") as local:
        save_glb(scene, local)
    paths = [target.url("scene.glb")]
    if export_depth_vis:
        paths += write_depth_vis(prediction, target)
        with target.staged("scene.jpg") as local:
            save_jpeg(local, depth_vis_image(prediction, 0))
        paths.append(target.url("scene.jpg"))
    return paths
