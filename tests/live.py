"""Processes and servers the integration tests start for real, and stop or kill at a chosen moment."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from paths import REPO_ROOT
from s3server import free_port


def kill_group(pid: int) -> None:
    """SIGKILL the process group ``pid`` leads, whatever is left of it (nothing at all is fine)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def kill_when(cmd: list[str], done: Callable[[], Any], timeout: float = 300) -> None:
    """Run ``cmd`` in its own session and SIGKILL its whole group once ``done()`` holds (or it ends, or time is up)."""
    proc = subprocess.Popen(
        cmd, cwd=REPO_ROOT, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + timeout
    while not done() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    kill_group(proc.pid)
    proc.wait()


@contextmanager
def backend_server(app: Any, timeout: float = 120) -> Iterator[str]:
    """Serve the backend ``app`` with uvicorn on a free loopback port until its model is loaded; yield its URL."""
    import httpx
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.config.port}"
    deadline = time.time() + timeout
    while time.time() < deadline and not (server.started and httpx.get(url + "/status").json()["model_loaded"]):
        time.sleep(0.2)
    assert server.started, "backend did not start"
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(30)
