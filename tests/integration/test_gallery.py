"""The gallery in headless Chromium: the index lists scenes, a scene page loads its GLB without console errors."""

from __future__ import annotations

import shutil
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import trimesh
import uvicorn
from PIL import Image
from s3server import free_port

from flows.gallery import VIEWER, create_gallery_app

pytestmark = pytest.mark.slow  # servers, subprocesses and kills: seconds each

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
BROWSER_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def gallery(tmp_path_factory, capture):
    root = tmp_path_factory.mktemp("gallery")
    for name in ("indoor/room_a", "room_b"):
        folder = root / name
        (folder / "depth_vis").mkdir(parents=True)
        points = np.random.default_rng(0).random((2000, 3))
        scene = trimesh.Scene()
        scene.add_geometry(trimesh.PointCloud(points, colors=np.tile([200, 30, 30, 255], (len(points), 1))))
        scene.export(folder / "scene.glb")
        Image.fromarray(capture.images[0]).save(folder / "scene.jpg")
        Image.fromarray(capture.images[1]).save(folder / "depth_vis" / "0000.jpg")
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_gallery_app(root), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started and time.time() < deadline:
        time.sleep(0.1)
    yield f"http://127.0.0.1:{port}", root
    server.should_exit = True
    thread.join(10)


def test_traversal_is_refused(gallery):
    url, _ = gallery
    for path in (
        "/files/../../etc/passwd",
        "/files/%2e%2e/%2e%2e/etc/passwd",
        "/files/..%2F..%2Fetc%2Fpasswd",
        "/scene/..%2F..%2Fetc",
        "/scene/../../etc",
    ):
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(url + path)
        assert info.value.code == 404, path
    assert urllib.request.urlopen(url + "/files/room_b/scene.glb").status == 200


def test_a_token_guards_every_page_and_file_but_the_viewer(gallery):
    from fastapi.testclient import TestClient

    _, root = gallery
    client = TestClient(create_gallery_app(root, token="s3cret"))
    for path in ("/", "/manifest.json", "/scene/room_b", "/files/room_b/scene.glb", "/files/room_b/scene.jpg"):
        assert client.get(path).status_code == 401, path
        assert client.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401, path
    assert client.get("/static/vendor/missing.js").status_code == 404  # the viewer script: open, no 401
    glb = client.get("/files/room_b/scene.glb", headers={"Authorization": "Bearer s3cret"})
    assert glb.status_code == 200 and glb.content == (root / "room_b" / "scene.glb").read_bytes()
    first = client.get("/?token=s3cret")  # a browser's first visit sets the cookie the next pages use
    assert first.status_code == 200 and "room_b" in first.text
    assert client.get("/files/room_b/scene.jpg").status_code == 200


def test_manifest_lists_scenes(gallery):
    import json

    url, _ = gallery
    manifest = json.load(urllib.request.urlopen(url + "/manifest.json"))
    assert sorted(s["id"] for s in manifest["scenes"]) == ["indoor/room_a", "room_b"]
    assert all(s["model"].endswith("/scene.glb") and len(s["depth_images"]) == 1 for s in manifest["scenes"])


@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed (scripts/test.sh installs it)")
def test_gallery_in_headless_chromium(gallery, tmp_path):
    from playwright.sync_api import sync_playwright

    assert VIEWER.is_file(), "model-viewer is not bundled: run scripts/build_web.sh"
    url, _ = gallery
    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        page = browser.new_page()
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(url + "/")
        text = page.inner_text("body")
        assert "indoor/room_a" in text and "room_b" in text
        page.click("text=indoor/room_a")
        page.wait_for_function(
            "() => { const mv = document.querySelector('model-viewer'); return mv && mv.loaded; }", timeout=60_000
        )
        page.screenshot(path=str(tmp_path / "gallery_scene.png"))
        browser.close()
    assert errors == []
    assert (tmp_path / "gallery_scene.png").stat().st_size > 10_000
