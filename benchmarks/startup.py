"""Start-up cost of a one-image run, each in a fresh process, split into phases, per way of reaching Prefect's API.

    python benchmarks/startup.py [--runs 5] [--apis prefect inprocess server] [--entry module|cli] [--no-write]

Each run is ``python -m flows.reconstruct scene=<one 640x480 image> model=da3-small model.weights=random
export=mini_npz`` (``--entry cli``: ``da3 image ... --weights random``) in a child process that times its own
phases: interpreter start, ``import torch`` (first, on its own: only the model needs it), the other imports,
config composition, starting or reaching the Prefect API, flow bookkeeping (flow wall time less the work
inside it), model load, inference (decode + forward), exports, stopping an API the run started (when the run
ends, not at exit), and the exit (from the end of ``main`` until the process is gone, as the parent sees it).
APIs, run in turn so that machine load hits them alike:

- ``prefect``: Prefect's own temporary API server (a subprocess per process; what main did before).
- ``inprocess``: no server configured: the API in a thread of the process (``flows.runtime``), the default now.
- ``server``: a running ``prefect server start`` reached through ``PREFECT_API_URL``.
- ``backend``: a running ``da3 backend`` (model loaded once) and ``da3 image ... --use-backend``: the client
  process is timed from outside; the job's queue and flow times come from its record, inference and exports from
  the store the client downloads. The advice for many jobs.

The first run of each API (a fresh ``PREFECT_HOME``: database migrations) is reported apart; medians of the rest.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's packages, also when run as a script from elsewhere
APIS = ("prefect", "inprocess", "server", "backend")
PHASES = (
    "client",
    "queue",
    "interpreter",
    "torch import",
    "imports",
    "config",
    "prefect start",
    "flow bookkeeping",
    "model load",
    "inference",
    "exports",
    "prefect stop",
    "other",
    "exit",
)


def _timed(record: dict[str, float], key: str, fn: Callable) -> Callable:
    """``fn`` adding its wall time to ``record[key]``."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            record[key] = record.get(key, 0.0) + time.perf_counter() - started

    return wrapper


def child(api: str, entry: str, out: str, argv: list[str]) -> int:
    """One timed run in this (fresh) process; phases go to ``out`` as JSON."""
    t: dict[str, float] = {"start": time.time()}
    import torch  # noqa: F401

    t["torch"] = time.time()
    import flows.config
    import flows.errors
    import flows.reconstruct
    import flows.runtime
    import tasks.reconstruction

    t["imports"] = time.time()
    spans: dict[str, float] = {}
    flows.config.load_config = _timed(spans, "config", flows.config.load_config)
    flows.runtime._acquire = _timed(spans, "prefect start", flows.runtime._acquire)
    flows.runtime._release = _timed(spans, "prefect stop", flows.runtime._release)
    if api == "prefect":  # as before flows.runtime: Prefect starts its temporary server (at exit: stops it)
        flows.errors.prefect_runtime = contextlib.nullcontext
        started = time.perf_counter()
        from prefect.server.api.server import SubprocessASGIServer  # what the flow's first API call imports

        spans["prefect import"] = time.perf_counter() - started
        SubprocessASGIServer.start = _timed(spans, "prefect start", SubprocessASGIServer.start)
    flows.reconstruct.reconstruct = _timed(spans, "flow", flows.reconstruct.reconstruct)
    tasks.reconstruction.get_model = _timed(spans, "model load", tasks.reconstruction.get_model)
    stores: list[str] = []
    flows.reconstruct.SceneStore = _recording(flows.reconstruct.SceneStore, stores)
    if entry == "cli":
        from flows.cli import app

        try:
            app(argv, prog_name="da3")
        except SystemExit as exc:
            code = int(exc.code or 0)
    else:
        code = flows.reconstruct.main(argv)
    t["main_done"] = time.time()
    from da3core.store import SceneStore

    timings = SceneStore(stores[0]).attrs()["timings"] if stores else {}
    with open(out, "w") as f:
        json.dump({"t": t, "spans": spans, "timings": timings, "code": code}, f)
    return code


def _recording(cls: type, urls: list[str]) -> Callable:
    """``cls`` (the scene store) noting the URL of each store the flow opens."""

    def make(url: str, *args: Any, **kwargs: Any) -> Any:
        urls.append(url)
        return cls(url, *args, **kwargs)

    return make


