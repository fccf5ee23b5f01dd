"""The backend service: a resident model behind an HTTP job queue (FastAPI + uvicorn).

Clients upload a scene (an uncompressed tar of a file or folder) or name a path inside the allowed roots,
with reconstruct-flow overrides; one worker runs the jobs through the same ``reconstruct`` flow as the
command line, with the model pinned to the service's own startup options.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse
from starlette.requests import ClientDisconnect

from da3core.errors import UserError
from flows.backend.archive import safe_extract
from flows.backend.auth import RedactToken, TokenGate, check_exposure
from flows.backend.jobs import (
    JOB_ID,
    Job,
    JobQueue,
    QueueFull,
    new_job,
    pinned_model_overrides,
    run_job,
    server_overrides,
    warm_model,
)
from flows.backend.limits import JobLimits
from flows.backend.pages import dashboard_page, home_page
from flows.backend.policy import JobRequestError, check_job, check_overrides, parse_path_job
from flows.backend.uploads import read_small, receive_upload
from flows.config import ConfigError, load_config
from flows.runtime import prefect_runtime

TAR_TYPES = ("application/x-tar", "application/octet-stream")
# A held status request waits on the event loop; the cap keeps a client checking that it is still connected.
MAX_WAIT_SECONDS = 5.0


class Service:
    """The backend's state: pinned model, job queue, workspace and limits."""

    def __init__(
        self,
        model_dir: str | None,
        preset: str | None,
        weights: str,
        device: str,
        max_queue: int,
        max_upload_mb: int,
        allowed_roots: list[str] | None,
        workspace_dir: str | None,
        gallery_dir: str | None,
        token: str | None,
        limits: JobLimits,
    ) -> None:
        self.pinned = pinned_model_overrides(model_dir, preset, weights, device)
        # What a client may restate (not change): the resolved preset and the weights kind.
        self.model = {"model": load_config("reconstruct", self.pinned).model.preset, "model.weights": weights}
        self.max_upload = max_upload_mb * 1024 * 1024
        self.limits, self.max_files = limits, limits.files_for(self.max_upload)
        self.allowed_roots = [Path(r).expanduser().resolve() for r in allowed_roots or []]
        self.own_workspace = workspace_dir is None
        self.workspace = Path(workspace_dir or tempfile.mkdtemp(prefix="da3-backend-")).resolve()
        self.workspace.mkdir(parents=True, exist_ok=True)
        self.gallery_dir, self.auth = gallery_dir, token is not None
        self.started_at = time.time()
        self.model_info: dict[str, Any] | None = None
        self.load_seconds: float | None = None
        self.queue = JobQueue(run_job, max_queue, warm=self.warm)

    def warm(self) -> dict[str, Any]:
        """Load the pinned model (once per process) and remember what was loaded."""
        if self.model_info is None:
            started = time.perf_counter()
            self.model_info = warm_model(self.pinned)
            self.load_seconds = time.perf_counter() - started
        return self.model_info

    def status(self) -> dict[str, Any]:
        """What /status reports."""
        running = self.queue.running
        return {
            "service": "da3pipe backend",
            "model_loaded": self.model_info is not None,
            "model": self.model_info,
            "model_error": self.queue.warm_error,
            "model_overrides": self.pinned,
            "weights": self.model["model.weights"],
            "device": (self.model_info or {}).get("device", "loading"),
            "load_seconds": self.load_seconds,
            "uptime_seconds": time.time() - self.started_at,
            "queue": {
                "length": self.queue.queued(),
                "max": self.queue.max_queue,
                "running": running is not None,  # not its id: an id is the key to that job's outputs
            },
            "jobs": dict(self.queue.counts),
            "memory": memory(),
            "max_upload_mb": self.max_upload // (1024 * 1024),
            "limits": {
                "max_files": self.max_files,
                "max_process_res": self.limits.max_process_res,
                "max_pixels": self.limits.max_pixels,
                "max_input_pixels": self.limits.max_input_pixels,
            },
            "gallery": self.gallery_dir is not None,
            "auth": self.auth,
            "server_paths": bool(self.allowed_roots),
        }

    def allowed_path(self, path: str) -> Path:
        """``path`` resolved (links and ``..`` included) if it lies inside an allowed root, else 403."""
        if not self.allowed_roots:
            raise HTTPException(403, "this backend accepts uploads only (start it with allowed roots for server paths)")
        try:
            resolved = Path(path).expanduser().resolve()
            inside = any(resolved.is_relative_to(root) for root in self.allowed_roots)
            exists = inside and resolved.exists()
        except (RuntimeError, OSError, ValueError) as exc:  # an unknown ~user, a link loop, a name too long
            raise HTTPException(400, f"path {path[:200]!r} cannot be resolved on the backend") from exc
        if not inside:
            raise HTTPException(403, f"path {path!r} is outside the backend's allowed roots")
        if not exists:
            raise HTTPException(404, f"path {path!r} does not exist on the backend")
        return resolved

    def job(self, job_id: str) -> Job:
        """The job with this id, else 404 (malformed ids included, so they never reach the filesystem)."""
        job = self.queue.jobs.get(job_id) if JOB_ID.match(job_id) else None
        if job is None:
            raise HTTPException(404, f"no job {job_id!r}")
        return job


