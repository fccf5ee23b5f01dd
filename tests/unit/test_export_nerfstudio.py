"""nerfstudio: transforms.json read as nerfstudio reads it must cast each pixel's ray through its scene point.

nerfstudio's definitions (docs "Data conventions" and ``Cameras.generate_rays``): ``transform_matrix`` is the
camera-to-world pose with OpenGL camera axes (x right, y up, z back); the ray of pixel (row, col) starts at the
camera centre and has camera-frame direction ((col + 0.5 - cx) / fl_x, -(row + 0.5 - cy) / fl_y, -1), i.e. pixel
centres sit at +0.5 as in COLMAP. This project puts them at integer coordinates (OpenCV-style, as DA3 does).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from export_scenes import synthetic_prediction, world_points
from PIL import Image
from plyfile import PlyData

from da3core.errors import is_user_error, user_message
from da3core.export import export
from da3core.export.nerfstudio import NerfstudioNameError, check_source_names
from da3core.geometry import project_points


def nerfstudio_rays(frame: dict, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(origins, unit directions) of the rays nerfstudio casts through pixels (rows, cols) of ``frame``."""
    c2w = np.array(frame["transform_matrix"])
    x = (cols + 0.5 - frame["cx"]) / frame["fl_x"]
    y = -(rows + 0.5 - frame["cy"]) / frame["fl_y"]
    dirs = np.stack([x, y, -np.ones_like(x)], -1) @ c2w[:3, :3].T
    return np.broadcast_to(c2w[:3, 3], dirs.shape), dirs / np.linalg.norm(dirs, axis=-1, keepdims=True)


def test_every_pixels_ray_passes_through_its_scene_point_and_point_cloud_is_decimated(tmp_path):
    prediction, capture = synthetic_prediction(n_views=3, width=70, height=56)
    prediction.source_names = ["IMG_1.JPG", "IMG_2.JPG", "IMG_3.JPG"]
    paths = export(prediction, "nerfstudio", tmp_path, nerfstudio={"num_points": 2000})["nerfstudio"]
    root = tmp_path / "nerfstudio"
    assert str(root / "transforms.json") in paths and str(root / "points3D.ply") in paths
    meta = json.loads((root / "transforms.json").read_text())
    assert meta["camera_model"] == "OPENCV" and meta["ply_file_path"] == "points3D.ply"
    assert [f["file_path"] for f in meta["frames"]] == ["images/IMG_1.png", "images/IMG_2.png", "images/IMG_3.png"]

    points = world_points(capture)
    rows, cols = np.mgrid[0:56, 0:70]
    for i, frame in enumerate(meta["frames"]):
        image = Image.open(root / frame["file_path"])
        assert image.size == (frame["w"], frame["h"]) == (70, 56)
        np.testing.assert_array_equal(np.asarray(image), capture.images[i])
        # OpenCV convention: the scene point of pixel (row, col) projects to exactly (col, row) ...
        uv, _ = project_points(points[i], capture.intrinsics[i], capture.extrinsics[i])
        np.testing.assert_allclose(uv, np.stack([cols, rows], -1), atol=1e-6)
        # ... and nerfstudio's ray for that same pixel passes through it (half a pixel off, rays miss by ~0.1).
        origins, dirs = nerfstudio_rays(frame, rows, cols)
        to_point = points[i] - origins
        miss = np.linalg.norm(to_point - (to_point * dirs).sum(-1, keepdims=True) * dirs, axis=-1)
        assert miss.max() < 1e-5 * np.linalg.norm(to_point, axis=-1).max()

    vertex = PlyData.read(str(root / "points3D.ply"))["vertex"]
    assert vertex.count == 2000 and {"x", "y", "z", "red", "green", "blue"} <= set(vertex.data.dtype.names)
    xyz = np.stack([vertex["x"], vertex["y"], vertex["z"]], 1)
    lo, hi = points.reshape(-1, 3).min(0), points.reshape(-1, 3).max(0)
    assert ((xyz >= lo - 1e-4) & (xyz <= hi + 1e-4)).all()


def test_a_scene_without_confident_points_names_no_seed_points(tmp_path, caplog):
    """nerfstudio reads ``ply_file_path`` with Open3D, which refuses a 0-vertex PLY: none is named or written."""
    prediction, _ = synthetic_prediction(n_views=2, width=70, height=56)
    prediction.depth[:] = np.nan  # no valid pixel: no point passes
    paths = export(prediction, "nerfstudio+ply", tmp_path)
    root = tmp_path / "nerfstudio"
    meta = json.loads((root / "transforms.json").read_text())
    assert "ply_file_path" not in meta and len(meta["frames"]) == 2
    assert not (root / "points3D.ply").exists() and str(root / "points3D.ply") not in paths["nerfstudio"]
    assert PlyData.read(str(tmp_path / "points.ply"))["vertex"].count == 0  # asked for: written, and said so
    assert "names no seed points" in caplog.text and "points.ply has 0 vertices" in caplog.text


def test_colliding_file_stems_are_a_one_line_user_error_before_any_file(tmp_path):
    prediction = synthetic_prediction(n_views=3, width=70, height=56)[0]
    prediction.source_names = ["frame_0000.jpg", "frame_0001.jpg", "frame_0000.png"]
    with pytest.raises(NerfstudioNameError) as info:
        export(prediction, "npz+nerfstudio", tmp_path)
    assert is_user_error(info.value) and isinstance(info.value, ValueError)
    line = user_message(info.value)
    assert (
        "\n" not in line and "frame_0000.jpg and frame_0000.png would both be nerfstudio/images/frame_0000.png" in line
    )
    assert "rename one of them" in line
    assert not any(tmp_path.iterdir())  # refused before npz (or any image) was written


def test_source_names_can_be_checked_before_inference():
    check_source_names(["a.jpg", "b.jpg", "sub/c.png"])
    check_source_names([])
    with pytest.raises(NerfstudioNameError, match="x/a.jpg and y/a.png would both be nerfstudio/images/a.png"):
        check_source_names(["x/a.jpg", "b.jpg", "y/a.png"])
