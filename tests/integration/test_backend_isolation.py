"""What one backend client can learn of another's jobs and of the server's disk, and what a failed request leaves.

A job's id is the key to its outputs: listings show states and times only. A refused or broken submission, whatever
broke it (a crafted header, a garbage video, a client gone mid-upload), leaves no file in the workspace. A link in a
server-side folder does not bring a file from outside the allowed roots into a job. Held status requests wait on
the event loop, not in the request threads, so they cannot starve other routes.
"""

from __future__ import annotations

import io
import json
import socket
import tarfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient
from live import backend_server
from paths import REPO_ROOT as REPO
from PIL import Image
from s3server import free_port

from da3core.synthetic import make_capture, write_image_folder
from flows.backend.archive import pack
from flows.backend.server import create_app
from flows.gallery import create_gallery_app

pytestmark = pytest.mark.slow  # servers: seconds each

MODEL = dict(model_dir=None, preset="da3-small", weights="random", device="cpu")
TAR = {"Content-Type": "application/x-tar"}
SMALL = ["export=npz", "processing.process_res=28"]


def _tar_of(path: Path) -> bytes:
    buffer = io.BytesIO()
    pack(path, buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A backend with an allowed root; its workspace; a PNG outside the root."""
    root = tmp_path_factory.mktemp("isolation")
    outside = root / "outside.png"
    Image.new("RGB", (64, 48), (255, 0, 255)).save(outside)
    allowed = root / "allowed"
    write_image_folder(make_capture(2, 64, 48), allowed / "linked_out")
    (allowed / "linked_out" / "z_outside.png").symlink_to(outside)
    write_image_folder(make_capture(2, 64, 48), allowed / "linked_in")
    (allowed / "linked_in" / "z_copy.png").symlink_to(sorted((allowed / "linked_in").glob("*.png"))[0])
    app = create_app(**MODEL, allowed_roots=[str(allowed)], workspace_dir=str(root / "ws"), max_upload_mb=2)
    with backend_server(app) as url:
        yield url, root / "ws", allowed


def _finished(url: str, job_id: str) -> dict:
    deadline = time.time() + 120
    while (job := httpx.get(f"{url}/jobs/{job_id}", params={"wait": 5}, timeout=30).json())["status"] not in (
        "completed",
        "failed",
    ):
        assert time.time() < deadline, job
    return job


def _workspace_holds_only(workspace: Path, job_ids: set[str]) -> None:
    assert {p.name for p in workspace.iterdir()} <= job_ids, sorted(p.name for p in workspace.iterdir())


def test_listings_never_show_another_jobs_key_scene_or_overrides(served, tmp_path):
    url, workspace, _ = served
    scene = tmp_path / "alice_private_scene"
    write_image_folder(make_capture(1, 64, 48), scene)
    submitted = httpx.post(
        f"{url}/jobs", params=[("override", o) for o in SMALL], content=_tar_of(scene), headers=TAR, timeout=60
    )
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["id"]
    assert submitted.json()["scene"] == "alice_private_scene"  # its owner is told
    assert _finished(url, job_id)["status"] == "completed"
    for page in ("/jobs?limit=1000", "/dashboard", "/status", "/"):
        text = httpx.get(url + page).text
        for private in (job_id, job_id[:8], "alice_private_scene", "process_res=28"):
            assert private not in text, (page, private)
    listed = httpx.get(url + "/jobs").json()["jobs"]
    assert listed and listed[0]["status"] == "completed" and set(listed[0]) >= {"progress", "run_seconds"}
    # The owner, holding the id, gets everything: its result, which shows no folder of the server.
    result = httpx.get(f"{url}/jobs/{job_id}/result")
    assert result.status_code == 200
    with tarfile.open(fileobj=io.BytesIO(result.content)) as tar:
        root = json.loads(tar.extractfile("scene.zarr/zarr.json").read())["attributes"]
    text = json.dumps(root)
    assert str(workspace) not in text and str(REPO) not in text, text
    assert root["inputs"]["files"][0]["path"] == "input/alice_private_scene/" + root["inputs"]["files"][0]["name"]
    assert root["config"]["output_dir"] == "out" and root["complete"] and "scenes" not in root["config"]
    assert httpx.delete(f"{url}/jobs/{job_id}").status_code == 200


def test_a_link_in_a_server_folder_reads_nothing_outside_the_allowed_roots(served):
    url, workspace, allowed = served
    refused = httpx.post(f"{url}/jobs", json={"path": str(allowed / "linked_out"), "overrides": SMALL})
    assert refused.status_code == 400 and "z_outside.png" in refused.json()["detail"], refused.text
    assert "link to a file outside" in refused.json()["detail"]
    accepted = httpx.post(f"{url}/jobs", json={"path": str(allowed / "linked_in"), "overrides": SMALL})
    assert accepted.status_code == 202, accepted.text  # a link inside the roots is the user's own business
    assert _finished(url, accepted.json()["id"])["status"] == "completed"


def test_failed_submissions_leave_no_files(served, tmp_path):
    url, workspace, _ = served
    before = {p.name for p in workspace.iterdir()}
    garbage = tmp_path / "v.mp4"
    garbage.write_bytes(b"\0\0\0\x18ftypmp42" + bytes(range(256)) * 40)
    response = httpx.post(f"{url}/jobs", params=[("override", o) for o in SMALL], content=_tar_of(garbage), headers=TAR)
    assert response.status_code == 400 and "v.mp4" in response.json()["detail"], response.text
    assert "\n" not in response.json()["detail"] and str(workspace) not in response.json()["detail"]
    not_utf8 = io.BytesIO()
    with tarfile.open(fileobj=not_utf8, mode="w", format=tarfile.USTAR_FORMAT, encoding="latin-1") as tar:
        info = tarfile.TarInfo("sc\xffene.png")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    response = httpx.post(f"{url}/jobs", content=not_utf8.getvalue(), headers=TAR)
    assert response.status_code == 400 and "UTF-8" in response.json()["detail"], response.text
    assert httpx.get(url + "/jobs").status_code == 200
    # A client that sends half its declared body and hangs up.
    body = _tar_of(garbage)
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1]))) as sock:
            head = f"POST /jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-tar\r\nContent-Length: {len(body)}"
            sock.sendall(head.encode() + b"\r\n\r\n" + body[: len(body) // 2])
            time.sleep(0.3)
    deadline = time.time() + 10
    while {p.name for p in workspace.iterdir()} - before and time.time() < deadline:
        time.sleep(0.2)
    _workspace_holds_only(workspace, before)


@contextmanager
def _without_worker(app) -> Iterator[str]:
    """Serve ``app`` on loopback without its lifespan: no worker, so queued jobs stay queued; yield its URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), lifespan="off", log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.05)
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(30)


