"""Exports of a long scene: a prediction whose image-like arrays are read a frame at a time (``SceneStore.
read_prediction(lazy=True)``), written in memory bounded by the point budget, not by the number of frames.

- Point clouds (glb, ply, colmap, nerfstudio) keep the point rule of :mod:`da3core.export.points`, with two changes
  that make it one pass over the frames: the confidence threshold's percentiles are taken over a fixed-size sample
  of every frame's confidences (``CONF_SAMPLES`` in all, evenly spaced in each frame), and the budget is met by a
  voxel grid instead of a uniform draw: at most one point per voxel, a uniformly random one of the points that fell
  in it (each point draws a seeded priority; a voxel keeps its lowest), the voxel size doubling whenever more voxels
  are occupied than the budget allows. A long walk-through thus keeps its extent evenly covered, and revisited
  places do not become denser. Every kept point is a back-projected pixel, so COLMAP gets its exact observation.
- colmap and nerfstudio cover every frame (one camera and image each); depth_vis and the npz archives are
  written a frame at a time by their usual writers, with the same files as for a prediction in memory.
- glb centres the median of the kept points (not of every selected point) and draws all cameras as one geometry;
  the file is written by glb's own writer (float32 linear-RGB ``COLOR_0``, as for a scene in memory).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import trimesh
from trimesh.path.entities import Line

from da3core.export.colmap import check_colmap_options, write_colmap_model
from da3core.export.depth_vis import depth_vis_image, write_depth_vis
from da3core.export.glb import (
    FRUSTUM_SEGMENTS,
    OPENCV_TO_GLTF,
    frustum_vertices,
    point_geometry,
    save_glb,
    scene_scale,
    view_color,
)
from da3core.export.media import save_jpeg
from da3core.export.nerfstudio import write_dataset
from da3core.export.ply import save_point_ply
from da3core.export.points import PointSet, conf_pool, conf_threshold, filtered_conf, select_points, valid_mask
from da3core.export.target import ExportTarget
from da3core.geometry import as_homogeneous
from da3core.prediction import Prediction, present

CONF_SAMPLES = 1_000_000  # confidences sampled over the whole scene for the threshold's percentiles
COORD_LIMIT = 1 << 20  # voxel coordinates must fit 21 signed bits each, to pack a voxel into one int64
FINE_VOXELS = 1e-4  # the first voxel size, times the spread of the first points (it doubles as needed)
DEFAULT_POINTS = 1_000_000  # the budget where a writer's None means "no cap" for a prediction in memory


def frame_view(prediction: Prediction, index: int) -> Prediction:
    """View ``index`` of a (lazily read) prediction as a one-view prediction in memory."""
    one = slice(index, index + 1)
    pick = lambda values: None if values is None else np.asarray(values[one])  # noqa: E731
    return Prediction(
        depth=np.asarray(prediction.depth[one]),
        conf=pick(prediction.conf),
        sky=pick(prediction.sky),
        extrinsics=pick(prediction.extrinsics),
        intrinsics=pick(prediction.intrinsics),
        processed_images=pick(prediction.processed_images),
        is_metric=prediction.is_metric,
    )


class VoxelSampler:
    """At most ``budget`` points, one per occupied voxel, fed a frame at a time (see the module docstring)."""

    def __init__(self, budget: int, seed: int = 0) -> None:
        self.budget = max(int(budget), 1)
        self.rng = np.random.default_rng(seed)
        self.size = 0.0  # voxel edge, set from the first points
        self.origin = np.zeros(3)
        self.kept: list[tuple[PointSet, np.ndarray]] = []  # (points, priorities) not yet merged, then merged
        self.count = 0

    def add(self, points: PointSet) -> None:
        """Feed some points; memory stays within about twice the budget."""
        if not len(points):
            return
        if self.size == 0.0:
            self.origin = np.median(points.xyz, axis=0).astype(np.float64)
            self.size = FINE_VOXELS * max(float(np.median(np.linalg.norm(points.xyz - self.origin, axis=1))), 1e-12)
        self.kept.append((points, self.rng.random(len(points))))
        self.count += len(points)
        if self.count > 2 * self.budget:
            self._merge()

    def _keys(self, xyz: np.ndarray) -> np.ndarray:
        coords = np.floor((xyz - self.origin) / self.size)
        while np.abs(coords).max(initial=0) >= COORD_LIMIT:  # too fine for the packing: coarsen first
            self.size *= 2
            coords = np.floor((xyz - self.origin) / self.size)
        c = coords.astype(np.int64) + COORD_LIMIT
        return (c[:, 0] << 42) | (c[:, 1] << 21) | c[:, 2]

    def _merge(self) -> None:
        fields = ("xyz", "rgb", "view", "pixel")
        points = PointSet(*(np.concatenate([getattr(p, f) for p, _ in self.kept]) for f in fields))
        priority = np.concatenate([q for _, q in self.kept])
        while True:
            keys = self._keys(points.xyz)
            order = np.lexsort((priority, keys))
            first = np.ones(len(order), dtype=bool)
            first[1:] = keys[order][1:] != keys[order][:-1]
            keep = order[first]
            if len(keep) <= self.budget:
                break
            self.size *= 2
        self.kept = [(points.take(keep), priority[keep])]
        self.count = len(keep)

    def points(self) -> PointSet:
        """The kept points in view-major, row-major pixel order (as the in-memory selection orders them)."""
        if not self.kept:
            return PointSet(
                np.zeros((0, 3), np.float32),
                np.zeros((0, 3), np.uint8),
                np.zeros(0, np.int32),
                np.zeros((0, 2), np.int32),
            )
        self._merge()
        cloud = self.kept[0][0]
        return cloud.take(np.lexsort((cloud.pixel[:, 0], cloud.pixel[:, 1], cloud.view)))


def sampled_threshold(
    prediction: Prediction,
    percentile: float,
    floor: float | None,
    ensure: float | None,
    filter_black_bg: bool = False,
    filter_white_bg: bool = False,
) -> float | None:
    """The point rule's confidence threshold from ``CONF_SAMPLES`` confidences spread evenly over all frames."""
    if prediction.conf is None:
        return None
    per_frame = math.ceil(CONF_SAMPLES / len(prediction))
    samples = []
    for i in range(len(prediction)):
        view = frame_view(prediction, i)
        pool = conf_pool(filtered_conf(view, filter_black_bg, filter_white_bg), view.sky).reshape(-1)
        samples.append(pool[np.linspace(0, len(pool) - 1, min(per_frame, len(pool))).astype(np.int64)])
    return conf_threshold(np.concatenate(samples), percentile, floor, ensure)


