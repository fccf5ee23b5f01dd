"""What the user-error tests read back: the terminal a user sees, the flow runs' logs, and the files left behind."""

from __future__ import annotations

import hashlib
import logging
import sys
from datetime import datetime
from pathlib import Path

import pytest


def file_tree(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` and its sha256 (what "intact" compares)."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


class Terminal:
    """The process's stdout and stderr as a user sees them. Prefect's console handlers keep the stream they were made
    with (pytest's, closed by now; a run may configure logging anew), so each read points them at the captured one."""

    def __init__(self, capfd: pytest.CaptureFixture[str]) -> None:
        self.capfd, self.saved = capfd, {}

    def readouterr(self):
        """What was written since the last read; Prefect's console handlers write into the capture from now on."""
        for h in stream_handlers():
            if hasattr(h, "console"):
                self.saved.setdefault(h, (h.stream, h.console.file))
                h.stream = h.console.file = sys.stderr
        return self.capfd.readouterr()

    def restore(self) -> None:
        """Give the handlers their own streams back."""
        for h, (stream, file) in self.saved.items():
            h.stream, h.console.file = stream, file


def stream_handlers() -> list[logging.StreamHandler]:
    """Every stream handler on any logger of this process."""
    loggers = [logging.getLogger()] + [logging.getLogger(n) for n in list(logging.Logger.manager.loggerDict)]
    return [h for lg in loggers for h in getattr(lg, "handlers", []) if isinstance(h, logging.StreamHandler)]


def flow_runs_since(started: datetime) -> tuple[list, list[str]]:
    """Flow runs that started after ``started`` and every log line they sent to the API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterStartTime, LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(start_time=FlowRunFilterStartTime(after_=started)))
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[r.id for r in runs])))
    return runs, [log.message for log in logs]


def check_one_error(code: int, out: str, err: str, expect: str) -> str:
    """Exit 2, one ``error:`` line holding ``expect``, no traceback anywhere; returns the line."""
    text = out + err
    lines = [ln for ln in text.splitlines() if ln.startswith("error:")]
    assert "Traceback" not in text, text[-4000:]
    assert len(lines) == 1, text[-4000:]
    assert code == 2, (code, text[-4000:])
    assert expect in lines[0], lines[0]
    return lines[0]
