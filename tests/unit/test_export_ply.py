"""gs_ply and ply: read back with plyfile (names, dtypes, values), gs_ply against the reference exporter."""

from __future__ import annotations

import numpy as np
import pytest
from export_scenes import synthetic_prediction, world_points
from oracle import run_oracle
from plyfile import PlyData

from da3core.export import export

INRIA_DC = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
            "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]


@pytest.fixture(scope="module")
def scene():
    prediction, capture = synthetic_prediction(n_views=3, width=70, height=56, gaussians=True)
    rng = np.random.default_rng(1)
    gs = prediction.gaussians
    gs.opacities = rng.uniform(0.05, 0.95, len(gs)).astype(np.float32)  # distinct values make the logit check real
    gs.harmonics = rng.normal(size=gs.harmonics.shape).astype(np.float32)
    return prediction, capture


def expected_keep(depth: np.ndarray, interval: int = 1) -> np.ndarray:
    """Independent statement of upstream's pruning: 1-row / 2-column border at 56x70, per-view 90% depth quantile."""
    keep = np.zeros(depth.shape, bool)
    keep[:, 1:-1, 2:-2] = True
    keep &= depth <= np.quantile(depth.reshape(len(depth), -1), 0.9, axis=1)[:, None, None]
    keep[np.arange(len(depth)) % interval != 0] = False
    return keep


def read_vertex(path):
    return PlyData.read(str(path))["vertex"]


def test_gs_ply_layout_and_values(scene, tmp_path):
    prediction, _ = scene
    gs = prediction.gaussians
    paths = export(prediction, "gs_ply", tmp_path)
    assert paths == {"gs_ply": [str(tmp_path / "gs_ply/0000.ply")]}
    vertex = read_vertex(tmp_path / "gs_ply/0000.ply")
    assert list(vertex.data.dtype.names) == INRIA_DC
    assert all(vertex.data.dtype[n] == np.dtype("<f4") for n in INRIA_DC)
    idx = np.flatnonzero(expected_keep(prediction.depth).reshape(-1))
    assert vertex.count == len(idx)
    np.testing.assert_array_equal(np.stack([vertex["x"], vertex["y"], vertex["z"]], 1), gs.means[idx])
    assert not np.any([vertex[n] for n in ("nx", "ny", "nz")])
    np.testing.assert_allclose(1 / (1 + np.exp(-vertex["opacity"])), gs.opacities[idx], rtol=1e-5)
    np.testing.assert_allclose(np.exp(np.stack([vertex[f"scale_{i}"] for i in range(3)], 1)), gs.scales[idx], rtol=1e-6)
    np.testing.assert_array_equal(np.stack([vertex[f"rot_{i}"] for i in range(4)], 1), gs.rotations[idx])
    np.testing.assert_array_equal(np.stack([vertex[f"f_dc_{i}"] for i in range(3)], 1), gs.harmonics[idx, :, 0])


def test_gs_ply_interval_and_higher_bands(scene, tmp_path):
    prediction, _ = scene
    export(prediction, "gs_ply", tmp_path, gs_ply={"gs_views_interval": 2, "sh_dc_only": False})
    vertex = read_vertex(tmp_path / "gs_ply/0000.ply")
    names = list(vertex.data.dtype.names)
    assert names[9:33] == [f"f_rest_{i}" for i in range(24)] and names[33] == "opacity"
    idx = np.flatnonzero(expected_keep(prediction.depth, interval=2).reshape(-1))
    assert vertex.count == len(idx)
    rest = np.stack([vertex[f"f_rest_{i}"] for i in range(24)], 1).reshape(-1, 3, 8)  # channel-major
    np.testing.assert_array_equal(rest, prediction.gaussians.harmonics[idx, :, 1:])


def test_gs_ply_equals_the_reference(scene, tmp_path):
    prediction, _ = scene
    gs = prediction.gaussians
    ref = run_oracle("export_reference.py", dict(
        depth=prediction.depth, conf=prediction.conf, extrinsics=prediction.extrinsics, intrinsics=prediction.intrinsics,
        images=prediction.processed_images, gs_means=gs.means, gs_scales=gs.scales, gs_rotations=gs.rotations,
        gs_harmonics=gs.harmonics, gs_opacities=gs.opacities), formats=["gs_ply"])
    export(prediction, "gs_ply", tmp_path)
    vertex = read_vertex(tmp_path / "gs_ply/0000.ply")
    assert list(vertex.data.dtype.names) == list(ref["gs_ply_names"])
    ours = np.stack([vertex[n] for n in vertex.data.dtype.names], 1)
    assert ours.shape == ref["gs_ply_data"].shape
    np.testing.assert_allclose(ours, ref["gs_ply_data"], rtol=1e-5, atol=1e-6)


def test_point_cloud_ply(scene, tmp_path):
    prediction, capture = scene
    paths = export(prediction, "ply", tmp_path)
    assert paths == {"ply": [str(tmp_path / "points.ply")]}
    vertex = read_vertex(tmp_path / "points.ply")
    assert [(n, vertex.data.dtype[n].str) for n in vertex.data.dtype.names] == [
        ("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "|u1"), ("green", "|u1"), ("blue", "|u1")]
    conf = prediction.conf
    keep = conf >= min(max(1.05, np.percentile(conf, 40)), np.percentile(conf, 90))
    np.testing.assert_allclose(np.stack([vertex["x"], vertex["y"], vertex["z"]], 1), world_points(capture)[keep],
                               atol=1e-5)
    np.testing.assert_array_equal(np.stack([vertex["red"], vertex["green"], vertex["blue"]], 1), capture.images[keep])
