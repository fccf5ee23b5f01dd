"""notebooks/inspect_scene.ipynb runs top to bottom and draws its figures: by default on the demo's store (written
here by the README's main command, run from a stand-in repository root), and on a synthetic store on S3."""

from __future__ import annotations

import json

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient
from paths import REPO_ROOT

from da3core.prediction import Prediction
from da3core.store import SceneStore
from flows.reconstruct import main as reconstruct_main

pytestmark = pytest.mark.slow  # a kernel per run, a reconstruction, an S3 server

FIGURES = 3  # depth/confidence grid, cameras, point-cloud preview


def execute(cwd) -> tuple[str, int]:
    """Run the notebook with ``cwd`` as its folder; (its printed text, the number of images it displayed)."""
    nb = nbformat.read(REPO_ROOT / "notebooks" / "inspect_scene.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    text = "\n".join(o.get("text", "") for o in outputs)
    images = sum("image/png" in o.get("data", {}) for o in outputs if o.output_type == "display_data")
    return text, images


def test_notebook_opens_the_demo_store_by_default(tmp_path, monkeypatch):
    monkeypatch.delenv("DA3_SCENE_STORE", raising=False)
    monkeypatch.delenv("MPLBACKEND", raising=False)
    monkeypatch.chdir(tmp_path)  # the demo runs from the repository root; tmp_path stands in for it
    demo = ["scene=sample", "model=da3-small", "model.weights=random", "export=glb+depth_vis+mini_npz"]
    assert reconstruct_main([*demo, "processing.process_res=56"]) == 0  # scripts/demo.sh's command, smaller
    (tmp_path / "notebooks").mkdir()
    text, images = execute(tmp_path / "notebooks")  # Jupyter runs a notebook in its own folder
    assert f"store: {tmp_path / 'outputs' / 'sample' / 'scene.zarr'}" in text
    assert "complete: True  frames: 10  reference view:" in text and "(relative)" in text
    assert images == FIGURES


def test_notebook_on_s3_store(capture, tmp_path, monkeypatch, s3_options):
    url = "s3://da3-test/nb/scene.zarr"
    store = SceneStore(url, s3_options)
    store.reset({"config": {"scene": "synthetic"}, "model": {"preset": "da3-small", "weights": "random"}})
    store.write_prediction(
        Prediction(
            depth=capture.depth,
            conf=np.full_like(capture.depth, 2.0),
            extrinsics=capture.extrinsics.astype(np.float32),
            intrinsics=capture.intrinsics.astype(np.float32),
            processed_images=capture.images,
            ref_view_idx=1,
            source_names=[f"view_{i}.png" for i in range(8)],
        )
    )
    store.mark_complete("h")
    monkeypatch.setenv("DA3_SCENE_STORE", url)
    monkeypatch.setenv("DA3_STORAGE_OPTIONS", json.dumps(s3_options))
    monkeypatch.delenv("MPLBACKEND", raising=False)
    text, images = execute(tmp_path)
    assert "complete: True  frames: 8  reference view: 1" in text
    n_points = sum(len(range(0, 120, 4)) * len(range(0, 160, 4)) for _ in range(8))
    assert f"preview points: {n_points}" in text
    assert '"scene": "synthetic"' in text
    assert images == FIGURES
