"""The scheduled batch and evaluation deployments against a real Prefect server on 127.0.0.1: register, trigger,
completion."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request

import pytest

from da3core.store import SceneStore
from da3core.synthetic import make_capture, write_image_folder, write_miniature
from paths import REPO_ROOT
from s3server import free_port

pytestmark = pytest.mark.slow


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
    server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                               "--port", str(port)], env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_http(f"http://127.0.0.1:{port}/api/health", 120)
        yield {**env, "PREFECT_API_URL": f"http://127.0.0.1:{port}/api"}
    finally:
        os.killpg(server.pid, 15)
        server.wait(30)


def _serve_and_trigger(env: dict[str, str], flow: str, name: str, overrides: list[str]) -> None:
    """Serve ``flow`` as deployment ``name`` with a cron schedule, trigger one run and wait for it to complete."""
    serve = subprocess.Popen([sys.executable, "deployments/serve.py", "--flow", flow, "--name", name,
                              "--cron", "0 3 * * *", *overrides], cwd=REPO_ROOT, env=env, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        script = (
            "import asyncio, sys\n"
            "from prefect.client.orchestration import get_client\n"
            "from prefect.deployments import run_deployment\n"
            "async def main():\n"
            "    for _ in range(120):\n"
            "        async with get_client() as c:\n"
            "            try:\n"
            f"                d = await c.read_deployment_by_name('{flow}/{name}'); break\n"
            "            except Exception: await asyncio.sleep(1)\n"
            "    assert d.schedules and d.schedules[0].schedule.cron == '0 3 * * *', d.schedules\n"
            f"    run = await run_deployment('{flow}/{name}', timeout=600)\n"
            "    print(run.state.type.value)\n"
            "asyncio.run(main())\n"
        )
        result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                                timeout=900, cwd=REPO_ROOT)
        assert result.returncode == 0, result.stderr[-3000:]
        assert result.stdout.strip().splitlines()[-1] == "COMPLETED"
    finally:
        os.killpg(serve.pid, 15)
        serve.wait(30)


def test_served_deployment_runs_on_trigger(prefect_server, tmp_path):
    data, out = tmp_path / "data", tmp_path / "out"
    write_image_folder(make_capture(3, 64, 48, seed=5), data / "porch")
    _serve_and_trigger(prefect_server, "batch", "nightly-test",
                       [f"dataset={data}", f"storage.root={out}", "model=da3-small", "model.weights=random",
                        "processing.process_res=56", "export=mini_npz"])
    assert SceneStore(str(out / "porch" / "scene.zarr")).is_complete()


def test_served_evaluation_deployment_scores_the_benchmark(prefect_server, tmp_path):
    out = tmp_path / "eval"
    write_miniature("7scenes", tmp_path / "bench")
    _serve_and_trigger(prefect_server, "evaluate", "weekly-test",
                       ["benchmark=[7scenes]", f"bench_root={tmp_path / 'bench'}", "modes=[pose]",
                        f"output_dir={out}", "model=da3-small", "model.weights=random", "processing.process_res=56"])
    table = json.loads((out / "metric_results" / "7scenes_pose.json").read_text())
    assert set(table) == {"chess", "stairs", "mean"}
    assert SceneStore(str(out / "predictions" / "7scenes" / "chess" / "unposed" / "scene.zarr")).is_complete()
