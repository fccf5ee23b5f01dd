"""A short backend load test (benchmarks/backend_load.py runs the full 20 clients x 30 s and records it):
20 concurrent clients for 10 s against a loopback server; no accepted job is lost, refusals are 503 only,
and the server's memory stays bounded.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import httpx
import uvicorn

from flows.backend.server import create_app
from s3server import free_port

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from backend_load import run_load  # noqa: E402


def test_twenty_clients_lose_no_jobs(tmp_path):
    app = create_app(None, "da3-small", "random", "cpu", max_queue=8, workspace_dir=str(tmp_path / "ws"))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline and not (server.started and httpx.get(url + "/status").json()["model_loaded"]):
        time.sleep(0.2)
    try:
        # The server runs in this process, so its RSS includes the 20 client threads (a conservative bound).
        result = run_load(url, os.getpid(), clients=20, seconds=10, drain=90)
    finally:
        server.should_exit = True
        thread.join(30)
    print(result)
    assert result["accepted"] >= 8 and result["responses"]["202"] == result["accepted"]
    assert result["completed"] == result["accepted"] and result["failed"] == 0
    assert result["server_statuses"] == {"completed": result["accepted"]}
    assert set(result["responses"]) <= {"202", "503"} and result["responses"].get("503", 0) > 0  # the queue filled
    assert result["rss_peak_mb"] - result["rss_start_mb"] < 300
