"""Exports of a long scene (a prediction read a frame at a time) follow the conventions of a scene in memory."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import trimesh
from export_scenes import synthetic_prediction

from da3core.export import export
from da3core.export.long_scene import voxel_points
from da3core.export.registry import reads_frames
from da3core.prediction import Prediction

GL_FLOAT = 5126


class FrameReader:
    """An array that is only read by slices, as a store's lazily read prediction is."""

    def __init__(self, array: np.ndarray) -> None:
        self.array, self.shape, self.dtype = array, array.shape, array.dtype

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, index):
        return self.array[index]


@pytest.fixture(scope="module")
def lazy_prediction() -> Prediction:
    prediction = synthetic_prediction(n_views=3, width=70, height=56)[0]
    prediction.depth = FrameReader(prediction.depth)
    assert reads_frames(prediction)
    return prediction


def glb_parts(path) -> tuple[dict, bytes]:
    """The glTF JSON and binary chunk of a GLB file."""
    data = path.read_bytes()
    json_len = struct.unpack("<I", data[12:16])[0]
    return json.loads(data[20 : 20 + json_len]), data[20 + json_len + 8 :]


def accessor_array(gltf: dict, binary: bytes, index: int) -> tuple[dict, np.ndarray]:
    accessor = gltf["accessors"][index]
    view = gltf["bufferViews"][accessor["bufferView"]]
    dtype = {5121: np.uint8, 5126: np.float32}[accessor["componentType"]]
    width = {"VEC3": 3, "VEC4": 4}[accessor["type"]]
    start = view.get("byteOffset", 0) + accessor.get("byteOffset", 0)
    return accessor, np.frombuffer(binary, dtype, accessor["count"] * width, start).reshape(-1, width)


def srgb_to_linear(rgb: np.ndarray) -> np.ndarray:
    """sRGB bytes decoded to linear RGB (IEC 61966-2-1)."""
    c = rgb.astype(np.float64) / 255.0
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def test_long_scene_glb_colours_are_linear_float_like_a_scene_in_memory(lazy_prediction, tmp_path):
    paths = export(lazy_prediction, "glb", tmp_path, num_max_points=800, glb={"export_depth_vis": False})
    assert [p.rsplit("/", 1)[-1] for p in paths["glb"]] == ["scene.glb"]
    gltf, binary = glb_parts(tmp_path / "scene.glb")
    mesh = next(m for m in gltf["meshes"] if m["name"] == "points")
    attributes = mesh["primitives"][0]["attributes"]
    color, rgb = accessor_array(gltf, binary, attributes["COLOR_0"])
    assert (color["componentType"], color["type"]) == (GL_FLOAT, "VEC3")
    position, xyz = accessor_array(gltf, binary, attributes["POSITION"])
    assert position["componentType"] == GL_FLOAT

    cloud = voxel_points(lazy_prediction, 800)  # the same seeded selection, in the same order
    assert 0 < len(cloud) == len(rgb) <= 800
    np.testing.assert_allclose(rgb, srgb_to_linear(cloud.rgb), atol=1e-6)

    loaded = trimesh.load(tmp_path / "scene.glb", force="scene")  # the reader viewers' tooling uses
    points = next(g for g in loaded.geometry.values() if isinstance(g, trimesh.PointCloud))
    assert len(points.vertices) == len(cloud)
    np.testing.assert_allclose(np.asarray(points.vertices), xyz, atol=1e-6)
    assert any(isinstance(g, trimesh.path.Path3D) for g in loaded.geometry.values())  # the camera frustums


def test_long_scene_and_in_memory_glb_write_colours_the_same_way(lazy_prediction, tmp_path):
    in_memory = Prediction(**{**vars(lazy_prediction), "depth": lazy_prediction.depth.array})
    export(in_memory, "glb", tmp_path / "memory", glb={"export_depth_vis": False})
    export(lazy_prediction, "glb", tmp_path / "long", glb={"export_depth_vis": False})
    kinds = []
    for folder in ("memory", "long"):
        gltf, binary = glb_parts(tmp_path / folder / "scene.glb")
        mesh = next(m for m in gltf["meshes"] if m["name"] == "points")
        accessor, rgb = accessor_array(gltf, binary, mesh["primitives"][0]["attributes"]["COLOR_0"])
        kinds.append((accessor["componentType"], accessor["type"]))
        assert rgb.max() <= 1.0
    assert kinds[0] == kinds[1] == (GL_FLOAT, "VEC3")
