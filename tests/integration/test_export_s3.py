"""Exports straight to S3 (moto): every returned URL exists, files read back, no temp or probe objects left."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest
import s3fs
import trimesh

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from export_scenes import synthetic_prediction  # noqa: E402

from da3core.export import export  # noqa: E402
from da3core.io.storage import StorageError  # noqa: E402


def test_export_to_s3(s3_options):
    prediction = synthetic_prediction(n_views=2, width=70, height=56, gaussians=True)[0]
    url = "s3://da3-test/scenes/room/exports"
    written = export(prediction, "mini_npz+glb+colmap+gs_ply+nerfstudio", url, storage_options=s3_options)
    fs = s3fs.S3FileSystem(**s3_options)
    urls = sorted(u for paths in written.values() for u in paths)
    assert all(u.startswith(url + "/") for u in urls)
    stored = sorted(f"s3://{p}" for p in fs.find("da3-test/scenes/room/exports"))
    assert stored == sorted(set(urls))  # nothing else: no temp files, no write probe
    with fs.open(f"{url}/exports/mini_npz/results.npz", "rb") as f:
        np.testing.assert_array_equal(np.load(io.BytesIO(f.read()))["extrinsics"], prediction.extrinsics)
    with fs.open(f"{url}/scene.glb", "rb") as f:
        scene = trimesh.load(io.BytesIO(f.read()), file_type="glb")
    assert len(scene.geometry["points"].vertices) > 1000
    assert {p.rsplit("/", 1)[1] for p in written["colmap"]} >= {"cameras.bin", "images.bin", "points3D.bin"}


def test_missing_bucket_is_a_clear_error(s3_options):
    prediction = synthetic_prediction(n_views=1, width=70, height=56)[0]
    with pytest.raises(StorageError, match="cannot write to export_dir=s3://no-such-bucket/x"):
        export(prediction, "mini_npz", "s3://no-such-bucket/x", storage_options=s3_options)
