"""A short backend load test (benchmarks/backend_load.py runs the full 20 clients x 30 s and records it):
``serve`` in its own process on loopback, 20 concurrent clients for 10 s; no accepted job is lost,
refusals are 503 only, and the server's memory stays bounded.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from s3server import free_port

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from backend_load import run_load, start_backend  # noqa: E402

pytestmark = pytest.mark.slow  # servers, subprocesses and kills: seconds each


def test_twenty_clients_lose_no_jobs(tmp_path):
    port = free_port()
    proc = start_backend(port, max_queue=8, workspace=tmp_path)
    try:
        result = run_load(f"http://127.0.0.1:{port}", proc.pid, clients=20, seconds=10, drain=90)
    finally:
        proc.terminate()
        proc.wait(60)
    print(result)
    assert result["accepted"] >= 8 and result["responses"]["202"] == result["accepted"]
    assert result["completed"] == result["accepted"] and result["failed"] == 0
    assert result["server_statuses"] == {"completed": result["accepted"]}
    assert set(result["responses"]) <= {"202", "503"} and result["responses"].get("503", 0) > 0  # the queue filled
    assert result["rss_peak_mb"] - result["rss_start_mb"] < 300
    # SIGTERM: uvicorn shuts down through the app's lifespan, then re-raises the signal (exit status -15).
    assert "Application shutdown complete" in (tmp_path / "server.log").read_text()