def voxel_points(
    prediction: Prediction,
    num_max_points: int | None = 1_000_000,
    conf_thresh: float | None = 1.05,
    conf_thresh_percentile: float = 40.0,
    ensure_thresh_percentile: float | None = 90.0,
    filter_black_bg: bool = False,
    filter_white_bg: bool = False,
    seed: int = 0,
) -> PointSet:
    """The points of :func:`~da3core.export.points.confident_points`, read a frame at a time and voxel-downsampled."""
    filters = {"filter_black_bg": filter_black_bg, "filter_white_bg": filter_white_bg}
    threshold = sampled_threshold(prediction, conf_thresh_percentile, conf_thresh, ensure_thresh_percentile, **filters)
    sampler = VoxelSampler(num_max_points or DEFAULT_POINTS, seed)
    for i in range(len(prediction)):
        view = frame_view(prediction, i)
        cloud = select_points(view, valid_mask(view, threshold=threshold, **filters))
        cloud.view[:] = i
        sampler.add(cloud.take(np.isfinite(cloud.xyz).all(axis=1)))
    return sampler.points()


def write_ply_frames(prediction: Prediction, target: ExportTarget, **options: Any) -> list[str]:
    """``points.ply`` of a long scene (options: see :func:`voxel_points`)."""
    cloud = voxel_points(prediction, **options)
    with target.staged("points.ply") as local:
        save_point_ply(local, cloud.xyz, cloud.rgb)
    return [target.url("points.ply")]