def test_uploads_in_flight_hold_their_place_in_the_queue(tmp_path):
    """With room for two jobs, two uploads still arriving fill it: a third is refused before its body is read, so
    many clients at once cannot make the server store more uploads than it could queue."""
    write_image_folder(make_capture(1, 64, 48), tmp_path / "one")
    body = _tar_of(tmp_path / "one")
    with _without_worker(create_app(**MODEL, max_queue=2, workspace_dir=str(tmp_path / "ws"))) as url:
        port = int(url.rsplit(":", 1)[1])
        slow = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
        for sock in slow:
            head = f"POST /jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-tar\r\nContent-Length: {len(body)}"
            sock.sendall(head.encode() + b"\r\n\r\n" + body[:100])
        time.sleep(1.0)
        refused = httpx.post(url + "/jobs", content=body, headers=TAR, timeout=30)
        assert refused.status_code == 503 and "queue is full" in refused.json()["detail"]
        for sock in slow:
            sock.close()  # the two uploads break off: their places are free again
        deadline = time.time() + 10
        while (accepted := httpx.post(url + "/jobs", content=body, headers=TAR, timeout=30)).status_code == 503:
            assert time.time() < deadline, accepted.text
            time.sleep(0.2)
        assert accepted.status_code == 202, accepted.text
        assert httpx.get(url + "/status").json()["queue"]["length"] == 1


def test_held_status_requests_leave_the_other_routes_free(tmp_path):
    """Sixty clients hold ``?wait=5`` on a job that never starts (no worker): /status still answers at once."""
    with _without_worker(create_app(**MODEL, workspace_dir=str(tmp_path / "ws"))) as url:
        write_image_folder(make_capture(1, 64, 48), tmp_path / "one")
        job = httpx.post(f"{url}/jobs", content=_tar_of(tmp_path / "one"), headers=TAR, timeout=60).json()
        with ThreadPoolExecutor(60) as pool:
            held = [
                pool.submit(httpx.get, f"{url}/jobs/{job['id']}", params={"wait": 5}, timeout=30) for _ in range(60)
            ]
            time.sleep(1.0)  # every held request is in the server by now
            started = time.perf_counter()
            assert httpx.get(url + "/status", timeout=30).status_code == 200
            assert time.perf_counter() - started < 1.0
            assert all(f.result().json()["status"] == "queued" for f in held)


def test_malformed_headers_and_names_are_refusals_not_errors(tmp_path):
    app = create_app(**MODEL, token="s3cret", allowed_roots=[str(tmp_path)], workspace_dir=str(tmp_path / "ws"))
    client = TestClient(app)
    for cookie in ("a<b=c", "x=y; da3_token=s3cret; (=1"):
        assert client.get("/status", headers={"Cookie": cookie}).status_code == 401
        authorised = {"Cookie": cookie, "Authorization": "Bearer s3cret"}
        assert client.get("/status", headers=authorised).status_code == 200
    bearer = {"Authorization": "Bearer s3cret"}
    too_long = client.post("/jobs", json={"path": str(tmp_path / ("x" * 4000))}, headers=bearer)
    assert too_long.status_code == 400 and "\n" not in too_long.json()["detail"], too_long.text


def test_gallery_lists_and_serves_only_what_lies_inside_it(tmp_path):
    root, elsewhere = tmp_path / "gallery", tmp_path / "elsewhere"
    for folder, depth in ((root / "mine", "own.jpg"), (elsewhere, "private_name.jpg")):
        (folder / "depth_vis").mkdir(parents=True)
        (folder / "scene.glb").write_bytes(b"glTF")
        (folder / "depth_vis" / depth).write_bytes(b"\xff\xd8")
    (root / "linked").symlink_to(elsewhere, target_is_directory=True)
    (root / "mine" / "depth_vis" / "linked.jpg").symlink_to(elsewhere / "depth_vis" / "private_name.jpg")
    client = TestClient(create_gallery_app(root))
    manifest = client.get("/manifest.json").json()["scenes"]
    assert [s["id"] for s in manifest] == ["mine"] and manifest[0]["depth_images"] == ["/files/mine/depth_vis/own.jpg"]
    assert client.get("/scene/linked").status_code == 404 and client.get("/scene/%00").status_code == 404
    index = client.get("/").text
    assert "linked" not in index and str(root) not in index
