"""glb: read back with trimesh (and the raw glTF for line colours); points against the exact scene geometry."""

from __future__ import annotations

import colorsys
import json
import struct

import numpy as np
import pytest
import trimesh
from export_scenes import oracle_arrays, synthetic_prediction, world_points
from oracle import run_oracle

from da3core.export import export
from da3core.geometry import affine_inverse


def gltf_colors(path, mesh_name: str) -> np.ndarray:
    """COLOR_0 of a mesh's first primitive, decoded straight from the GLB chunks (uint8 RGBA or float)."""
    data = path.read_bytes()
    json_len = struct.unpack("<I", data[12:16])[0]
    gltf = json.loads(data[20 : 20 + json_len])
    binary = data[20 + json_len + 8 :]
    mesh = next(m for m in gltf["meshes"] if m["name"] == mesh_name)
    accessor = gltf["accessors"][mesh["primitives"][0]["attributes"]["COLOR_0"]]
    view = gltf["bufferViews"][accessor["bufferView"]]
    dtype = {5121: np.uint8, 5126: np.float32}[accessor["componentType"]]
    width = {"VEC3": 3, "VEC4": 4}[accessor["type"]]
    start = view.get("byteOffset", 0) + accessor.get("byteOffset", 0)
    return np.frombuffer(binary, dtype, accessor["count"] * width, start).reshape(-1, width)


def srgb_bytes(linear: np.ndarray) -> np.ndarray:
    """Linear RGB in [0, 1] encoded as sRGB bytes (IEC 61966-2-1), what a viewer shows for a glTF vertex colour."""
    encoded = np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * np.power(linear, 1 / 2.4) - 0.055)
    return np.round(encoded * 255).astype(np.uint8)


def expected_points(prediction, capture, keep):
    """Ground-truth points of the ``keep`` pixels after the documented transform, and the transform."""
    pts = world_points(capture)[keep]
    a = np.diag([1.0, -1.0, -1.0, 1.0]) @ np.vstack([capture.extrinsics[0], [0, 0, 0, 1]])
    moved = pts @ a[:3, :3].T + a[:3, 3]
    center = np.median(moved, axis=0)
    a[:3, 3] -= center
    return moved - center, a


def upstream_keep(prediction):
    conf = prediction.conf
    thr = min(max(1.05, np.percentile(conf, 40)), np.percentile(conf, 90))
    return conf >= thr


@pytest.fixture(scope="module")
def scene():
    return synthetic_prediction(n_views=3, width=70, height=56)


@pytest.fixture(scope="module")
def glb(scene, tmp_path_factory):
    root = tmp_path_factory.mktemp("glb")
    paths = export(scene[0], "glb", root)
    return root, paths, trimesh.load(root / "scene.glb")


def test_points_colours_and_frustums_match_the_scene(scene, glb):
    prediction, capture = scene
    root, paths, loaded = glb
    assert paths["glb"][0] == str(root / "scene.glb") and str(root / "scene.jpg") in paths["glb"]
    keep = upstream_keep(prediction)
    truth, align = expected_points(prediction, capture, keep)
    cloud = loaded.geometry["points"]
    assert isinstance(cloud, trimesh.PointCloud) and len(cloud.vertices) == keep.sum()
    np.testing.assert_allclose(cloud.vertices, truth, atol=2e-5)
    # COLOR_0 is linear (glTF): shown through the display's sRGB encoding it gives back the image's bytes.
    np.testing.assert_array_equal(srgb_bytes(gltf_colors(root / "scene.glb", "points")), capture.images[keep])
    np.testing.assert_allclose(loaded.metadata["hf_alignment"], align, atol=1e-6)

    cameras = sorted(k for k in loaded.geometry if k.startswith("camera_"))
    assert cameras == ["camera_000", "camera_001", "camera_002"]
    diag = np.linalg.norm(np.percentile(truth, 95, axis=0) - np.percentile(truth, 5, axis=0))
    for i, name in enumerate(cameras):
        segments = loaded.geometry[name].vertices.reshape(8, 2, 3)
        centre = affine_inverse(capture.extrinsics[i])[:, 3] @ align[:3, :3].T + align[:3, 3]
        np.testing.assert_allclose(segments[:4, 0], np.tile(centre, (4, 1)), atol=1e-5)
        # The corners sit on the z = 0.03 * diag plane of the camera: check through the optical axis distance.
        depth = (segments[:4, 1] - centre) @ (align[:3, :3] @ capture.extrinsics[i][2, :3])
        np.testing.assert_allclose(depth, 0.03 * diag, rtol=1e-4)
        expected = (np.array(colorsys.hsv_to_rgb((i + 0.5) / 3, 0.85, 0.95)) * 255).astype(np.uint8)
        colors = gltf_colors(root / "scene.glb", name)
        np.testing.assert_array_equal(colors[:, :3], np.tile(expected, (len(colors), 1)))