def phases(record: dict[str, Any], spawned: float, ended: float) -> dict[str, float]:
    """Seconds per phase of one child run."""
    t, spans, timings = record["t"], record["spans"], record["timings"]
    inference = timings.get("decode", 0.0) + timings.get("inference", 0.0)
    exports = sum(v for k, v in timings.items() if k.startswith("export_"))
    out = {
        "client": 0.0,
        "queue": 0.0,
        "interpreter": t["start"] - spawned,
        "torch import": t["torch"] - t["start"],
        "imports": t["imports"] - t["torch"],
        "config": spans.get("config", 0.0),
        "prefect start": spans.get("prefect start", 0.0) + spans.get("prefect import", 0.0),
        "prefect stop": spans.get("prefect stop", 0.0),
        "model load": spans.get("model load", 0.0),
        "inference": inference,
        "exports": exports,
        "exit": ended - t["main_done"],
    }
    inside_flow = (
        out["model load"]
        + inference
        + exports
        + (spans.get("prefect start", 0.0) if record.get("api") == "prefect" else 0.0)
    )
    out["flow bookkeeping"] = spans.get("flow", 0.0) - inside_flow
    out["total"] = ended - spawned
    out["other"] = out["total"] - sum(v for k, v in out.items() if k in PHASES and k != "other")
    out["outside model"] = out["total"] - out["torch import"] - out["model load"] - out["inference"]
    return out


def free_port() -> int:
    """A loopback port nobody listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def _service(argv: list[str], env: dict[str, str], ready: Callable[[], bool], what: str, cwd: Path | None = None):
    """A server process in its own session, yielded once ``ready()`` (180 s at most); stopped afterwards."""
    import httpx

    env = {**env, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    env.pop("PREFECT_API_URL", None)
    proc = subprocess.Popen(
        argv, cwd=cwd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if ready():
                    break
            time.sleep(0.2)
        else:
            raise RuntimeError(f"{what} was not ready within 180 s")
        yield
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(30)


@contextlib.contextmanager
def prefect_server(home: Path):
    """``prefect server start`` on a free loopback port (analytics off); yields its API URL."""
    import httpx

    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    argv = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    env = {**os.environ, "PREFECT_HOME": str(home)}
    healthy = lambda: httpx.get(f"{url}/health", timeout=2).status_code == 200  # noqa: E731
    with _service([*argv, "--analytics-off", "--no-ui"], env, healthy, "prefect server start"):
        yield url


@contextlib.contextmanager
def da3_backend(home: Path, work: Path):
    """``da3 backend`` (da3-small, random weights, CPU) on a free loopback port, model loaded; yields its URL."""
    import httpx

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    model = ["--preset", "da3-small", "--weights", "random", "--device", "cpu"]
    argv = [sys.executable, "-m", "flows.cli", "backend", *model, "--port", str(port)]
    env = {**os.environ, "PREFECT_HOME": str(home)}
    loaded = lambda: bool(httpx.get(f"{url}/status", timeout=2).json().get("model_loaded"))  # noqa: E731
    with _service([*argv, "--gallery-dir", str(work / "gallery")], env, loaded, "da3 backend", cwd=work):
        yield url


def run_on_backend(image: Path, url: str, work: Path) -> dict[str, float]:
    """One ``da3 image --use-backend`` client process; its phases."""
    from da3core.store import SceneStore

    out = work / f"backend-out-{time.time_ns()}"
    argv = ["image", str(image), "--export-format", "mini_npz", "--export-dir", str(out), "--use-backend"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    spawned = time.time()
    proc = subprocess.run(
        [sys.executable, "-m", "flows.cli", *argv, "--backend-url", url], env=env, capture_output=True, text=True
    )
    total = time.time() - spawned
    job = dict(re.findall(r"(queued_seconds|run_seconds)=([0-9.]+)", proc.stdout + proc.stderr))
    if proc.returncode != 0 or len(job) != 2:
        raise RuntimeError(f"backend run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    timings = SceneStore(str(out / "scene.zarr")).attrs()["timings"]
    inference = timings.get("decode", 0.0) + timings.get("inference", 0.0)
    exports = sum(v for k, v in timings.items() if k.startswith("export_"))
    queued, run = float(job["queued_seconds"]), float(job["run_seconds"])
    record = dict.fromkeys(PHASES, 0.0)
    record.update(
        client=total - queued - run,
        queue=queued,
        inference=inference,
        exports=exports,
        total=total,
        **{"flow bookkeeping": run - inference - exports, "outside model": total - inference},
    )
    return record


def run_once(api: str, entry: str, argv: list[str], home: Path, api_url: str | None, work: Path) -> dict[str, float]:
    """One fresh-process run; its phases."""
    out = work / f"phases-{time.time_ns()}.json"
    # Prefect's own temporary server gives up after 20 s by default, which a busy machine exceeds.
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PREFECT_HOME": str(home),
        "HF_HUB_OFFLINE": "1",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    }
    env.pop("PREFECT_API_URL", None)
    if api_url:
        env["PREFECT_API_URL"] = api_url
    cpu_before = _children_cpu()
    spawned = time.time()
    proc = subprocess.run(
        [sys.executable, __file__, "--child", api, entry, str(out), "--", *argv],
        env=env,
        capture_output=True,
        text=True,
    )
    ended = time.time()
    if proc.returncode != 0 or not out.is_file():
        raise RuntimeError(f"{api} run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    record = json.loads(out.read_text())
    record["api"] = api
    return {**phases(record, spawned, ended), "cpu": _children_cpu() - cpu_before}


def _children_cpu() -> float:
    """CPU seconds of this process's finished children (a busy machine stretches wall time, much less CPU time)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    """Run every API ``--runs`` times in turn (after one first run each) and publish the medians."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--apis", nargs="+", choices=APIS, default=list(APIS))
    parser.add_argument("--entry", choices=("module", "cli"), default="module")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    from da3core.synthetic import make_capture, write_image_folder

    work = Path(tempfile.mkdtemp(prefix="da3-startup-"))
    write_image_folder(make_capture(1, 640, 480, seed=0), work / "scene")
    image = next((work / "scene").iterdir())
    if args.entry == "cli":
        argv = [
            "image",
            str(image),
            "--preset",
            "da3-small",
            "--weights",
            "random",
            "--export-format",
            "mini_npz",
            "--export-dir",
            str(work / "out"),
            "--auto-cleanup",
        ]
    else:
        argv = [
            f"scene={image}",
            f"storage.root={work / 'out'}",
            "model=da3-small",
            "model.weights=random",
            "export=mini_npz",
            "force=true",
        ]
    rows: dict[str, list[dict[str, float]]] = {api: [] for api in args.apis}
    first: dict[str, dict[str, float]] = {}
    with contextlib.ExitStack() as stack:
        urls = {
            api: stack.enter_context(prefect_server(work / f"home-{api}")) if api == "server" else None
            for api in args.apis
        }
        if "backend" in args.apis:
            urls["backend"] = stack.enter_context(da3_backend(work / "home-backend", work))
        for i in range(args.runs + 1):
            for api in args.apis:
                if api == "backend":
                    cpu_before = _children_cpu()
                    result = run_on_backend(image, urls[api], work)
                    result["cpu"] = _children_cpu() - cpu_before  # the client's only: the backend runs on
                else:
                    result = run_once(api, args.entry, argv, work / f"home-{api}", urls[api], work)
                if i:
                    rows[api].append(result)
                else:
                    first[api] = result
                print(
                    f"run {i} {api}: total {result['total']:.2f}s, outside model {result['outside model']:.2f}s, "
                    f"cpu {result['cpu']:.2f}s",
                    flush=True,
                )
    publish_table(args, rows, first)


