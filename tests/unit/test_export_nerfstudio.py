"""nerfstudio: transforms.json read as nerfstudio reads it (OpenGL c2w) must reproject the scene exactly."""

from __future__ import annotations

import json

import numpy as np
from export_scenes import synthetic_prediction, world_points
from PIL import Image
from plyfile import PlyData

from da3core.export import export


def test_transforms_reproject_the_scene_and_point_cloud_is_decimated(tmp_path):
    prediction, capture = synthetic_prediction(n_views=3, width=70, height=56)
    prediction.source_names = ["IMG_1.JPG", "IMG_2.JPG", "IMG_3.JPG"]
    paths = export(prediction, "nerfstudio", tmp_path, nerfstudio={"num_points": 2000})["nerfstudio"]
    root = tmp_path / "nerfstudio"
    assert str(root / "transforms.json") in paths and str(root / "points3D.ply") in paths
    meta = json.loads((root / "transforms.json").read_text())
    assert meta["camera_model"] == "OPENCV" and meta["ply_file_path"] == "points3D.ply"
    assert [f["file_path"] for f in meta["frames"]] == ["images/IMG_1.png", "images/IMG_2.png", "images/IMG_3.png"]

    points = world_points(capture)
    rows, cols = np.mgrid[0:56:5, 0:70:7]
    for i, frame in enumerate(meta["frames"]):
        image = Image.open(root / frame["file_path"])
        assert image.size == (frame["w"], frame["h"]) == (70, 56)
        np.testing.assert_array_equal(np.asarray(image), capture.images[i])
        # nerfstudio: c2w with OpenGL camera axes (x right, y up, z back); pixel = f * (x, -y) / -z + c.
        w2c = np.linalg.inv(np.array(frame["transform_matrix"]))
        cam = points[i][rows, cols] @ w2c[:3, :3].T + w2c[:3, 3]
        u = frame["fl_x"] * cam[..., 0] / -cam[..., 2] + frame["cx"]
        v = frame["fl_y"] * -cam[..., 1] / -cam[..., 2] + frame["cy"]
        np.testing.assert_allclose(u, cols, atol=1e-3)
        np.testing.assert_allclose(v, rows, atol=1e-3)

    vertex = PlyData.read(str(root / "points3D.ply"))["vertex"]
    assert vertex.count == 2000 and {"x", "y", "z", "red", "green", "blue"} <= set(vertex.data.dtype.names)
    xyz = np.stack([vertex["x"], vertex["y"], vertex["z"]], 1)
    lo, hi = points.reshape(-1, 3).min(0), points.reshape(-1, 3).max(0)
    assert ((xyz >= lo - 1e-4) & (xyz <= hi + 1e-4)).all()
