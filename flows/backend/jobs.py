"""The backend's jobs: a bounded FIFO queue and the single inference worker that runs the reconstruct flow.

Every accepted job ends ``completed`` or ``failed`` (a failure records one line and the worker goes on);
jobs still queued when the service stops are failed with that reason rather than dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import shutil
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from da3core.store import SceneStore
from flows.backend.archive import pack_contents
from flows.backend.policy import JobRequestError
from flows.config import ReconstructConfig, load_config
from flows.errors import user_message
from flows.progress import progress_to

log = logging.getLogger(__name__)
MAX_HISTORY = 100  # finished jobs kept (with their outputs); older ones are pruned, as upstream does
JOB_ID = re.compile(r"^[0-9a-f]{32}$")


class QueueFull(RuntimeError):
    """The bounded queue has no room; the client should retry later."""


def quote_path(path: str | Path) -> str:
    """A path as a quoted Hydra override value; refuses characters that quoting cannot make literal."""
    text = str(path)
    if any(c in text for c in "'\\$\n\r"):
        raise JobRequestError(f"path {text!r} contains a quote, backslash, '$' or newline; rename it")
    return f"'{text}'"


def pinned_model_overrides(model_dir: str | None, preset: str | None, weights: str, device: str) -> list[str]:
    """Overrides fixing the model to the service's startup options, resolved as the da3 commands resolve theirs
    (the preset from ``model_dir`` whatever the weights, else the default preset)."""
    from flows.cli_run import resolve_model

    preset, source = resolve_model(model_dir, preset, weights)
    pinned = [f"model={preset}", f"model.weights={weights}", f"model.device={device}"]
    return pinned + ([f"model.path={quote_path(source)}"] if source is not None else [])


def warm_model(pinned: list[str]) -> dict[str, Any]:
    """Load the pinned model into the process cache (tasks.model_cache) so the first job does not pay for it.

    Also reaches the Prefect API once: a configured server that does not answer fails here, not at the first job.
    """
    from prefect.client.orchestration import get_client

    from tasks.model_cache import get_model

    info = get_model(load_config("reconstruct", pinned).model).info
    with get_client(sync_client=True) as client:
        client.api_healthcheck()
    return info


CHANGE_CHECK_SECONDS = 0.02  # how often a held status request looks at its job


@dataclass
class Job:
    """One reconstruction request and what became of it."""

    id: str
    overrides: list[str]
    source: str  # the scene on the server: the extracted upload or an allowed path
    workspace: Path
    status: str = "queued"  # queued | running | completed | failed
    progress: float = 0.0
    message: str = "queued"
    error: str | None = None
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    result: dict[str, Any] | None = None
    upload_bytes: int = 0
    config: ReconstructConfig | None = field(default=None, repr=False)  # composed and checked once, at submission

    @property
    def output_dir(self) -> Path:
        """Where the flow writes the store and the exports."""
        return self.workspace / "out"

    @property
    def archive(self) -> Path:
        """The tar of ``output_dir`` served by ``/jobs/{id}/result``."""
        return self.workspace / "result.tar"

    def _settled(self, seen: tuple[str, float, str]) -> bool:
        return self.status in ("completed", "failed") or (self.status, self.progress, self.message) != seen

    async def wait_for_change(self, timeout: float) -> None:
        """Return once the job's status, progress or message differs from now, it has ended, or ``timeout`` passed.

        Asynchronous, so held requests wait on the event loop and never occupy the server's request threads."""
        seen = (self.status, self.progress, self.message)
        deadline = time.monotonic() + timeout
        while not self._settled(seen) and time.monotonic() < deadline:
            await asyncio.sleep(CHANGE_CHECK_SECONDS)

    def redact(self, text: str) -> str:
        """``text`` with paths in the job's upload shown relative to it (clients need not learn server folders)."""
        return text.replace(f"{self.workspace / 'input'}/", "")

    def record(self) -> dict[str, Any]:
        """The job as JSON-ready data for its owner, the client holding its id (no server paths)."""
        data = {k: v for k, v in asdict(self).items() if k not in ("workspace", "source", "config")}
        # A name read from the disk may hold bytes that are not UTF-8 (as surrogates): shown escaped, not fatal.
        data["scene"] = Path(self.source).name.encode("utf-8", "backslashreplace").decode("utf-8")
        return {**data, **self._durations()}

    def summary(self) -> dict[str, Any]:
        """The job as anyone may see it in listings: state and times only. Its id is the key to its data, and
        its scene, overrides and messages are its owner's."""
        return {
            "status": self.status,
            "progress": self.progress,
            "created_at": self.created_at,
            **self._durations(),
        }

    def _durations(self) -> dict[str, float | None]:
        return {
            "queued_seconds": (self.started_at or time.time()) - self.created_at,
            "run_seconds": (self.finished_at or time.time()) - self.started_at if self.started_at else None,
        }


