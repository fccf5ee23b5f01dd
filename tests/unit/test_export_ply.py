"""gs_ply and ply: read back with plyfile (names, dtypes, values), gs_ply against the reference exporter."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from export_scenes import oracle_arrays, synthetic_prediction, world_points
from oracle import run_oracle
from plyfile import PlyData

from da3core.export import FORMATS, export
from da3core.render.sh import eval_sh

INRIA_DC = [
    "x",
    "y",
    "z",
    "nx",
    "ny",
    "nz",
    "f_dc_0",
    "f_dc_1",
    "f_dc_2",
    "opacity",
    "scale_0",
    "scale_1",
    "scale_2",
    "rot_0",
    "rot_1",
    "rot_2",
    "rot_3",
]


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


@pytest.mark.parametrize("degree", [1, 2])
def test_gs_ply_with_higher_sh_bands_in_the_inria_layout(scene, tmp_path, degree):
    prediction, _ = scene
    gs = prediction.gaussians
    export(prediction, "gs_ply", tmp_path, gs_ply={"gs_views_interval": 2, "sh_degree": degree})
    vertex = read_vertex(tmp_path / "gs_ply/0000.ply")
    n_rest = 3 * ((degree + 1) ** 2 - 1)  # what INRIA's load_ply asserts for --sh_degree <degree>
    names = list(vertex.data.dtype.names)
    assert names == INRIA_DC[:9] + [f"f_rest_{i}" for i in range(n_rest)] + INRIA_DC[9:]
    assert all(vertex.data.dtype[n] == np.dtype("<f4") for n in names)
    idx = np.flatnonzero(expected_keep(prediction.depth, interval=2).reshape(-1))
    assert vertex.count == len(idx)
    column = lambda *keys: np.stack([vertex[k] for k in keys], 1)  # noqa: E731
    np.testing.assert_array_equal(column("x", "y", "z"), gs.means[idx])
    assert not column("nx", "ny", "nz").any()
    np.testing.assert_allclose(
        column("opacity")[:, 0], np.log(gs.opacities[idx] / (1 - gs.opacities[idx])), rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(column("scale_0", "scale_1", "scale_2"), np.log(gs.scales[idx]), rtol=1e-6)
    np.testing.assert_array_equal(column("rot_0", "rot_1", "rot_2", "rot_3"), gs.rotations[idx])  # w x y z
    # INRIA's loader: f_dc -> (G, 3, 1); f_rest -> reshape (G, 3, K-1) (channel-major); both transposed to (G, K, 3).
    dc = column("f_dc_0", "f_dc_1", "f_dc_2")[:, :, None]
    rest = column(*(f"f_rest_{i}" for i in range(n_rest))).reshape(-1, 3, (degree + 1) ** 2 - 1)
    features = np.concatenate([dc, rest], axis=2)
    np.testing.assert_array_equal(features, gs.harmonics[idx, :, : (degree + 1) ** 2])
    # So a 3DGS renderer sees the predicted view-dependent colour.
    dirs = torch.tensor(np.random.default_rng(2).normal(size=(len(idx), 3)))
    np.testing.assert_allclose(
        eval_sh(degree, dirs, torch.tensor(features).transpose(1, 2).double()),
        eval_sh(degree, dirs, torch.tensor(gs.harmonics[idx]).transpose(1, 2).double()),
        atol=1e-12,
    )


@pytest.mark.parametrize(
    "options, message",
    [
        ({"sh_degree": 3}, "sh_degree must be an integer from 0 .DC colour only. to 2"),
        ({"sh_degree": True}, "sh_degree must be an integer"),
        ({"gs_views_interval": 0}, "gs_views_interval must be a positive integer or None"),
        ({"prune_by_depth_percent": 1.5}, r"prune_by_depth_percent must be in \(0, 1\] or None"),
    ],
)
def test_bad_gs_ply_options_fail_before_writing(scene, tmp_path, options, message):
    with pytest.raises(ValueError, match=message):
        FORMATS["gs_ply"].check_options(options)
    with pytest.raises(ValueError, match=message):
        export(scene[0], "gs_ply", tmp_path / "out", gs_ply=options)
    assert not (tmp_path / "out").exists()


def test_gs_ply_leaves_out_gaussians_every_reader_would_choke_on(scene, tmp_path, caplog):
    """A scale <= 0 has no log (upstream writes NaN), a NaN mean no place: such Gaussians are not written."""
    prediction, _ = scene
    gs = prediction.gaussians
    idx = np.flatnonzero(expected_keep(prediction.depth).reshape(-1))
    bad = idx[[3, 10, 11, 50]]
    saved = gs.scales.copy(), gs.means.copy()
    try:
        gs.scales[bad[0], 1], gs.scales[bad[1], 0] = 0.0, -0.2
        gs.means[bad[2], 2], gs.scales[bad[3], 2] = np.nan, np.inf
        export(prediction, "gs_ply", tmp_path)
    finally:
        gs.scales, gs.means = saved
    vertex = read_vertex(tmp_path / "gs_ply/0000.ply")
    kept = np.setdiff1d(idx, bad)
    assert vertex.count == len(kept) and np.isfinite(np.stack([vertex[n] for n in INRIA_DC], 1)).all()
    np.testing.assert_array_equal(np.stack([vertex["x"], vertex["y"], vertex["z"]], 1), gs.means[kept])
    assert f"left out 4 of {len(idx)} Gaussians" in caplog.text


def test_gs_ply_refuses_more_bands_than_the_gaussians_carry(tmp_path):
    prediction = synthetic_prediction(n_views=1, width=70, height=56, gaussians=True)[0]
    prediction.gaussians.harmonics = prediction.gaussians.harmonics[:, :, :4]  # degree 1
    with pytest.raises(ValueError, match="gs_ply sh_degree=2 but these Gaussians carry SH up to degree 1"):
        export(prediction, "gs_ply", tmp_path, gs_ply={"sh_degree": 2})


@pytest.mark.parity
def test_gs_ply_equals_the_reference(scene, tmp_path):
    prediction, _ = scene
    gs = prediction.gaussians
    ref = run_oracle(
        "export_reference.py",
        oracle_arrays(
            prediction,
            gs_means=gs.means,
            gs_scales=gs.scales,
            gs_rotations=gs.rotations,
            gs_harmonics=gs.harmonics,
            gs_opacities=gs.opacities,
        ),
        formats=["gs_ply"],
    )
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
        ("x", "<f4"),
        ("y", "<f4"),
        ("z", "<f4"),
        ("red", "|u1"),
        ("green", "|u1"),
        ("blue", "|u1"),
    ]
    conf = prediction.conf
    keep = conf >= min(max(1.05, np.percentile(conf, 40)), np.percentile(conf, 90))
    np.testing.assert_allclose(
        np.stack([vertex["x"], vertex["y"], vertex["z"]], 1), world_points(capture)[keep], atol=1e-5
    )
    np.testing.assert_array_equal(np.stack([vertex["red"], vertex["green"], vertex["blue"]], 1), capture.images[keep])
