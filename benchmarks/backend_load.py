"""Backend load: N concurrent clients for S seconds on loopback, each submitting tiny jobs and polling them.

Starts its own backend (``serve`` in a subprocess on 127.0.0.1, random-weight da3-small) and stops it at
the end. Every client loops: upload one tiny image (``export=mini_npz``, process_res 28), poll the job
until it finishes, repeat; a 503 (queue full) is counted and retried after a pause. After S seconds no new
job is submitted and the accepted ones are awaited (bounded by --drain).

    python benchmarks/backend_load.py [--clients 20] [--seconds 30] [--max-queue 8]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's packages, also when run as a script from elsewhere
OVERRIDES = ["export=mini_npz", "processing.process_res=28"]


def start_backend(port: int, max_queue: int, workspace: Path) -> subprocess.Popen:
    """``serve`` in a child process on 127.0.0.1:port; returns once the model is loaded."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PREFECT_HOME": str(workspace / "prefect"),
        "HF_HUB_OFFLINE": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    }
    env.pop("PREFECT_API_URL", None)
    code = (
        "from flows.backend.server import serve; "
        f"serve(None, 'da3-small', 'random', 'cpu', port={port}, max_queue={max_queue}, "
        f"workspace_dir={str(workspace / 'jobs')!r})"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=open(workspace / "server.log", "wb"),
    )
    deadline = time.time() + 240
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"backend exited: {(workspace / 'server.log').read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/status", timeout=2).json()["model_loaded"]:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError("backend did not start in 240 s")


def tiny_scene() -> bytes:
    """A tar of one 56x42 synthetic image, as the client would upload it."""
    from da3core.synthetic import make_capture, write_image_folder
    from flows.backend.archive import pack

    with tempfile.TemporaryDirectory() as tmp:
        write_image_folder(make_capture(1, 56, 42, seed=2), Path(tmp) / "tiny")
        out = io.BytesIO()
        pack(Path(tmp) / "tiny", out)
        return out.getvalue()


def _client(
    url: str, body: bytes, stop_at: float, drain_until: float, stats: dict[str, Any], lock: threading.Lock
) -> None:
    """One client: submit, poll to the end, repeat until ``stop_at``; 503s are counted and retried."""
    with httpx.Client(base_url=url, timeout=60) as http:
        while time.time() < stop_at:
            sent = time.perf_counter()
            response = http.post(
                "/jobs",
                params=[("override", o) for o in OVERRIDES],
                content=body,
                headers={"Content-Type": "application/x-tar"},
            )
            submit_s = time.perf_counter() - sent
            with lock:
                stats["codes"][response.status_code] += 1
                stats["submit_s"].append(submit_s)
            if response.status_code != 202:
                time.sleep(0.25)
                continue
            job_id = response.json()["id"]
            with lock:
                stats["accepted"].append(job_id)
            while time.time() < drain_until:
                job = http.get(f"/jobs/{job_id}").json()
                if job["status"] in ("completed", "failed"):
                    with lock:
                        stats["finished"][job["status"]] += 1
                        stats["latency_s"].append(time.perf_counter() - sent)
                    break
                time.sleep(0.5)


def run_load(url: str, server_pid: int, clients: int, seconds: float, drain: float = 120.0) -> dict[str, Any]:
    """Drive the backend at ``url`` and return the figures (counts, latencies, server memory)."""
    server = psutil.Process(server_pid)
    rss = lambda: server.memory_info().rss / 2**20  # noqa: E731
    family_rss = lambda: rss() + sum(c.memory_info().rss for c in server.children(recursive=True)) / 2**20  # noqa: E731
    body, lock = tiny_scene(), threading.Lock()
    stats: dict[str, Any] = {"codes": Counter(), "submit_s": [], "accepted": [], "finished": Counter(), "latency_s": []}
    rss_start, family_start, peak = rss(), family_rss(), [rss()]
    started = time.time()
    stop_at, drain_until = started + seconds, started + seconds + drain
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.5):
            peak.append(rss())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    threads = [
        threading.Thread(target=_client, args=(url, body, stop_at, drain_until, stats, lock)) for _ in range(clients)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    elapsed = time.time() - started
    # Ask the server too: every accepted job must be known there and finished (none lost, none stuck).
    asked = [httpx.get(f"{url}/jobs/{job_id}") for job_id in stats["accepted"]]
    server_status = [r.json()["status"] if r.status_code == 200 else "missing" for r in asked]
    pct = lambda xs, q: float(np.percentile(xs, q)) if xs else None  # noqa: E731
    return {
        "clients": clients,
        "seconds": seconds,
        "elapsed_s": round(elapsed, 1),
        "accepted": len(stats["accepted"]),
        "completed": stats["finished"]["completed"],
        "failed": stats["finished"]["failed"],
        "server_statuses": dict(Counter(server_status)),
        "responses": {str(k): v for k, v in sorted(stats["codes"].items())},
        "job_latency_p50_s": pct(stats["latency_s"], 50),
        "job_latency_p95_s": pct(stats["latency_s"], 95),
        "submit_p50_s": pct(stats["submit_s"], 50),
        "submit_p95_s": pct(stats["submit_s"], 95),
        "throughput_jobs_per_s": stats["finished"]["completed"] / elapsed,
        "rss_start_mb": rss_start,
        "rss_peak_mb": max(peak),
        "rss_end_mb": rss(),
        "rss_with_children_start_mb": family_start,
        "rss_with_children_end_mb": family_rss(),
    }


def main() -> None:
    """Start a backend on loopback, load it, stop it, print the figures as JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--max-queue", type=int, default=8)
    parser.add_argument("--port", type=int, default=8018)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="da3-load-") as tmp:
        proc = start_backend(args.port, args.max_queue, Path(tmp))
        try:
            result = run_load(f"http://127.0.0.1:{args.port}", proc.pid, args.clients, args.seconds)
        finally:
            proc.terminate()
            proc.wait(30)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
