"""The backend service on a real uvicorn server on loopback: a job run through the backend gives the same store
and exports as a local run; bad jobs fail with one line and the worker goes on; auth, limits, traversal, queue.
"""

from __future__ import annotations

import io
import logging
import tarfile
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import trimesh
import zarr
from fastapi.testclient import TestClient
from live import backend_server
from s3server import free_port

from da3core.synthetic import make_capture, write_image_folder
from flows.backend.archive import pack
from flows.backend.auth import ExposureError, RedactToken
from flows.backend.client import BackendError, run_on_backend
from flows.backend.server import create_app, serve
from flows.progress import progress_to
from flows.reconstruct import main as reconstruct_main

MODEL = dict(model_dir=None, preset="da3-small", weights="random", device="cpu")
LOCAL_MODEL = ["model=da3-small", "model.weights=random", "model.device=cpu"]


@pytest.fixture(scope="module")
def backend(tmp_path_factory, capture):
    """A backend on 127.0.0.1 with a gallery, an allowed root and a 1 MB upload limit; stopped at the end."""
    root = tmp_path_factory.mktemp("backend")
    gallery = root / "gallery"
    (gallery / "room").mkdir(parents=True)
    trimesh.Scene([trimesh.PointCloud(np.random.default_rng(0).random((50, 3)))]).export(gallery / "room" / "scene.glb")
    allowed = root / "allowed"
    write_image_folder(make_capture(2, 64, 48, seed=3), allowed / "pair")
    (allowed / "escape").symlink_to(root / "secret", target_is_directory=True)
    write_image_folder(make_capture(2, 64, 48, seed=5), root / "secret")
    app = create_app(
        **MODEL,
        gallery_dir=str(gallery),
        max_queue=4,
        max_upload_mb=1,
        allowed_roots=[str(allowed)],
        workspace_dir=str(root / "workspace"),
    )
    with backend_server(app) as url:
        yield url, root


def _files(folder: Path) -> dict[str, Path]:
    return {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}


def _assert_same_outputs(local: Path, remote: Path) -> None:
    """Same arrays in the stores, same export files (npz by content: zip entries carry write times)."""
    a, b = zarr.open_group(local / "scene.zarr", mode="r"), zarr.open_group(remote / "scene.zarr", mode="r")
    assert sorted(a.array_keys()) == sorted(b.array_keys()) and len(list(a.array_keys())) > 5
    for key in a.array_keys():
        np.testing.assert_array_equal(a[key][...], b[key][...], err_msg=key)
    assert a.attrs["complete"]["config_hash"] == b.attrs["complete"]["config_hash"] == a.attrs["config_hash"]
    for key in ("config_hash", "inference_hash", "ref_view_idx"):
        assert a.attrs[key] == b.attrs[key], key
    # The inputs are the same files (names, sizes, hashes); only the folder differs (the backend's upload copy).
    ins = [
        {
            **x.attrs["inputs"],
            "source": None,
            "files": [{**f, "path": Path(f["path"]).name} for f in x.attrs["inputs"]["files"]],
        }
        for x in (a, b)
    ]
    assert ins[0] == ins[1]
    assert a.attrs["model"]["weights_sha256"] == b.attrs["model"]["weights_sha256"]
    local_files = {k: v for k, v in _files(local).items() if not k.startswith("scene.zarr/")}
    remote_files = {k: v for k, v in _files(remote).items() if not k.startswith("scene.zarr/")}
    assert sorted(local_files) == sorted(remote_files) and local_files
    for name, path in local_files.items():
        if name.endswith(".npz"):
            with np.load(path) as x, np.load(remote_files[name]) as y:
                assert sorted(x.files) == sorted(y.files)
                for key in x.files:
                    np.testing.assert_array_equal(x[key], y[key], err_msg=f"{name}:{key}")
        else:
            assert path.read_bytes() == remote_files[name].read_bytes(), name


