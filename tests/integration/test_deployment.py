"""Batch and evaluation deployments against a real Prefect server on 127.0.0.1: the served deployment
(deployments/serve.py) and the README's `prefect deploy --all` with the repository's prefect.yaml and a process work
pool. Both runs must honour the batch options, the task runner and concurrency included (read back from the task
runs and the stores)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import datetime

import pytest
from live import kill_group
from paths import REPO_ROOT
from s3server import free_port

from da3core.store import SceneStore
from da3core.synthetic import make_capture, write_image_folder, write_miniature
from flows.config import load_config, resolved

pytestmark = pytest.mark.slow

FAST = ["model=da3-small", "model.weights=random", "processing.process_res=56", "export=mini_npz"]

# Waits for the deployment, triggers it, and prints its final state and its scene task runs as JSON.
RUN_SCRIPT = """
import asyncio, json, sys
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName
from prefect.deployments import run_deployment
name, parameters, scenes = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3:]
async def main():
    for _ in range(120):
        async with get_client() as c:
            try:
                d = await c.read_deployment_by_name(name); break
            except Exception: await asyncio.sleep(1)
    run = await run_deployment(name, parameters=parameters or None, timeout=600)
    async with get_client() as c:  # task-run states are recorded from events, a moment after the run ends
        for _ in range(150):
            tasks = await c.read_task_runs(task_run_filter=TaskRunFilter(name=TaskRunFilterName(
                any_=[f"scene-{s}" for s in scenes])))
            if len(tasks) >= len(scenes) and all(t.state.is_final() for t in tasks): break
            await asyncio.sleep(0.2)
    print(json.dumps({"state": run.state.type.value, "crons": [s.schedule.cron for s in d.schedules],
                      "tasks": [[t.name, t.state.name, t.start_time.isoformat(), t.end_time.isoformat()]
                                for t in tasks]}))
asyncio.run(main())
"""


def _wait_http(url: str, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(url, timeout=2).status == 200:
                return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


@pytest.fixture()
def prefect_server(tmp_path):
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_http(f"http://127.0.0.1:{port}/api/health", 120)
        yield {**env, "PREFECT_API_URL": f"http://127.0.0.1:{port}/api"}
    finally:
        _stop(server)


def _start(argv: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        argv, cwd=REPO_ROOT, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM the group; Prefect's own worker or server that takes over 30 s to wind down (a loaded CI machine) is
    killed, so that no process outlives the test (a later test counts the Prefect processes it finds)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        kill_group(process.pid)
        process.wait(30)


def _run(env: dict[str, str], name: str, parameters: dict, scenes: list[str]) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", RUN_SCRIPT, name, json.dumps(parameters), *scenes],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        cwd=REPO_ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _overlap(tasks: list[list[str]]) -> bool:
    """Whether the scene task runs' [start, end] intervals overlap (they ran concurrently)."""
    (_, _, s1, e1), (_, _, s2, e2) = [[*t[:2], *map(datetime.fromisoformat, t[2:])] for t in tasks]
    return s1 < e2 and s2 < e1


def _two_scenes(root, names) -> None:
    for i, name in enumerate(names):
        write_image_folder(make_capture(3, 64, 48, seed=5 + i), root / name)


def test_served_deployment_runs_on_dask_workers(prefect_server, tmp_path):
    data, out = tmp_path / "data", tmp_path / "out"
    _two_scenes(data, ("porch", "deck"))
    overrides = [f"dataset={data}", f"storage.root={out}", "runner=dask", "dask_workers=2", *FAST]
    serve = _start(
        [sys.executable, "deployments/serve.py", "--name", "nightly-test", "--cron", "0 3 * * *", *overrides],
        prefect_server,
    )
    try:
        run = _run(prefect_server, "batch/nightly-test", {}, ["porch", "deck"])
    finally:
        _stop(serve)
    assert run["state"] == "COMPLETED" and run["crons"] == ["0 3 * * *"]
    assert sorted(t[1] for t in run["tasks"]) == ["Completed", "Completed"] and _overlap(run["tasks"])
    workers = {SceneStore(str(out / name / "scene.zarr")).attrs()["worker"]["pid"] for name in ("porch", "deck")}
    assert len(workers) == 2  # two worker processes: the Dask runner, not the flow process's threads


def test_prefect_deploy_all_with_a_process_work_pool(prefect_server, tmp_path):
    out = tmp_path / "out"
    _two_scenes(tmp_path / "one", ("attic", "cellar"))
    _two_scenes(tmp_path / "two", ("loft", "shed"))
    env = {**prefect_server, "PYTHONPATH": str(REPO_ROOT)}  # the worker's flow process imports this checkout
    subprocess.run(
        [sys.executable, "-m", "prefect", "work-pool", "create", "da3-process", "--type", "process"],
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    deploy = subprocess.run(
        [sys.executable, "-m", "prefect", "deploy", "--all"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert deploy.returncode == 0, deploy.stdout[-3000:] + deploy.stderr[-3000:]
    worker = _start([sys.executable, "-m", "prefect", "worker", "start", "--pool", "da3-process"], env)
    runs = {}
    try:
        for dataset, scenes, concurrency in (("one", ["attic", "cellar"], 1), ("two", ["loft", "shed"], 2)):
            cfg = resolved(
                load_config(
                    "batch",
                    [f"dataset={tmp_path / dataset}", f"storage.root={out}", f"concurrency={concurrency}", *FAST],
                )
            )
            runs[concurrency] = _run(env, "batch/nightly-batch", {"cfg": cfg}, scenes)
    finally:
        _stop(worker)
    assert [r["state"] for r in runs.values()] == ["COMPLETED", "COMPLETED"] and runs[1]["crons"] == ["0 3 * * *"]
    assert not _overlap(runs[1]["tasks"]) and _overlap(runs[2]["tasks"])  # the thread runner's concurrency
    for name in ("attic", "cellar", "loft", "shed"):
        store = SceneStore(str(out / name / "scene.zarr"))
        assert store.is_complete() and store.attrs()["model"]["preset"] == "da3-small"


def test_served_evaluation_deployment_scores_the_benchmark(prefect_server, tmp_path):
    out = tmp_path / "eval"
    write_miniature("7scenes", tmp_path / "bench")
    serve = _start(
        [
            sys.executable,
            "deployments/serve.py",
            "--flow",
            "evaluate",
            "--name",
            "weekly-test",
            "--cron",
            "0 3 * * *",
            "benchmark=[7scenes]",
            f"bench_root={tmp_path / 'bench'}",
            "modes=[pose]",
            f"output_dir={out}",
            *FAST[:3],
        ],
        prefect_server,
    )
    try:
        run = _run(prefect_server, "evaluate/weekly-test", {}, [])
    finally:
        _stop(serve)
    assert run["state"] == "COMPLETED" and run["crons"] == ["0 3 * * *"]
    table = json.loads((out / "metric_results" / "7scenes_pose.json").read_text())
    assert set(table) == {"chess", "stairs", "mean"}
    assert SceneStore(str(out / "predictions" / "7scenes" / "chess" / "unposed" / "scene.zarr")).is_complete()