def write_colmap_frames(
    prediction: Prediction,
    target: ExportTarget,
    conf_thresh_percentile: float = 40.0,
    num_max_points: int | None = 1_000_000,
    process_res_method: str = "upper_bound_resize",
    seed: int = 0,
) -> list[str]:
    """``sparse/0`` of a long scene: every view, and voxel-downsampled points under colmap's rule (no floor or cap)."""
    check_colmap_options(process_res_method)
    cloud = voxel_points(prediction, num_max_points, None, conf_thresh_percentile, None, seed=seed)
    return write_colmap_model(prediction, cloud, target)


def write_nerfstudio_frames(
    prediction: Prediction, target: ExportTarget, num_points: int = 200_000, seed: int = 0, **point_options: Any
) -> list[str]:
    """The nerfstudio dataset of a long scene: every view, voxel-downsampled seed points."""
    return write_dataset(prediction, voxel_points(prediction, num_points, seed=seed, **point_options), target)


def write_glb_frames(
    prediction: Prediction,
    target: ExportTarget,
    export_depth_vis: bool = True,
    num_max_points: int = 1_000_000,
    show_cameras: bool = True,
    camera_size: float = 0.03,
    seed: int = 0,
    **point_rule: Any,
) -> list[str]:
    """``scene.glb`` of a long scene (points and frustums as glb.build_scene places them), depth_vis/, scene.jpg."""
    cloud = voxel_points(prediction, num_max_points, seed=seed, **point_rule)
    to_gltf = OPENCV_TO_GLTF @ as_homogeneous(
        np.asarray(present(prediction.extrinsics, "extrinsics")[0], dtype=np.float64)
    )
    xyz = trimesh.transform_points(cloud.xyz, to_gltf)
    align = np.eye(4)
    align[:3, 3] = -(np.median(xyz, axis=0) if len(xyz) else np.zeros(3))
    align = align @ to_gltf
    scene = trimesh.Scene()
    scene.metadata["hf_alignment"] = align.tolist()
    if len(cloud):
        scene.add_geometry(point_geometry(trimesh.transform_points(cloud.xyz, align), cloud.rgb), geom_name="points")
    if show_cameras:
        scene.add_geometry(_frustums(prediction, scene_scale(cloud.xyz) * camera_size, align), geom_name="cameras")
    with target.staged("scene.glb") as local:
        save_glb(scene, local)  # glb's writer: the same float32 POSITION and linear-RGB COLOR_0 as a scene in memory
    if not export_depth_vis:
        return [target.url("scene.glb")]
    with target.staged("scene.jpg") as local:
        save_jpeg(local, depth_vis_image(prediction, 0))
    return [target.url("scene.glb"), *write_depth_vis(prediction, target), target.url("scene.jpg")]


def _frustums(prediction: Prediction, size: float, align: np.ndarray) -> trimesh.path.Path3D:
    """Every camera's frustum in one geometry (thousands of cameras as one node), each in its own colour."""
    n, height, width = prediction.depth.shape
    intrinsics, extrinsics = present(prediction.intrinsics, "intrinsics"), present(prediction.extrinsics, "extrinsics")
    vertices = np.concatenate([frustum_vertices(intrinsics[i], extrinsics[i], height, width, size) for i in range(n)])
    entities = [Line(points=[5 * i + a, 5 * i + b]) for i in range(n) for a, b in FRUSTUM_SEGMENTS]
    colors = np.repeat([np.append(view_color(i, n), 255) for i in range(n)], len(FRUSTUM_SEGMENTS), axis=0)
    return trimesh.path.Path3D(
        entities=entities, vertices=trimesh.transform_points(vertices, align), colors=colors, process=False
    )