def publish_table(
    args: argparse.Namespace, rows: dict[str, list[dict[str, float]]], first: dict[str, dict[str, float]]
) -> None:
    """The medians per phase and API as a RESULTS.md section."""
    from report import publish

    load = os.getloadavg()[0]
    cols = list(rows)
    lines = [f"| phase | {' | '.join(cols)} |", f"|---|{'---|' * len(cols)}"]
    for key in (*PHASES, "total", "outside model", "cpu"):
        cells = [f"{statistics.median(r[key] for r in rows[api]):.2f}" for api in cols]
        bold = "**" if key == "outside model" else ""
        lines.append(f"| {bold}{key}{bold} | {' | '.join(f'{bold}{c}{bold}' for c in cells)} |")
    firsts = " | ".join(f"{first[api]['total']:.2f}" for api in cols)
    lines.append(f"| first run (fresh PREFECT_HOME), total | {firsts} |")
    text = (
        f"\n## Start-up, one image, {time.strftime('%Y-%m-%d')}\n\nMachine: {platform.machine()}, "
        f"{os.cpu_count()} cores, 1-min load average {load:.1f} at the end. `python benchmarks/startup.py --runs "
        f"{args.runs} --entry {args.entry}`: seconds, median of {args.runs} fresh processes per API after a "
        f"first one; da3-small, random weights, one 640x480 image, export mini_npz. `outside model` = total "
        f"less torch import, model load and inference (target <= 1.5 s); `cpu` = CPU seconds of the whole run "
        f"(all threads and child processes), steadier than wall time on a busy machine.\n\n" + "\n".join(lines) + "\n"
    )
    publish(text, write=not args.no_write)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        sys.exit(child(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[6:]))
    main()