def new_job(workspace_root: Path, overrides: list[str]) -> Job:
    """A job with a fresh id and an empty workspace folder (its source is set once the input is in place)."""
    job_id = uuid.uuid4().hex
    workspace = workspace_root / job_id
    workspace.mkdir(parents=True)
    return Job(job_id, overrides, "", workspace)


def server_overrides(job: Job, pinned: list[str]) -> list[str]:
    """What the backend sets for ``job``: input, output location, pinned model (the client's overrides go after)."""
    return [
        f"scene={quote_path(job.source)}",
        f"output_dir={quote_path(job.output_dir)}",
        f"storage.root={quote_path(job.workspace)}",
        *pinned,
    ]


def run_job(job: Job) -> dict[str, Any]:
    """Run the reconstruct flow on ``job``'s checked config (the same flow as ``python -m flows.reconstruct``); pack
    its outputs."""
    from flows.reconstruct import STORE_NAME, reconstruct

    def update(fraction: float, message: str) -> None:
        job.progress, job.message = round(fraction, 3), message

    if job.config is None:
        raise RuntimeError(f"job {job.id} was queued without its checked config")
    with progress_to(update):
        result = reconstruct(job.config)
    job.progress, job.message = 0.97, "packing outputs"
    store = SceneStore(str(job.output_dir / STORE_NAME))
    attrs = store.attrs()
    seen = for_client(attrs, job.workspace)
    store.update_attrs(**{key: value for key, value in seen.items() if value != attrs.get(key)})
    with open(job.archive, "wb") as out:
        pack_contents(job.output_dir, out)
    shutil.rmtree(job.output_dir)  # the archive is what is served; keeping both would double the disk use
    out_dir = str(job.output_dir)
    relative = lambda p: str(Path(p).relative_to(out_dir)) if str(p).startswith(out_dir) else str(p)  # noqa: E731
    return {
        "name": result.name,
        "status": result.status,
        "seconds": result.seconds,
        "exports": {fmt: [relative(p) for p in paths] for fmt, paths in result.exports.items()},
        "archive_bytes": job.archive.stat().st_size,
    }


def for_client(attrs: dict[str, Any], workspace: Path) -> dict[str, Any]:
    """A result store's attributes as its client gets them: paths in the job's workspace relative to it, and without
    the server's catalogue of named scenes and datasets (folders of the server, not of this job)."""

    def relative(value: Any) -> Any:
        if isinstance(value, str):
            return value.replace(f"{workspace}/", "").replace(str(workspace), ".")
        if isinstance(value, dict):
            return {k: relative(v) for k, v in value.items()}
        if isinstance(value, list):
            return [relative(v) for v in value]
        return value

    seen = relative(attrs)
    config = seen.get("config")
    if isinstance(config, dict):
        seen["config"] = {k: v for k, v in config.items() if k not in ("scenes", "datasets")}
    return seen


