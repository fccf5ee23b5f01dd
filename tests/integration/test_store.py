"""The scene store round-trips a Prediction on local disk and on S3 (moto), and marks completion last."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
import zarr

from da3core.prediction import Gaussians, Prediction
from da3core.store import SceneStore, join_url


def _prediction(capture) -> Prediction:
    n, h, w = capture.depth.shape
    g = n * h * w
    rng = np.random.default_rng(0)
    return Prediction(
        depth=capture.depth, conf=1 + rng.random(capture.depth.shape, dtype=np.float32),
        extrinsics=capture.extrinsics.astype(np.float32), intrinsics=capture.intrinsics.astype(np.float32),
        processed_images=capture.images, sky=capture.depth > 7.0,
        gaussians=Gaussians(rng.random((g, 3), np.float32), rng.random((g, 3), np.float32),
                            rng.random((g, 4), np.float32), rng.random((g, 3, 9), np.float32), rng.random(g, np.float32)),
        aux={"feat_layer_5": rng.random((n, 4, 5, 16), np.float32)}, ref_view_idx=2,
        source_sizes=np.array([[h, w]] * n), source_names=[f"v{i}.png" for i in range(n)],
    )


@pytest.mark.parametrize("where", ["local", "s3"])
def test_round_trip(capture, tmp_path, request, where):
    if where == "s3":
        options = request.getfixturevalue("s3_options")
        url = join_url("s3://da3-test", "store-test", "scene.zarr")
    else:
        options, url = {}, str(tmp_path / "scene.zarr")
    store = SceneStore(url, options)
    pred = _prediction(capture)
    store.reset({"config": {"model": {"preset": "da3-small"}}})
    store.write_prediction(pred, frame_index=np.arange(len(pred)) * 3, timestamps=np.arange(len(pred)) / 10)
    assert not store.is_complete()
    store.mark_complete("h1")
    assert store.is_complete("h1") and not store.is_complete("h2")
    back = SceneStore(url, options).read_prediction()
    for name in ("depth", "conf", "sky", "extrinsics", "intrinsics", "processed_images", "source_sizes"):
        np.testing.assert_array_equal(getattr(back, name), getattr(pred, name), err_msg=name)
    for name in ("means", "scales", "rotations", "harmonics", "opacities"):
        np.testing.assert_array_equal(getattr(back.gaussians, name), getattr(pred.gaussians, name))
    np.testing.assert_array_equal(back.aux["feat_layer_5"], pred.aux["feat_layer_5"])
    assert back.ref_view_idx == 2 and back.source_names == pred.source_names

    group = zarr.open_group(url, mode="r", storage_options=options or None)
    assert group["depth"].chunks == (1,) + capture.depth.shape[1:]
    assert group["images"].dtype == np.uint8 and group["depth"].dtype == np.float32
    ds = xr.open_zarr(url, consolidated=False, storage_options=options or None)
    assert ds["depth"].dims == ("frame", "y", "x") and list(ds["frame"].values) == list(np.arange(len(pred)) * 3)
    assert ds.attrs["complete"]["config_hash"] == "h1"


def test_reset_replaces_and_unmarks(tmp_path, capture):
    store = SceneStore(str(tmp_path / "s.zarr"))
    store.reset({})
    store.write_prediction(_prediction(capture))
    store.mark_complete("h")
    store.reset({"config": {}})
    assert store.exists() and not store.is_complete() and "depth" not in zarr.open_group(store.url, mode="r")
