"""Client of the backend service: upload a scene, run the reconstruct flow there, fetch the outputs."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from flows.backend.archive import pack, safe_extract

STATUS_TIMEOUT = 5.0  # seconds for /status: an unreachable backend is reported quickly
REQUEST_TIMEOUT = httpx.Timeout(30.0, read=300.0)  # uploads and downloads of big scenes take a while
WAIT_SECONDS = 5.0  # the server holds a status request until the job changes (at most this long)
POLL_SECONDS = 0.5  # between status requests that came back at once with no change (a server that does not hold)


class BackendError(RuntimeError):
    """The backend is unreachable, refused the request, or the job failed; the message says which."""


def _headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def _detail(response: httpx.Response) -> str:
    """The server's one-line reason for a refused request."""
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = None
    return str(detail or response.text.strip() or response.reason_phrase)


def _check(response: httpx.Response, what: str) -> httpx.Response:
    if response.status_code == 401:
        raise BackendError(f"{what}: the backend refused the token ({_detail(response)})")
    if response.status_code >= 400:
        raise BackendError(f"{what}: HTTP {response.status_code}: {_detail(response)}")
    return response


def backend_status(backend_url: str, token: str | None = None, client: httpx.Client | None = None) -> dict[str, Any]:
    """The backend's /status, or BackendError naming the URL when nothing answers there (through ``client`` when
    given: each new client builds an SSL context, tens of milliseconds)."""
    url = backend_url.rstrip("/")
    try:
        response = (client or httpx).get(f"{url}/status", headers=_headers(token), timeout=STATUS_TIMEOUT)
    except httpx.HTTPError as exc:
        raise BackendError(f"no backend at {url}; start one with `da3 backend` ({exc.__class__.__name__})") from exc
    return _check(response, f"backend at {url}").json()


def submit_job(client: httpx.Client, overrides: list[str], scene_path: str | Path) -> dict[str, Any]:
    """Upload ``scene_path`` (file or folder) as a tar and queue a job; returns the job record."""
    scene = Path(scene_path).expanduser()
    if not scene.exists():
        raise BackendError(f"input not found: {scene}")
    with tempfile.TemporaryFile() as archive:
        pack(scene, archive)
        archive.seek(0)
        response = client.post(
            "/jobs",
            params=[("override", o) for o in overrides],
            content=archive,
            headers={"Content-Type": "application/x-tar"},
        )
    if response.status_code == 503:
        raise BackendError(f"the backend is busy: {_detail(response)}")
    return _check(response, "job submission").json()


def wait_for_job(client: httpx.Client, job_id: str, progress: bool = True) -> dict[str, Any]:
    """Follow a job until it completes (its record) or fails (BackendError with its reason); the server answers
    each status request as soon as the job changes."""
    bar = None
    if progress:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        bar = Progress(
            TextColumn("[bold]backend[/] {task.description}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TimeElapsedColumn(),
            transient=False,
        )
        bar.start()
        task = bar.add_task("queued", total=1.0)
    try:
        seen = None
        while True:
            asked = time.monotonic()
            job = _check(client.get(f"/jobs/{job_id}", params={"wait": WAIT_SECONDS}), f"job {job_id}").json()
            if bar is not None:
                bar.update(task, completed=job["progress"], description=job["message"])
            if job["status"] in ("completed", "failed"):
                break
            state = (job["status"], job["progress"], job["message"])
            if state == seen and time.monotonic() - asked < WAIT_SECONDS / 2:
                time.sleep(POLL_SECONDS)
            seen = state
    finally:
        if bar is not None:
            bar.stop()
    if job["status"] == "failed":
        raise BackendError(f"job {job_id} failed on the backend: {job['error']}")
    return job


def download_result(client: httpx.Client, job_id: str, dest_dir: str | Path) -> list[str]:
    """Fetch a completed job's outputs and extract them (checked for escapes) into ``dest_dir``."""
    with tempfile.TemporaryFile() as archive:
        with client.stream("GET", f"/jobs/{job_id}/result") as response:
            if response.status_code >= 400:
                response.read()
                _check(response, f"result of job {job_id}")
            for chunk in response.iter_bytes(1 << 16):
                archive.write(chunk)
        archive.seek(0)
        return safe_extract(archive, dest_dir)


def run_on_backend(
    backend_url: str,
    overrides: list[str],
    scene_path: str,
    dest_dir: str,
    token: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the reconstruct flow for ``scene_path`` on the backend and put its outputs in ``dest_dir``.

    ``overrides`` are reconstruct-flow overrides without ``scene=``/``output_dir=`` (the backend sets those)
    and without model keys (the backend's model is fixed). Returns the finished job record.
    """
    for item in overrides:
        key = item.split("=", 1)[0].lstrip("+~")
        if key in ("scene", "output_dir"):
            raise BackendError(
                f"override {item!r}: the backend sets {key} itself; pass the input as scene_path "
                "and the destination as dest_dir"
            )
    url = backend_url.rstrip("/")
    with httpx.Client(base_url=url, headers=_headers(token), timeout=REQUEST_TIMEOUT) as client:
        backend_status(url, token, client)
        job = submit_job(client, overrides, scene_path)
        job = wait_for_job(client, job["id"], progress)
        download_result(client, job["id"], dest_dir)
    return job
