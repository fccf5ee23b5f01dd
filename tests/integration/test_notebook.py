"""notebooks/inspect_scene.ipynb runs top to bottom on a synthetic scene store (local and S3)."""

from __future__ import annotations

import json

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

from paths import REPO_ROOT
from da3core.prediction import Prediction
from da3core.store import SceneStore

pytestmark = pytest.mark.slow  # servers, subprocesses and kills: seconds each


@pytest.mark.parametrize("where", ["local", "s3"])
def test_inspect_notebook_executes(capture, tmp_path, monkeypatch, request, where):
    options = request.getfixturevalue("s3_options") if where == "s3" else {}
    url = "s3://da3-test/nb/scene.zarr" if where == "s3" else str(tmp_path / "scene.zarr")
    store = SceneStore(url, options)
    store.reset({"config": {"scene": "synthetic"}, "model": {"preset": "da3-small", "weights": "random"}})
    store.write_prediction(Prediction(
        depth=capture.depth, conf=np.full_like(capture.depth, 2.0), extrinsics=capture.extrinsics.astype(np.float32),
        intrinsics=capture.intrinsics.astype(np.float32), processed_images=capture.images, ref_view_idx=1,
    ))
    store.mark_complete("h")
    monkeypatch.setenv("DA3_SCENE_STORE", url)
    monkeypatch.setenv("DA3_STORAGE_OPTIONS", json.dumps(options))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(REPO_ROOT / "notebooks" / "inspect_scene.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "complete: True  frames: 8  reference view: 1" in text
    n_points = sum(len(range(0, 120, 4)) * len(range(0, 160, 4)) for _ in range(8))
    assert f"preview points: {n_points}" in text
    assert '"scene": "synthetic"' in text
