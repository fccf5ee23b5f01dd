"""Server-rendered HTML for the backend: the home page and the dashboard (no scripts, no external assets)."""

from __future__ import annotations

import html
import time
from typing import Any

_STYLE = """body{font-family:system-ui,sans-serif;margin:2rem;color:#222;background:#fafafa}a{color:#1a5fb4}
table{border-collapse:collapse;background:#fff}td,th{border:1px solid #ddd;padding:.3rem .6rem;text-align:left;
font-size:.9rem}code{background:#eee;padding:0 .2rem}.failed{color:#a51d2d}.completed{color:#26a269}
.bar{display:inline-block;height:.6rem;background:#1a5fb4;vertical-align:middle}"""

# Shown by every page of a service or gallery whose model has seeded random weights.
UNTRAINED_BANNER = (
    "Untrained weights: this model has seeded random weights (--weights random), so depth, cameras "
    "and points are not meaningful. Start it with pretrained weights for real results."
)


def untrained_banner(weights: str | None) -> str:
    """The banner as HTML when ``weights`` is ``random``; else an empty string."""
    if weights != "random":
        return ""
    return (
        "<p class='untrained' role='alert' style='background:#fdecc8;border:2px solid #c64600;padding:.6rem;"
        f"font-weight:bold'>{html.escape(UNTRAINED_BANNER)}</p>"
    )


def _page(title: str, body: str, refresh: int | None = None) -> str:
    meta = f"<meta http-equiv='refresh' content='{int(refresh)}'>" if refresh else ""
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>{meta}"
        f"<style>{_STYLE}</style></head><body>{body}</body></html>"
    )


def home_page(status: dict[str, Any]) -> str:
    """Links to the dashboard, the JSON status, the jobs and the gallery, and how to submit work."""
    model = status.get("model") or {}
    gallery = "<li><a href='/gallery/'>gallery</a></li>" if status["gallery"] else ""
    body = (
        f"<h1>da3pipe backend</h1>{untrained_banner(status['weights'])}"
        f"<p>Model <b>{html.escape(str(model.get('preset', '?')))}</b> "
        f"({html.escape(str(model.get('weights', '?')))} weights) on <b>{html.escape(str(status['device']))}</b>; "
        f"{status['queue']['length']} job(s) waiting.</p><ul><li><a href='/dashboard'>dashboard</a></li>"
        f"<li><a href='/status'>status (JSON)</a></li><li><a href='/jobs'>jobs (JSON)</a></li>{gallery}</ul>"
        "<p>Submit work with <code>da3 ... --use-backend --backend-url URL</code>, or from Python with "
        "<code>flows.backend.client.run_on_backend(url, overrides, scene_path, dest_dir)</code>.</p>"
    )
    return _page("da3pipe backend", body)


def _fmt_time(ts: float | None) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts)) if ts else ""


def _fmt_secs(value: float | None) -> str:
    return f"{value:.1f}s" if value is not None else ""


def dashboard_page(status: dict[str, Any], jobs: list[dict[str, Any]], refresh: int | None) -> str:
    """Model, device, memory, queue and the recent jobs with status, progress and times."""
    model, mem, queue = status.get("model") or {}, status["memory"], status["queue"]
    cuda = mem.get("cuda")
    cuda_row = (
        (
            f"<tr><th>CUDA memory</th><td>{cuda['allocated_mb']:.0f} MB allocated, {cuda['reserved_mb']:.0f} MB "
            f"reserved, {cuda['free_mb']:.0f} / {cuda['total_mb']:.0f} MB free</td></tr>"
        )
        if cuda
        else ""
    )
    loaded = (
        "yes"
        if status["model_loaded"]
        else ("failed: " + str(status["model_error"]) if status["model_error"] else "loading")
    )
    rows = [
        ("model", f"{model.get('preset', '?')} ({model.get('weights', '?')} weights, {model.get('source', '?')})"),
        ("device", f"{status['device']} ({model.get('precision', '?')})"),
        ("model loaded", loaded),
        ("process RSS", f"{mem['rss_mb']:.0f} MB"),
        ("uptime", _fmt_secs(status["uptime_seconds"])),
        ("queue", f"{queue['length']} waiting of {queue['max']}; running: {'one job' if queue['running'] else 'none'}"),
        ("jobs", ", ".join(f"{k} {v}" for k, v in status["jobs"].items())),
    ]
    table = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows) + cuda_row
    # Jobs are listed by state and times only: a job's id, scene and messages are for the client that sent it.
    job_rows = "".join(
        f"<tr><td class='{j['status']}'>{j['status']}</td>"
        f"<td><span class='bar' style='width:{int(60 * j['progress'])}px'></span> {100 * j['progress']:.0f}%</td>"
        f"<td>{_fmt_time(j['created_at'])}</td>"
        f"<td>{_fmt_secs(j['queued_seconds'])}</td><td>{_fmt_secs(j['run_seconds'])}</td></tr>"
        for j in jobs
    )
    jobs_table = (
        "<table><tr><th>status</th><th>progress</th><th>submitted</th><th>waited</th><th>ran</th></tr>"
        f"{job_rows}</table>"
        if jobs
        else "<p>No jobs yet.</p>"
    )
    again = (
        "<a href='/dashboard'>stop refreshing</a>"
        if refresh
        else "<a href='/dashboard?refresh=5'>refresh every 5 s</a>"
    )
    body = (
        f"<p><a href='/'>&larr; home</a> · {again}</p><h1>Dashboard</h1>{untrained_banner(status['weights'])}"
        f"<table>{table}</table>"
        f"<h2>Recent jobs</h2>{jobs_table}"
    )
    return _page("da3pipe backend dashboard", body, refresh)
