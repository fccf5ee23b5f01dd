"""The scene store round-trips a Prediction on local disk and on S3 (moto), marks completion last, and replaces a
store on S3 so that a marked store never holds another run's objects (local kills: test_store_kills.py)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import xarray as xr
import zarr
from store_scripts.replace_store import marker_hash, prediction, replace

from da3core.io.storage import join_url
from da3core.prediction import Gaussians, Prediction
from da3core.store import SceneStore


def _prediction(capture) -> Prediction:
    n, h, w = capture.depth.shape
    g = n * h * w
    rng = np.random.default_rng(0)
    return Prediction(
        depth=capture.depth,
        conf=1 + rng.random(capture.depth.shape, dtype=np.float32),
        extrinsics=capture.extrinsics.astype(np.float32),
        intrinsics=capture.intrinsics.astype(np.float32),
        processed_images=capture.images,
        sky=capture.depth > 7.0,
        gaussians=Gaussians(
            rng.random((g, 3), np.float32),
            rng.random((g, 3), np.float32),
            rng.random((g, 4), np.float32),
            rng.random((g, 3, 9), np.float32),
            rng.random(g, np.float32),
        ),
        aux={"feat_layer_5": rng.random((n, 4, 5, 16), np.float32)},
        ref_view_idx=2,
        source_sizes=np.array([[h, w]] * n),
        source_scale=np.array([[2.5, 2.0]] * n),
        source_offset=np.array([[7.5, 0.0]] * n),  # a view cropped to stack with others
        source_names=[f"v{i}.png" for i in range(n)],
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
    per_view = ("depth", "conf", "sky", "extrinsics", "intrinsics", "processed_images", "source_sizes")
    for name in (*per_view, "source_scale", "source_offset"):
        np.testing.assert_array_equal(getattr(back, name), getattr(pred, name), err_msg=name)
    for name in ("means", "scales", "rotations", "harmonics", "opacities"):
        np.testing.assert_array_equal(getattr(back.gaussians, name), getattr(pred.gaussians, name))
    np.testing.assert_array_equal(back.aux["feat_layer_5"], pred.aux["feat_layer_5"])
    assert back.ref_view_idx == 2 and back.source_names == pred.source_names

    group = zarr.open_group(url, mode="r", storage_options=options or None)
    assert group["depth"].chunks == (1,) + capture.depth.shape[1:]
    assert group["images"].dtype == np.uint8 and group["depth"].dtype == np.float32
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # consolidated metadata: xarray opens without its fallback warning
        ds = xr.open_zarr(url, storage_options=options or None)
    assert ds["depth"].dims == ("frame", "y", "x") and list(ds["frame"].values) == list(np.arange(len(pred)) * 3)
    assert ds.attrs["complete"]["config_hash"] == "h1"
    assert {"timestamp", "source_name"} <= set(ds.coords)
    np.testing.assert_allclose(ds["timestamp"].values, np.arange(len(pred)) / 10)
    assert list(ds["source_name"].values) == pred.source_names
    assert ds.sel(frame=6)["source_name"].values == "v2.png"  # selected with the frame index, labelled by file
    assert (ds["depth"].attrs["units"], ds["timestamp"].attrs["units"], ds["intrinsics"].attrs["units"]) == (
        "relative",
        "s",
        "pixels",
    )


def test_metric_store_states_metres_and_an_unmarked_store_is_not_consolidated(capture, tmp_path):
    store = SceneStore(str(tmp_path / "scene.zarr"))
    store.reset({})
    store.write_prediction(
        Prediction(
            depth=capture.depth,
            is_metric=1,
            intrinsics=capture.intrinsics.astype(np.float32),
            extrinsics=capture.extrinsics.astype(np.float32),
        )
    )
    with pytest.warns(RuntimeWarning, match="consolidated"):  # not complete: no consolidated metadata yet
        xr.open_zarr(store.url)
    store.mark_complete("h")
    root = json.loads((tmp_path / "scene.zarr" / "zarr.json").read_text())
    assert root["attributes"]["complete"]["config_hash"] == "h" and "depth" in root["consolidated_metadata"]["metadata"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = xr.open_zarr(store.url)
    assert ds["depth"].attrs["units"] == "m" and ds["extrinsics"].attrs["units"] == "m"
    assert "timestamp" in ds.coords and "source_name" not in ds  # no names given: no array


def test_reset_replaces_and_unmarks(tmp_path, capture):
    store = SceneStore(str(tmp_path / "s.zarr"))
    store.reset({})
    store.write_prediction(_prediction(capture))
    store.mark_complete("h")
    store.reset({"config": {}})
    assert store.exists() and not store.is_complete() and "depth" not in zarr.open_group(store.url, mode="r")


def _objects(client, prefix: str) -> dict[str, str]:
    """Key -> ETag of every object under ``prefix`` (read with boto3, not through s3fs)."""
    pages = client.get_paginator("list_objects_v2").paginate(Bucket="da3-test", Prefix=prefix)
    return {o["Key"]: o["ETag"] for page in pages for o in page.get("Contents", [])}


def _marker(client, prefix: str) -> dict | None:
    try:
        body = client.get_object(Bucket="da3-test", Key=f"{prefix}zarr.json")["Body"].read()
    except client.exceptions.NoSuchKey:
        return None
    return json.loads(body).get("attributes", {}).get("complete")


def _replace(url: str, options: dict, views: int, seed: int) -> None:
    replace(SceneStore(url, options), views, seed)


def _s3_client(options: dict):
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=options["client_kwargs"]["endpoint_url"],
        region_name="us-east-1",
        aws_access_key_id=options["key"],
        aws_secret_access_key=options["secret"],
    )


def test_s3_replacement_shows_a_marker_only_on_one_runs_objects(s3_options, monkeypatch):
    """After every write or delete the replacement makes on S3 (moto), a second client lists the store: it carries
    a marker only while it holds exactly the objects of the run that wrote that marker."""
    from s3fs import S3FileSystem

    url, prefix = "s3://da3-test/swap/room/scene.zarr", "swap/room/scene.zarr/"
    client = _s3_client(s3_options)
    _replace(url, s3_options, 8, 0)
    states = [(_marker(client, prefix), _objects(client, prefix))]
    real = S3FileSystem._call_s3

    async def observed(self, method, *args, **kwargs):
        out = await real(self, method, *args, **kwargs)
        if method in ("put_object", "copy_object", "delete_object", "delete_objects", "complete_multipart_upload"):
            states.append((_marker(client, prefix), _objects(client, prefix)))
        return out

    monkeypatch.setattr(S3FileSystem, "_call_s3", observed)
    _replace(url, s3_options, 3, 1)
    monkeypatch.undo()
    final = states[-1]
    assert final[0]["config_hash"] == marker_hash(3, 1) and states[0][0]["config_hash"] == marker_hash(8, 0)
    for marker, objects in states:
        assert marker is None or (marker, objects) in (states[0], final), (marker, sorted(objects))
    mixed = [objects for marker, objects in states if objects not in (states[0][1], final[1])]
    assert mixed and any(k.startswith(f"{prefix}depth/c/7/") for k in mixed[0])  # the window a reader must not trust
    back = SceneStore(url, s3_options).read_prediction()
    np.testing.assert_array_equal(back.depth, prediction(3, 1).depth)
    assert not [k for k in _objects(client, "swap/room/") if not k.startswith(prefix)]  # no staging, no lease left


def test_s3_replacement_stopped_midway_then_redone(s3_options, monkeypatch):
    """A replacement that stops after some objects were copied leaves an unmarked store; the next writer discards
    the staged copy and finishes."""
    from s3fs import S3FileSystem

    url, prefix = "s3://da3-test/cut/room/scene.zarr", "cut/room/scene.zarr/"
    client = _s3_client(s3_options)
    _replace(url, s3_options, 8, 0)
    real, copies = S3FileSystem._call_s3, []

    async def dies(self, method, *args, **kwargs):
        if method == "copy_object":
            if len(copies) == 5:
                raise ConnectionError("the writer died here")
            copies.append(kwargs)
        return await real(self, method, *args, **kwargs)

    monkeypatch.setattr(S3FileSystem, "_call_s3", dies)
    with pytest.raises(ConnectionError):
        _replace(url, s3_options, 3, 1)
    monkeypatch.undo()
    assert _marker(client, prefix) is None and not SceneStore(url, s3_options).is_complete()
    assert any(".tmp-" in k for k in _objects(client, "cut/room/"))
    # Nor may the half-copied store pass for a result of the old inference: a rerun of it would only re-export.
    assert SceneStore(url, s3_options).attrs().get("stages") in ({}, None)
    _replace(url, s3_options, 3, 1)
    assert _marker(client, prefix)["config_hash"] == marker_hash(3, 1)
    np.testing.assert_array_equal(SceneStore(url, s3_options).read_array("depth"), prediction(3, 1).depth)
    assert not [k for k in _objects(client, "cut/room/") if not k.startswith(prefix)]
