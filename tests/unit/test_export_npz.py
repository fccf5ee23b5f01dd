"""mini_npz / npz / depth_vis: upstream paths, keys, dtypes and rounding; values and colours against the reference."""

from __future__ import annotations

import numpy as np
import pytest
from export_scenes import synthetic_prediction
from oracle import run_oracle
from PIL import Image

from da3core.export import export
from da3core.export.depth_vis import colorize_depth


@pytest.fixture(scope="module")
def prediction():
    return synthetic_prediction(n_views=3, width=70, height=56)[0]


@pytest.fixture(scope="module")
def written(prediction, tmp_path_factory):
    root = tmp_path_factory.mktemp("npz")
    return root, export(prediction, "mini_npz+npz+depth_vis", root)


@pytest.fixture(scope="module")
def reference(prediction):
    p = prediction
    return run_oracle(
        "export_reference.py",
        dict(depth=p.depth, conf=p.conf, extrinsics=p.extrinsics, intrinsics=p.intrinsics, images=p.processed_images),
        formats=["mini_npz", "npz", "depth_vis"],
    )


def test_paths_keys_dtypes_and_rounding(prediction, written):
    root, paths = written
    assert paths["mini_npz"] == [str(root / "exports/mini_npz/results.npz")]
    assert paths["npz"] == [str(root / "exports/npz/results.npz")]
    with np.load(root / "exports/mini_npz/results.npz") as mini, np.load(root / "exports/npz/results.npz") as full:
        assert sorted(mini.files) == ["conf", "depth", "extrinsics", "intrinsics"]
        assert sorted(full.files) == ["conf", "depth", "extrinsics", "image", "intrinsics"]
        assert {k: mini[k].dtype for k in mini.files} == dict.fromkeys(mini.files, np.float32)
        assert full["image"].dtype == np.uint8 and full["image"].shape == prediction.processed_images.shape
        np.testing.assert_array_equal(mini["depth"], np.round(prediction.depth, 8))
        np.testing.assert_array_equal(full["depth"], np.round(prediction.depth, 6))
        np.testing.assert_array_equal(full["conf"], np.round(prediction.conf, 2))
        np.testing.assert_array_equal(full["extrinsics"], prediction.extrinsics)
        assert full["extrinsics"].shape == (3, 3, 4) and full["intrinsics"].shape == (3, 3, 3)


@pytest.mark.parity
def test_npz_values_equal_the_reference(written, reference):
    root, _ = written
    for name in ("mini_npz", "npz"):
        with np.load(root / f"exports/{name}/results.npz") as ours:
            theirs = {k[len(name) + 1 :]: v for k, v in reference.items() if k.startswith(name + "_")}
            assert sorted(ours.files) == sorted(theirs)
            for key in ours.files:
                assert ours[key].dtype == theirs[key].dtype, key
                np.testing.assert_array_equal(ours[key], theirs[key], err_msg=f"{name}/{key}")


@pytest.mark.parity
def test_depth_vis_colours_and_jpeg_bytes_equal_the_reference(prediction, written, reference):
    root, paths = written
    assert paths["depth_vis"] == [str(root / f"depth_vis/{i:04d}.jpg") for i in range(3)]
    for i in range(3):
        np.testing.assert_array_equal(colorize_depth(prediction.depth[i]), reference[f"depth_vis_colors_{i}"])
        assert (root / f"depth_vis/{i:04d}.jpg").read_bytes() == reference[f"depth_vis_jpg_{i}"].tobytes()
        assert Image.open(root / f"depth_vis/{i:04d}.jpg").size == (140, 56)  # image | depth


def test_depth_vis_puts_near_at_the_red_end():
    depth = np.tile(np.linspace(1.0, 10.0, 64, dtype=np.float32), (16, 1))
    colors = colorize_depth(depth).astype(int)
    near, far = colors[:, 2], colors[:, -3]
    assert near[:, 0].mean() > near[:, 2].mean() + 50  # red
    assert far[:, 2].mean() > far[:, 0].mean() + 50  # blue