@pytest.mark.parametrize("kind", ["folder", "video"])
def test_backend_matches_local_run(backend, tmp_path, image_folder, video_file, kind):
    url, _ = backend
    if kind == "folder":
        scene, overrides = image_folder, ["export=mini_npz+glb", "processing.process_res=84"]
    else:
        scene, overrides = video_file, ["export=npz+depth_vis", "processing.process_res=56", "input.fps=3"]
    stages: list[tuple[float, str]] = []
    with progress_to(lambda f, m: stages.append((f, m))):
        assert reconstruct_main([f"scene={scene}", f"output_dir={tmp_path / 'local'}", *overrides, *LOCAL_MODEL]) == 0
    fractions = [f for f, _ in stages]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(0.95) and len(stages) >= 5

    job = run_on_backend(url, overrides, str(scene), str(tmp_path / "remote"), progress=False)
    assert job["status"] == "completed" and job["progress"] == 1.0 and job["error"] is None
    assert job["scene"] == scene.name and job["result"]["status"] == "done"
    assert job["started_at"] >= job["created_at"] and job["finished_at"] >= job["started_at"]
    _assert_same_outputs(tmp_path / "local", tmp_path / "remote")


def test_failing_job_records_reason_and_worker_continues(backend, tmp_path):
    url, _ = backend
    broken = tmp_path / "broken"
    write_image_folder(make_capture(2, 64, 48), broken)
    # Cut short: its header reads, so the job is accepted and fails when the flow decodes it (a file that is not an
    # image at all is refused on submission, before a job exists).
    damaged = broken / "frame_0001.png"
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])
    with pytest.raises(BackendError, match="frame_0001.png") as raised:
        run_on_backend(
            url, ["export=mini_npz", "processing.process_res=28"], str(broken), str(tmp_path / "o1"), progress=False
        )
    assert "\n" not in str(raised.value)
    assert httpx.get(url + "/jobs").json()["jobs"][0]["status"] == "failed"
    good = tmp_path / "good"
    write_image_folder(make_capture(2, 64, 48), good)
    job = run_on_backend(
        url, ["export=mini_npz", "processing.process_res=28"], str(good), str(tmp_path / "o2"), progress=False
    )
    assert job["status"] == "completed" and (tmp_path / "o2" / "exports" / "mini_npz" / "results.npz").is_file()
    # A finished job can be deleted (its files too); a second delete finds nothing.
    assert httpx.delete(f"{url}/jobs/{job['id']}").status_code == 200
    assert httpx.get(f"{url}/jobs/{job['id']}").status_code == 404


def test_status_request_is_answered_when_the_job_changes(backend, tmp_path):
    """With ``wait`` the server holds a status request until the job changes, so the client learns of the end at
    once (it polled every 0.5 s before) without asking over and over."""
    url, _ = backend
    scene = tmp_path / "scene"
    write_image_folder(make_capture(2, 64, 48), scene)
    archive = io.BytesIO()
    pack(scene, archive)
    params = [("override", "export=mini_npz"), ("override", "processing.process_res=28")]
    job = httpx.post(
        f"{url}/jobs", params=params, content=archive.getvalue(), headers={"Content-Type": "application/x-tar"}
    )
    assert job.status_code == 202, job.text
    lateness, answers = [], 0
    while True:
        record = httpx.get(f"{url}/jobs/{job.json()['id']}", params={"wait": 5}, timeout=30).json()
        answered, answers = time.time(), answers + 1
        if record["status"] == "completed":
            lateness.append(answered - record["finished_at"])
            break
    assert answers < 50 and lateness[0] < 0.3, (answers, lateness)
    started = time.monotonic()
    assert httpx.get(f"{url}/jobs/{record['id']}", params={"wait": 0.5}).json()["status"] == "completed"
    assert time.monotonic() - started < 0.3  # an ended job is answered at once


def test_server_paths_only_inside_allowed_roots(backend, tmp_path):
    url, root = backend
    allowed = root / "allowed"
    ok = httpx.post(
        url + "/jobs",
        json={
            "path": str(allowed / "pair"),
            "overrides": ["export=mini_npz", "processing.process_res=28", "model=da3-small", "model.weights=random"],
        },
    )  # same model: ok
    assert ok.status_code == 202, ok.text
    for path in (
        str(root / "secret"),
        str(allowed / ".." / "secret"),
        str(allowed / "escape"),
        "/etc",
        f"{allowed}/../../{root.name}/secret",
    ):
        response = httpx.post(url + "/jobs", json={"path": path, "overrides": []})
        assert response.status_code == 403, (path, response.text)
    deadline = time.time() + 60
    while httpx.get(f"{url}/jobs/{ok.json()['id']}").json()["status"] not in ("completed", "failed"):
        assert time.time() < deadline
        time.sleep(0.2)
    assert httpx.get(f"{url}/jobs/{ok.json()['id']}").json()["status"] == "completed"


