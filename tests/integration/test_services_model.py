"""The services' model: `da3 backend` and `da3 gradio` pick the model the da3 inference commands pick (one default,
--model-dir honoured with random weights too), and every page they or the gallery serve says when weights are
untrained."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from da3core.model.presets import DEFAULT_PRESET, PRESETS
from da3core.store import SceneStore
from flows.backend.pages import UNTRAINED_BANNER
from flows.backend.server import create_app
from flows.cli_flags import InferenceOptions
from flows.cli_run import overrides_for, resolve_model
from flows.config import load_config
from flows.gallery import create_gallery_app

BANNER = UNTRAINED_BANNER.split(",")[0]  # as it appears in the HTML (escaped text)


def _model_dir(tmp_path: Path, preset: str) -> Path:
    """A model dir as the official ones: its config.json names the preset."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_name": preset}))
    return folder


def _backend_model(model_dir: str | None, preset: str | None, weights: str) -> str:
    return create_app(model_dir, preset, weights, "cpu").state.service.model["model"]


def _local_command_model(model_dir: str | None, weights: str, tmp_path: Path) -> str:
    """The preset a local `da3 images` run computes with (its overrides composed as the flow composes them)."""
    preset, source = resolve_model(model_dir, None, weights)
    options = InferenceOptions(preset=preset, model_dir=source, weights=weights, export_dir=str(tmp_path / "out"))
    return load_config("reconstruct", overrides_for("images", tmp_path, options)).model.preset


def test_one_default_model_for_commands_backend_and_app(tmp_path):
    # Upstream's CLI default (DEFAULT_MODEL in its pkg/utils/constants.py, see the spec).
    assert PRESETS[DEFAULT_PRESET].hub_id == "depth-anything/DA3NESTED-GIANT-LARGE-1.1"
    assert _local_command_model(None, "random", tmp_path) == DEFAULT_PRESET
    assert _backend_model(None, None, "random") == DEFAULT_PRESET
    assert _backend_model(None, None, "pretrained") == DEFAULT_PRESET


@pytest.mark.parametrize("weights", ["random", "pretrained"])
def test_model_dir_names_the_preset_whatever_the_weights(tmp_path, weights):
    folder = _model_dir(tmp_path, "da3-small")
    if weights == "pretrained":
        (folder / "model.safetensors").write_bytes(b"")  # present; not loaded here
    assert _local_command_model(str(folder), weights, tmp_path) == "da3-small"
    assert _backend_model(str(folder), None, weights) == "da3-small"
    pinned = create_app(str(folder), None, weights, "cpu").state.service.pinned
    assert (f"model.path='{folder}'" in pinned) == (weights == "pretrained")  # random weights are never read from it


def test_gradio_app_model(tmp_path):
    pytest.importorskip("gradio", reason="the Gradio app needs the `app` extra")
    from flows.gradio_app import ReconstructionApp

    common = dict(workspace_dir=str(tmp_path / "ws"), gallery_dir=None, device="cpu")
    assert ReconstructionApp(None, None, "random", **common).preset == DEFAULT_PRESET
    assert ReconstructionApp(str(_model_dir(tmp_path, "da3-base")), None, "random", **common).preset == "da3-base"


def test_gradio_banner_when_weights_are_random(tmp_path):
    pytest.importorskip("gradio", reason="the Gradio app needs the `app` extra")
    from flows.gradio_app import ReconstructionApp, build_demo

    def markup(weights: str) -> str:
        app = ReconstructionApp(None, "da3-small", weights, str(tmp_path / "ws"), None, "cpu")
        return json.dumps(build_demo(app).config)

    assert BANNER in markup("random")
    assert BANNER not in markup("pretrained")


def test_backend_pages_banner_when_weights_are_random():
    for weights, shown in (("random", True), ("pretrained", False)):
        client = TestClient(create_app(None, "da3-small", weights, "cpu"))  # no lifespan: the model is not loaded
        for page in ("/", "/dashboard"):
            response = client.get(page)
            assert response.status_code == 200 and (BANNER in response.text) == shown, (weights, page)


def test_gallery_banner_for_scenes_of_random_weights(tmp_path):
    for name, weights in (("untrained", "random"), ("trained", "pretrained")):
        folder = tmp_path / "gallery" / name
        folder.mkdir(parents=True)
        (folder / "scene.glb").write_bytes(b"")
        SceneStore(str(folder / "scene.zarr")).reset({"model": {"preset": "da3-small", "weights": weights}})
    (tmp_path / "gallery" / "plain").mkdir()
    (tmp_path / "gallery" / "plain" / "scene.glb").write_bytes(b"")  # no store: nothing known about its model
    client = TestClient(create_gallery_app(tmp_path / "gallery"))
    assert BANNER in client.get("/scene/untrained").text
    assert BANNER not in client.get("/scene/trained").text and BANNER not in client.get("/scene/plain").text
    assert BANNER in client.get("/").text
    manifest = {s["id"]: s["weights"] for s in client.get("/manifest.json").json()["scenes"]}
    assert manifest == {"untrained": "random", "trained": "pretrained", "plain": None}