def test_point_colours_are_linear_as_gltf_expects(tmp_path):
    prediction = synthetic_prediction(n_views=3, width=70, height=56)[0]
    prediction.processed_images = np.broadcast_to(
        np.array([128, 10, 255], np.uint8), prediction.processed_images.shape
    ).copy()
    path = export(prediction, "glb", tmp_path, glb={"export_depth_vis": False})["glb"][0]
    colours = gltf_colors(tmp_path / "scene.glb", "points")
    assert colours.dtype == np.float32 and colours.shape[1] == 3
    # Published sRGB decodings: 128 -> 0.2158605 (gamma segment), 10 -> 10/255/12.92 (linear segment), 255 -> 1.
    np.testing.assert_allclose(colours, np.tile([0.2158605, 0.0030353, 1.0], (len(colours), 1)), atol=1e-6)
    np.testing.assert_array_equal(trimesh.load(path).geometry["points"].colors[0], [55, 1, 255, 255])  # trimesh too


def test_scene_jpg_and_depth_vis_are_written_beside_it(glb):
    root, paths, _ = glb
    assert (root / "scene.jpg").read_bytes() == (root / "depth_vis/0000.jpg").read_bytes()
    assert [p for p in paths["glb"] if "depth_vis" in p] == [str(root / f"depth_vis/{i:04d}.jpg") for i in range(3)]


@pytest.mark.parity
def test_point_set_and_frustums_equal_the_reference(scene, glb):
    prediction = scene[0]
    ref = run_oracle(
        "export_reference.py",
        oracle_arrays(prediction),
        formats=["glb"],
    )
    root, _, loaded = glb
    cloud = loaded.geometry["points"]
    assert ref["glb_points"].shape == cloud.vertices.shape
    np.testing.assert_allclose(cloud.vertices, ref["glb_points"], atol=2e-5)
    # Upstream writes the sRGB bytes into COLOR_0, which glTF reads as linear (washed-out points); here the
    # same colours are written linear, so they encode back to the reference's bytes.
    np.testing.assert_array_equal(srgb_bytes(gltf_colors(root / "scene.glb", "points")), ref["glb_colors"])
    assert int(ref["glb_n_paths"]) == 3
    assert (root / "scene.jpg").read_bytes() == ref["glb_scene_jpg"].tobytes()


def test_downsampling_is_seeded_and_keeps_a_subset(scene, tmp_path):
    prediction = scene[0]
    full = trimesh.load(export(prediction, "glb", tmp_path / "full", glb={"export_depth_vis": False})["glb"][0])
    runs = [
        trimesh.load(
            export(
                prediction, "glb", tmp_path / f"s{i}", num_max_points=500, glb={"seed": seed, "export_depth_vis": False}
            )["glb"][0]
        )
        .geometry["points"]
        .vertices
        for i, seed in enumerate((0, 0, 1))
    ]
    assert len(runs[0]) == 500
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])
    full_rows = {tuple(v) for v in full.geometry["points"].vertices.round(5)}
    assert all(tuple(v) in full_rows for v in runs[0].round(5))


def test_without_confidence_every_non_sky_pixel_is_kept(scene, tmp_path):
    prediction, capture = scene
    mono = synthetic_prediction(n_views=3, width=70, height=56, conf=False)[0]
    sky = np.zeros(mono.depth.shape, bool)
    sky[:, :10] = True
    mono.sky = sky
    cloud = trimesh.load(export(mono, "glb", tmp_path, show_cameras=False)["glb"][0]).geometry["points"]
    truth, _ = expected_points(mono, capture, ~sky)
    np.testing.assert_allclose(cloud.vertices, truth, atol=2e-5)


def test_background_filters_drop_black_and_white_pixels_without_touching_the_prediction(scene, tmp_path):
    prediction = synthetic_prediction(n_views=3, width=70, height=56)[0]
    prediction.processed_images = prediction.processed_images.copy()
    prediction.processed_images[:, :5] = 0
    prediction.processed_images[:, -5:] = 255
    prediction.conf[:, :5] = prediction.conf[:, -5:] = 4.0  # confident, so only the filters can drop them
    before = prediction.conf.copy()
    options = {"filter_black_bg": True, "filter_white_bg": True, "export_depth_vis": False}
    cloud = trimesh.load(export(prediction, "glb", tmp_path, glb=options)["glb"][0]).geometry["points"]
    colors = cloud.colors[:, :3]
    assert not (colors == 0).all(axis=1).any() and not (colors == 255).all(axis=1).any()
    np.testing.assert_array_equal(prediction.conf, before)