def _tar(entries: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for info, data in entries:
            info.size = len(data) if data is not None else 0
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def test_traversal_and_bad_requests_refused(backend, tmp_path):
    url, root = backend
    link = tarfile.TarInfo("scene/evil")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    bad_archives = {
        "dotdot": _tar([(tarfile.TarInfo("../evil.png"), b"x")]),
        "nested dotdot": _tar([(tarfile.TarInfo("scene/../../evil.png"), b"x")]),
        "absolute": _tar([(tarfile.TarInfo(str(tmp_path / "evil.png")), b"x")]),
        "symlink": _tar([(link, None)]),
        "not a tar": b"definitely not a tar archive" * 40,
        "truncated": _tar([(tarfile.TarInfo("scene/a.png"), b"x" * 5000)])[:1536],
    }
    tar_headers = {"Content-Type": "application/x-tar"}
    for name, body in bad_archives.items():
        response = httpx.post(url + "/jobs", content=body, headers=tar_headers)
        assert response.status_code == 400, (name, response.text)
    assert not (tmp_path / "evil.png").exists() and not (root / "evil.png").exists()
    assert not list((root / "workspace").rglob("evil*"))
    for path in (
        "/jobs/..%2f..%2fetc%2fpasswd",
        "/jobs/%2e%2e/%2e%2e/etc/passwd/result",
        "/jobs/../../etc/passwd",
        "/gallery/files/%2e%2e/%2e%2e/etc/passwd",
        "/gallery/files/..%2F..%2Fetc%2Fpasswd",
        "/gallery/scene/..%2F..%2Fetc",
    ):
        response = httpx.get(url + path)
        assert 400 <= response.status_code < 500 and "root:" not in response.text, path
    one = io.BytesIO()
    pack(root / "allowed" / "pair", one)
    for override in (
        "scene=/etc",
        "output_dir=/tmp/x",
        "storage.root=/tmp",
        "model.weights=pretrained",
        "+storage.options.key=x",
        "model=da3-large",
        "export=${oc.env:HOME}",
        "processing.process_res=5",
        "input.sparse_subdir=../../etc",
        "input.sparse_subdir=/etc",
        "hydra.run.dir=/tmp",
    ):
        response = httpx.post(url + "/jobs", params={"override": override}, content=one.getvalue(), headers=tar_headers)
        assert response.status_code == 400, (override, response.text)
    assert httpx.post(url + "/jobs", content=b"{}", headers={"Content-Type": "text/plain"}).status_code == 415
    refused = httpx.post(
        url + "/jobs", params={"override": "model=da3-large"}, content=one.getvalue(), headers=tar_headers
    )
    assert "runs da3-small with random weights and cannot switch models" in refused.json()["detail"]
    assert (
        httpx.post(url + "/jobs", content=b" " * (2 << 20), headers={"Content-Type": "application/json"}).status_code
        == 413
    )


def test_upload_limit_and_gallery_and_pages(backend, tmp_path):
    url, _ = backend
    big = tmp_path / "big"
    big.mkdir()
    (big / "noise.png").write_bytes(np.random.default_rng(0).bytes(1_200_000))
    archive = io.BytesIO()
    pack(big, archive)
    headers = {"Content-Type": "application/x-tar"}
    assert httpx.post(url + "/jobs", content=archive.getvalue(), headers=headers).status_code == 413
    chunks = (archive.getvalue()[i : i + 65536] for i in range(0, len(archive.getvalue()), 65536))
    assert httpx.post(url + "/jobs", content=chunks, headers=headers).status_code == 413  # chunked: no length
    manifest = httpx.get(url + "/gallery/manifest.json").json()
    assert [s["id"] for s in manifest["scenes"]] == ["room"]
    assert httpx.get(url + manifest["scenes"][0]["model"]).content[:4] == b"glTF"
    assert "/gallery/scene/room" in httpx.get(url + "/gallery/").text
    status = httpx.get(url + "/status").json()
    assert status["model"]["preset"] == "da3-small" and status["model"]["weights"] == "random"
    assert status["device"] == "cpu" and status["memory"]["rss_mb"] > 50 and status["queue"]["max"] == 4
    dashboard = httpx.get(url + "/dashboard").text
    jobs = httpx.get(url + "/jobs").json()["jobs"]
    assert "da3-small" in dashboard and "process RSS" in dashboard and jobs and "completed" in dashboard
    assert "/dashboard" in httpx.get(url + "/").text


def test_unreachable_backend_fails_fast(tmp_path):
    started = time.perf_counter()
    port = free_port()
    with pytest.raises(BackendError, match=f"no backend at http://127.0.0.1:{port}; start one with `da3 backend`"):
        run_on_backend(f"http://127.0.0.1:{port}", [], str(tmp_path), str(tmp_path / "out"), progress=False)
    assert time.perf_counter() - started < 6
    with pytest.raises(BackendError, match="sets scene itself"):
        run_on_backend(f"http://127.0.0.1:{port}", ["scene=x"], str(tmp_path), str(tmp_path / "out"))


def test_bounded_queue_refuses_with_503(tmp_path):
    """Without its lifespan the app's worker never starts, so the queue fills deterministically."""
    write_image_folder(make_capture(1, 64, 48), tmp_path / "one")
    archive = io.BytesIO()
    pack(tmp_path / "one", archive)
    app = create_app(**MODEL, max_queue=2, workspace_dir=str(tmp_path / "ws"))
    client = TestClient(app)
    headers = {"Content-Type": "application/x-tar"}
    accepted = [client.post("/jobs", content=archive.getvalue(), headers=headers) for _ in range(2)]
    assert [r.status_code for r in accepted] == [202, 202]
    refused = client.post("/jobs", content=archive.getvalue(), headers=headers)
    assert refused.status_code == 503 and "queue is full" in refused.json()["detail"]
    assert client.delete(f"/jobs/{accepted[0].json()['id']}").status_code == 409  # queued: not deletable
    status = client.get("/status").json()
    assert status["queue"]["length"] == 2 and status["jobs"]["accepted"] == 2 and status["jobs"]["rejected"] == 1
    app.state.service.queue.stop()  # queued jobs are failed with the reason, never dropped
    assert [r["status"] for r in client.get("/jobs").json()["jobs"]] == ["failed", "failed"]
    records = [client.get(f"/jobs/{r.json()['id']}").json() for r in accepted]
    assert all(r["status"] == "failed" and "shut down" in r["error"] for r in records)


def test_token_required_on_every_route_but_static(tmp_path):
    app = create_app(**MODEL, token="s3cret", gallery_dir=str(tmp_path / "gallery"), workspace_dir=str(tmp_path / "w"))
    client = TestClient(app)
    for path in ("/", "/dashboard", "/status", "/jobs", "/jobs/0123", "/gallery/", "/gallery/manifest.json"):
        assert client.get(path).status_code == 401, path
        assert client.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401, path
    assert client.post("/jobs", content=b"x", headers={"Content-Type": "application/x-tar"}).status_code == 401
    assert client.get("/status", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    first = client.get("/dashboard?token=s3cret")  # a browser: the query token sets a cookie for the next pages
    assert first.status_code == 200 and "da3_token" in first.headers["set-cookie"]
    assert client.get("/gallery/").status_code == 200  # the cookie now authenticates
    anonymous = TestClient(app)
    assert anonymous.get("/gallery/static/vendor/missing.js").status_code == 404  # static: open, no 401
    with pytest.raises(ExposureError, match="without a token"):
        serve(**MODEL, host="0.0.0.0", port=free_port())
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        "",
        0,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5", "GET", "/dashboard?token=s3cret&refresh=5", "1.1", 200),
        None,
    )
    RedactToken().filter(record)
    assert "s3cret" not in record.getMessage() and "refresh=5" in record.getMessage()


def test_cli_use_backend_matches_cli_local(backend, tmp_path, image_folder):
    """The `da3` command line's --use-backend path against this server: same outputs as the same command run here."""
    from typer.testing import CliRunner

    from flows import cli

    url, _ = backend
    flags = [
        "images",
        str(image_folder),
        "--weights",
        "random",
        "--preset",
        "da3-small",
        "--process-res",
        "56",
        "--export-format",
        "mini_npz-glb",
        "--num-max-points",
        "2000",
    ]
    local = CliRunner().invoke(cli.app, [*flags, "--device", "cpu", "--export-dir", str(tmp_path / "local")])
    remote = CliRunner().invoke(
        cli.app, [*flags, "--use-backend", "--backend-url", url, "--export-dir", str(tmp_path / "remote")]
    )
    assert local.exit_code == 0 and remote.exit_code == 0, (local.output, remote.output)
    _assert_same_outputs(tmp_path / "local", tmp_path / "remote")