def memory() -> dict[str, Any]:
    """This process's resident memory, and the CUDA allocator's figures when CUDA is in use."""
    import psutil
    import torch

    out: dict[str, Any] = {"rss_mb": psutil.Process().memory_info().rss / 2**20, "cuda": None}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        free, total = torch.cuda.mem_get_info()
        out["cuda"] = {
            "allocated_mb": torch.cuda.memory_allocated() / 2**20,
            "reserved_mb": torch.cuda.memory_reserved() / 2**20,
            "free_mb": free / 2**20,
            "total_mb": total / 2**20,
        }
    return out


def create_app(
    model_dir: str | None,
    preset: str | None,
    weights: str,
    device: str,
    gallery_dir: str | None = None,
    token: str | None = None,
    max_queue: int = 8,
    max_upload_mb: int = 512,
    allowed_roots: list[str] | None = None,
    workspace_dir: str | None = None,
    limits: JobLimits | None = None,
) -> FastAPI:
    """The backend app; its worker starts (and warms the model) with the app's lifespan."""
    service = Service(
        model_dir,
        preset,
        weights,
        device,
        max_queue,
        max_upload_mb,
        allowed_roots,
        workspace_dir,
        gallery_dir,
        token,
        limits or JobLimits(),
    )

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        service.queue.start()
        yield
        await run_in_threadpool(service.queue.stop)
        if service.own_workspace:
            shutil.rmtree(service.workspace, ignore_errors=True)

    app = FastAPI(title="da3pipe backend", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = service
    if token is not None:
        app.add_middleware(TokenGate, token=token, open_prefixes=("/gallery/static/",))

    @app.get("/", response_class=HTMLResponse)
    def home() -> str:
        """The home page."""
        return home_page(service.status())

    @app.get("/dashboard", response_class=HTMLResponse)
    def dashboard(refresh: int | None = None) -> str:
        """Model, device, memory, queue and recent jobs; ``?refresh=5`` reloads every 5 s."""
        return dashboard_page(service.status(), [j.summary() for j in service.queue.recent()], refresh)

    @app.get("/status")
    def status() -> dict[str, Any]:
        """The service's state as JSON."""
        return service.status()

    @app.post("/jobs", status_code=202)
    async def submit(request: Request) -> dict[str, Any]:
        """Queue a job: a tar upload (overrides as repeated ``override`` query parameters) or ``{path, overrides}``."""
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind not in (*TAR_TYPES, "application/json"):
            raise HTTPException(415, "send the input as application/x-tar, or JSON {path, overrides}")
        try:
            # A place in the queue before the body is read: a busy server takes no upload, and uploads in flight
            # count as queued (so many at once cannot fill the disk before the queue refuses them).
            with service.queue.slot() as queue_it:
                return await _submit(request, kind, queue_it)
        except QueueFull as exc:
            raise HTTPException(503, str(exc)) from exc

    async def _submit(request: Request, kind: str, queue_it: Callable[[Job], None]) -> dict[str, Any]:
        """Receive, check and queue one job in the place ``queue_it`` holds."""
        job: Job | None = None
        try:
            if kind == "application/json":
                try:
                    body = parse_path_job(json.loads(await read_small(request, 1 << 20)))
                except (ValueError, RecursionError) as exc:  # JobRequestError is a ValueError too
                    raise HTTPException(
                        400, str(exc) if isinstance(exc, JobRequestError) else f"request body is not JSON: {exc}"
                    ) from exc
                overrides = check_overrides(body.overrides, service.model)
                source = service.allowed_path(body.path)
                job = new_job(service.workspace, overrides)
                job.source, roots = str(source), service.allowed_roots
            else:
                # Before the upload is stored: keys a client may never set are refused without reading it.
                job = new_job(
                    service.workspace, check_overrides(request.query_params.getlist("override"), service.model)
                )
                await _prepare_upload(request, job)
                roots = [job.workspace / "input"]
            # The whole config now, composed as the worker will: a bad job is a 400 here, not a failed job later.
            job.config = await run_in_threadpool(
                check_job,
                job.overrides,
                server_overrides(job, service.pinned),
                Path(job.source),
                service.model,
                service.limits,
                roots,
            )
            queue_it(job)
        except BaseException as exc:
            # Whatever went wrong (a refusal, a bug, a client gone mid-upload), no files outlive a job not queued.
            if job is not None:
                shutil.rmtree(job.workspace, ignore_errors=True)
            if isinstance(exc, (ConfigError, UserError)):
                raise HTTPException(400, job.redact(str(exc)) if job is not None else str(exc)) from exc
            if isinstance(exc, QueueFull):
                raise HTTPException(503, str(exc)) from exc
            if isinstance(exc, ClientDisconnect):
                raise HTTPException(400, "the client disconnected before the upload was complete") from exc
            raise
        return job.record()

    async def _prepare_upload(request: Request, job: Job) -> None:
        """Receive and safely extract the uploaded tar; its single top-level entry is the scene."""
        try:
            job.upload_bytes = await receive_upload(request, job.workspace / "upload.tar", service.max_upload)
            names = await run_in_threadpool(
                safe_extract,
                job.workspace / "upload.tar",
                job.workspace / "input",
                service.max_upload,
                service.max_files,
            )
        finally:
            (job.workspace / "upload.tar").unlink(missing_ok=True)
        if len(names) != 1:
            raise HTTPException(400, f"the upload must hold one file or folder at its top level, not {len(names)}")
        job.source = str(job.workspace / "input" / names[0])

    @app.get("/jobs")
    def jobs(limit: int = 50) -> dict[str, Any]:
        """The most recent jobs, newest first (state and times only), and the totals."""
        return {
            "jobs": [j.summary() for j in service.queue.recent(limit)],
            "counts": dict(service.queue.counts),
            "queue_length": service.queue.queued(),
        }

    @app.get("/jobs/{job_id}")
    async def job_status(job_id: str, wait: float = 0.0) -> dict[str, Any]:
        """One job's status, progress, message, timings and error; with ``wait`` seconds (at most MAX_WAIT_SECONDS)
        the answer comes once one of the first three changes or the job ends, so a client learns at once."""
        job = service.job(job_id)
        await job.wait_for_change(min(max(wait, 0.0), MAX_WAIT_SECONDS))
        return job.record()

    @app.get("/jobs/{job_id}/result")
    def job_result(job_id: str) -> FileResponse:
        """The job's outputs (store and exports) as an uncompressed tar; 409 until the job has completed."""
        job = service.job(job_id)
        if job.status != "completed":
            raise HTTPException(409, f"job {job_id} is {job.status}" + (f": {job.error}" if job.error else ""))
        return FileResponse(job.archive, media_type="application/x-tar", filename=f"{job.id}.tar")

    @app.delete("/jobs/{job_id}")
    def delete_job(job_id: str) -> dict[str, Any]:
        """Forget a finished job and delete its files; 409 while it is queued or running."""
        job = service.job(job_id)
        if not service.queue.delete(job_id):
            raise HTTPException(409, f"job {job_id} is {job.status}; only finished jobs can be deleted")
        return {"deleted": job_id}

    if gallery_dir is not None:
        from flows.gallery import create_gallery_app

        Path(gallery_dir).mkdir(parents=True, exist_ok=True)
        app.mount("/gallery", create_gallery_app(gallery_dir, prefix="/gallery"))
    return app


def serve(
    model_dir: str | None,
    preset: str | None,
    weights: str,
    device: str,
    host: str = "127.0.0.1",
    port: int = 8008,
    gallery_dir: str | None = None,
    token: str | None = None,
    max_queue: int = 8,
    max_upload_mb: int = 512,
    allowed_roots: list[str] | None = None,
    workspace_dir: str | None = None,
    limits: JobLimits | None = None,
) -> None:
    """Run the backend with uvicorn until interrupted; the model is loaded before the port opens."""
    import uvicorn

    check_exposure(host, token, "backend")
    app = create_app(
        model_dir,
        preset,
        weights,
        device,
        gallery_dir,
        token,
        max_queue,
        max_upload_mb,
        allowed_roots,
        workspace_dir,
        limits,
    )
    with prefect_runtime():  # the jobs' flow runs report to it; it ends with this process, however that ends
        app.state.service.warm()  # a model that cannot load stops the service here, with its error
        _import_before_serving()
        if token:
            logging.getLogger("uvicorn.access").addFilter(RedactToken())
        uvicorn.run(app, host=host, port=port, log_level="info")
        if app.state.service.queue.working():
            # A job outlived the shutdown grace period and torch is still computing it in the worker thread: ending
            # the interpreter under it aborts (SIGABRT, a C++ stack dump). Its workspace is gone; end here instead.
            running = app.state.service.queue.running
            what = f"job {running.id[:8]} unfinished" if running else "the worker still busy"
            print(f"da3 backend: stopped with {what}", file=sys.stderr)
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)


def _import_before_serving() -> None:
    """Imports with process-wide side effects that uvicorn's own setup (next) must override, not follow."""
    # Importing Prefect's flow API configures logging, uvicorn's loggers included (WARNING level): at the
    # first job that would silence the access log. Imported now, uvicorn's log config is applied after it.
    # Importing pycolmap installs glog's fatal-signal handlers, SIGTERM included: at the first COLMAP job
    # that would turn SIGTERM into an instant kill. Imported now, uvicorn's signal handlers replace them.
    import pycolmap  # noqa: F401

    import flows.reconstruct  # noqa: F401
