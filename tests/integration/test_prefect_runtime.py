"""Command-line runs and services through Prefect (flows.runtime): runs recorded in $PREFECT_HOME, concurrent runs on
one home, a configured API reused, no analytics, and no process left behind however a run or service ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
from paths import REPO_ROOT
from s3server import free_port

from da3core.synthetic import make_capture, write_image_folder

FAST = ["model=da3-small", "model.weights=random", "processing.process_res=56", "export=mini_npz"]
# Prefect's client reads back what a finished process recorded in $PREFECT_HOME: (flow, state, [task states]).
READ_RUNS = """
import json
from flows.runtime import prefect_runtime
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
with prefect_runtime(), get_client(sync_client=True) as client:
    runs = [(client.read_flow(run.flow_id).name, run.state.type.value,
             sorted(t.state.type.value for t in client.read_task_runs(
                 flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))))
            for run in client.read_flow_runs()]
print(json.dumps(runs))
"""


@pytest.fixture(scope="module")
def one_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One 64x48 view."""
    folder = tmp_path_factory.mktemp("one")
    write_image_folder(make_capture(1, 64, 48, seed=3), folder)
    return next(folder.iterdir())


def _env(home: Path, **extra: str) -> dict[str, str]:
    """A child's environment: its own PREFECT_HOME, no API of this test process, Prefect's analytics and logging
    as a user would have them (unset)."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PREFECT_HOME": str(home), **extra}
    for name in ("PREFECT_API_URL", "DO_NOT_TRACK", "PREFECT_SERVER_ANALYTICS_ENABLED", "PREFECT_LOGGING_LEVEL"):
        if name not in extra:
            env.pop(name, None)
    return env


def _reconstruct(image: Path, out: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "flows.reconstruct", f"scene={image}", f"storage.root={out}", *FAST],
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        stdin=subprocess.DEVNULL,
    )


def _recorded_runs(home: Path) -> list[list]:
    done = subprocess.run(
        [sys.executable, "-c", READ_RUNS], env=_env(home), cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _leftovers(home: Path, pids: set[int]) -> list[str]:
    """Live processes among ``pids`` or with ``home`` in their environment or command line (waits up to 10 s for
    them to end by themselves)."""
    deadline = time.monotonic() + 10
    while True:
        alive = []
        for proc in psutil.process_iter(["pid", "cmdline", "status"]):
            if proc.pid == os.getpid() or proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            try:
                mine = (
                    proc.pid in pids
                    or str(home) in " ".join(proc.info["cmdline"] or [])
                    or proc.environ().get("PREFECT_HOME") == str(home)
                )
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            if mine:
                alive.append(f"{proc.pid}: {' '.join(proc.info['cmdline'] or [])[:200]}")
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.5)


def test_flow_runs_report_to_the_api_in_this_process(prefect_api):
    """A flow run in a runtime block is recorded by the API that a thread of this process serves (no server
    process); nested blocks share that API, and child processes are pointed at it."""
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from flows.runtime import prefect_runtime

    @flow(name="runtime-probe")
    def probe(x: int) -> int:
        return x + 1

    with prefect_runtime() as url:
        assert url == prefect_api == os.environ["PREFECT_API_URL"]
        state = probe(1, return_state=True)
        servers = [p for p in psutil.Process().children(recursive=True) if "prefect" in " ".join(p.cmdline())]
        assert servers == []
    assert state.result() == 2
    only_this = FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=only_this)
    assert [run.state.type.value for run in runs] == ["COMPLETED"]


def test_api_answers_requests_on_a_kept_connection_at_once(prefect_api):
    """Requests after the first on one keep-alive connection (as Prefect's client sends them) are answered in
    milliseconds; with Nagle's algorithm on the server's connections each waited out the client's 40 ms delayed ACK.
    """
    import http.client
    from urllib.parse import urlsplit

    api = urlsplit(prefect_api)
    conn = http.client.HTTPConnection(api.hostname, api.port, timeout=10)
    seconds = []
    try:
        for _ in range(11):
            started = time.perf_counter()
            conn.request("GET", f"{api.path}/health")
            response = conn.getresponse()
            assert response.status == 200 and response.read() == b"true"
            seconds.append(time.perf_counter() - started)
    finally:
        conn.close()
    assert sorted(seconds[1:])[5] < 0.02, [round(s * 1000, 1) for s in seconds]


@pytest.mark.slow
def test_concurrent_runs_on_one_home_are_recorded(one_image, tmp_path):
    """Two runs at once on a fresh PREFECT_HOME (one sqlite database, migrated by whichever comes first) both succeed;
    afterwards Prefect's client reads both flow runs and their tasks as completed; no analytics line."""
    home = tmp_path / "prefect"
    procs = [_reconstruct(one_image, tmp_path / f"out{i}", _env(home)) for i in range(2)]
    outputs = [proc.communicate(timeout=600)[0] for proc in procs]
    for proc, output in zip(procs, outputs):
        assert proc.returncode == 0, output[-3000:]
        assert "telemetry" not in output.lower(), output[-3000:]
    runs = _recorded_runs(home)
    assert len(runs) == 2, runs
    for flow, state, tasks in runs:
        assert (flow, state) == ("reconstruct", "COMPLETED")
        assert tasks == ["COMPLETED"] * 4  # ingest, inference, align-poses, export-mini_npz


@pytest.mark.slow
def test_configured_api_is_used(one_image, tmp_path, prefect_api):
    """With PREFECT_API_URL set (here: this test process's API) the run reports there and serves nothing itself:
    its own PREFECT_HOME gets no database."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        before = {run.id for run in client.read_flow_runs()}
    home = tmp_path / "prefect"
    proc = _reconstruct(one_image, tmp_path / "out", _env(home, PREFECT_API_URL=prefect_api))
    output = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, output[-3000:]
    with get_client(sync_client=True) as client:
        new = [run for run in client.read_flow_runs() if run.id not in before]
    assert [run.state.type.value for run in new] == ["COMPLETED"]
    assert not (home / "prefect.db").exists()


@pytest.mark.slow
def test_killed_run_leaves_no_process(one_image, tmp_path):
    """SIGKILL in the middle of a flow run: nothing it started outlives it."""
    home = tmp_path / "prefect"
    proc = _reconstruct(one_image, tmp_path / "out", _env(home, PREFECT_LOGGING_LEVEL="INFO"))
    started = threading.Event()
    lines: list[str] = []

    def watch() -> None:
        for line in proc.stdout:
            lines.append(line)
            if "Beginning flow run" in line:
                started.set()

    threading.Thread(target=watch, daemon=True).start()
    assert started.wait(300), "".join(lines)[-3000:]
    children = {child.pid for child in psutil.Process(proc.pid).children(recursive=True)}
    proc.kill()
    proc.wait(30)
    assert _leftovers(home, children) == []


def _wait_http(url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer (exit code {proc.poll()})")


@pytest.mark.slow
@pytest.mark.parametrize(
    "service,sig",
    [
        ("backend", signal.SIGTERM),
        ("backend", signal.SIGINT),
        ("backend", signal.SIGKILL),
        ("gradio", signal.SIGTERM),
        ("gradio", signal.SIGINT),
    ],
)
def test_stopped_service_leaves_no_process(service, sig, tmp_path):
    """A service whose Prefect API is up (its model warm-up reached it), stopped by a signal: nothing outlives it."""
    home, port = tmp_path / "prefect", free_port()
    args = ["--preset", "da3-small", "--weights", "random", "--port", str(port), "--gallery-dir", str(tmp_path / "g")]
    if service == "gradio":
        args += ["--workspace-dir", str(tmp_path / "ws")]
    proc = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", service, *args],
        env=_env(home),
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    try:
        _wait_http(f"http://127.0.0.1:{port}/", proc, 600)
        children = {child.pid for child in psutil.Process(proc.pid).children(recursive=True)}
        proc.send_signal(sig)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert _leftovers(home, children) == []


# `da3 backend` with the shutdown grace for a running job cut from 30 s to 1 s.
SHORT_GRACE = """
import sys
import flows.backend.jobs as jobs
stop = jobs.JobQueue.stop
jobs.JobQueue.stop = lambda self, timeout=30.0: stop(self, 1.0)
from flows.cli import main
sys.argv = ["da3", "backend", *sys.argv[1:]]
main()
"""


@pytest.mark.slow
def test_backend_stopped_while_a_job_outlives_the_grace_period_exits_cleanly(tmp_path):
    """Ctrl-C while torch still computes a job: one line naming the unfinished job, exit 0, no C++ abort."""
    import httpx

    from flows.backend.archive import pack

    home, port = tmp_path / "prefect", free_port()
    args = ["--preset", "da3-small", "--weights", "random", "--port", str(port), "--device", "cpu"]
    proc = subprocess.Popen(
        [sys.executable, "-c", SHORT_GRACE, *args, "--gallery-dir", str(tmp_path / "g")],
        env=_env(home),
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_http(url + "/", proc, 600)
        write_image_folder(make_capture(16, 640, 480), tmp_path / "scene")  # a job of many seconds on a CPU
        archive = tmp_path / "scene.tar"
        with open(archive, "wb") as out:
            pack(tmp_path / "scene", out)
        overrides = [("override", "processing.process_res=504"), ("override", "export=glb")]
        tar = {"Content-Type": "application/x-tar"}
        job = httpx.post(url + "/jobs", params=overrides, content=archive.read_bytes(), headers=tar, timeout=60).json()[
            "id"
        ]
        deadline = time.monotonic() + 120
        while httpx.get(f"{url}/jobs/{job}", timeout=10).json()["status"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert f"da3 backend: stopped with job {job[:8]} unfinished" in err
    assert "Aborted" not in err and "terminate called" not in err


HEARTBEAT_IN_A_THREAD = """
import threading
from flows.runtime import prefect_runtime
from prefect.settings import get_current_settings
seen = []
with prefect_runtime():
    worker = threading.Thread(target=lambda: seen.append(get_current_settings().flows.heartbeat_frequency))
    worker.start()
    worker.join()
print(seen[0])
"""


@pytest.mark.parametrize(("user_setting", "expected"), [(None, "None"), ("60", "60")])
def test_threads_of_a_runtime_send_no_heartbeats_unless_asked(prefect_api, tmp_path, user_setting, expected):
    """A service's worker thread (no settings of its own) runs flows without heartbeats, whose thread held the end
    of every backend job for up to a second; a heartbeat frequency the user set is kept."""
    env = _env(tmp_path / "prefect", PREFECT_API_URL=prefect_api)
    env.pop("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", None)
    if user_setting:
        env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] = user_setting
    out = subprocess.run([sys.executable, "-c", HEARTBEAT_IN_A_THREAD], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == expected


URL_IN_A_THREAD = """
import json, os, threading
from flows.runtime import prefect_runtime
from prefect.settings import get_current_settings, temporary_settings
def seen():
    settings = get_current_settings()
    return [settings.api.url, settings.flows.heartbeat_frequency]
inside = []
with prefect_runtime() as url:
    worker = threading.Thread(target=lambda: inside.append(seen()))
    worker.start()
    worker.join()
    here = seen()
with temporary_settings(updates={"logging.level": "WARNING"}), prefect_runtime() as url2:  # own settings context
    own = seen()
print(json.dumps([url, inside[0], here, url2, own, seen(), os.environ.get("PREFECT_API_URL")]))
"""


def test_in_process_api_is_seen_by_every_thread_and_withdrawn(tmp_path):
    """Inside a block, this thread, a thread without settings of its own and a thread with its own settings context
    all report to the in-process API without heartbeats; after the block the URL is gone from settings and
    environment."""
    env = _env(tmp_path / "prefect")
    env.pop("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", None)
    out = subprocess.run([sys.executable, "-c", URL_IN_A_THREAD], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    url, inside, here, url2, own, after, environ = json.loads(out.stdout.strip().splitlines()[-1])
    assert url.startswith("http://127.0.0.1:") and url2.startswith("http://127.0.0.1:")
    assert inside == here == [url, None]
    assert own == [url2, None]
    assert after[0] is None and environ is None