class JobQueue:
    """A bounded FIFO of jobs and one worker thread running them in order."""

    def __init__(
        self,
        runner: Callable[[Job], dict[str, Any]],
        max_queue: int,
        warm: Callable[[], Any] | None = None,
        history: int = MAX_HISTORY,
    ) -> None:
        self.runner, self.max_queue, self.warm, self.history = runner, max_queue, warm, history
        self.jobs: dict[str, Job] = {}  # insertion order = submission order
        self._queue: deque[Job] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._receiving = 0  # places held by submissions still being received or checked
        self._thread: threading.Thread | None = None
        self.running: Job | None = None
        self.counts = {"accepted": 0, "rejected": 0, "completed": 0, "failed": 0}
        self.warm_error: str | None = None

    def start(self) -> None:
        """Start the worker (it warms the model first)."""
        self._thread = threading.Thread(target=self._work, name="da3-backend-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Fail the queued jobs, let the running one finish (up to ``timeout``) and stop the worker."""
        with self._cond:
            self._stopping = True
            while self._queue:
                self._finish(self._queue.popleft(), None, "the backend shut down before this job started")
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def working(self) -> bool:
        """True while the worker thread runs (after :meth:`stop`: a job outlived its grace period)."""
        return self._thread is not None and self._thread.is_alive()

    def submit(self, job: Job) -> None:
        """Queue ``job`` or raise QueueFull when ``max_queue`` jobs are already waiting (or being received)."""
        with self.slot() as queue_it:
            queue_it(job)

    @contextlib.contextmanager
    def slot(self) -> Iterator[Callable[[Job], None]]:
        """Hold a place in the queue while a job is received and checked (QueueFull at once when there is none),
        so uploads in flight count against ``max_queue`` and a full server reads no more of them; yields the
        function that queues the job in that place."""
        with self._cond:
            self.check_room()
            self._receiving += 1
        held = True

        def queue_it(job: Job) -> None:
            nonlocal held
            with self._cond:
                if self._stopping:
                    raise QueueFull("the backend is shutting down; retry later")
                self._receiving, held = self._receiving - 1, False
                self.jobs[job.id] = job
                self._queue.append(job)
                self.counts["accepted"] += 1
                self._cond.notify()

        try:
            yield queue_it
        finally:
            if held:
                with self._cond:
                    self._receiving -= 1

    def check_room(self) -> None:
        """Raise QueueFull (and count the refusal) when a submission now would be refused."""
        with self._cond:
            if self._stopping or len(self._queue) + self._receiving >= self.max_queue:
                self.counts["rejected"] += 1
                raise QueueFull(f"the queue is full ({self.max_queue} jobs waiting); retry later")

    def queued(self) -> int:
        """Jobs waiting (not counting the running one)."""
        return len(self._queue)

    def recent(self, limit: int = 50) -> list[Job]:
        """The newest jobs first."""
        with self._cond:
            return list(reversed(self.jobs.values()))[:limit]

    def delete(self, job_id: str) -> bool:
        """Forget a finished job and remove its files; False if it is still queued or running."""
        with self._cond:
            job = self.jobs.get(job_id)
            if job is None or job.status not in ("completed", "failed"):
                return False
            del self.jobs[job_id]
        shutil.rmtree(job.workspace, ignore_errors=True)
        return True

    def _work(self) -> None:
        if self.warm is not None:
            try:
                self.warm()
            except Exception as exc:  # jobs will fail with the same reason; the service stays up to say so
                self.warm_error = user_message(exc)
                log.error("model warm-up failed: %s", self.warm_error)
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                job = self.running = self._queue.popleft()
            job.status, job.started_at, job.progress, job.message = "running", time.time(), 0.02, "starting"
            try:
                result, error = self.runner(job), None
            except BaseException as exc:  # noqa: BLE001 - any failure is the job's, never the worker's
                result, error = None, job.redact(user_message(exc))
                log.warning("job %s failed: %s", job.id, error)
            with self._cond:
                self.running = None
                self._finish(job, result, error)
                self._prune()

    def _finish(self, job: Job, result: dict[str, Any] | None, error: str | None) -> None:
        job.finished_at = time.time()
        if error is None:
            job.status, job.progress, job.message, job.result = "completed", 1.0, "completed", result
        else:
            job.status, job.message, job.error = "failed", f"failed: {error}", error
        self.counts[job.status] += 1
        shutil.rmtree(job.workspace / "input", ignore_errors=True)  # the upload is not needed any more

    def _prune(self) -> None:
        finished = [j for j in self.jobs.values() if j.status in ("completed", "failed")]
        for job in finished[: max(0, len(finished) - self.history)]:
            del self.jobs[job.id]
            shutil.rmtree(job.workspace, ignore_errors=True)
