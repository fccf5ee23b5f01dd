"""A self-contained HTML report of a benchmark run: headline numbers, plots (inline SVG), per-scene tables, failures.

One file, no scripts and nothing fetched: it opens offline and can be mailed or archived beside the metrics.
"""

from __future__ import annotations

import html
import io
from typing import Any

import numpy as np

from da3core.evaluation.summary import (
    DATASET_DISPLAY,
    LOWER_IS_BETTER,
    SUMMARY_ROWS,
    TITLES,
    BenchmarkResults,
    split_key,
)

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{margin-bottom:.2em} h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
th,td{padding:.25em .7em;border-bottom:1px solid #eee;text-align:right}
th:first-child,td:first-child{text-align:left} tr.mean td{font-weight:bold;border-top:1px solid #999}
td.best{color:#11772d} td.worst{color:#b3261e} .meta{color:#555} .fail{color:#b3261e}
.cards{display:flex;flex-wrap:wrap;gap:.8em} .card{border:1px solid #ddd;border-radius:6px;padding:.6em 1em}
.card b{font-size:1.4em;display:block}
"""


def _svg(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg") :]  # drop the XML prolog and doctype: the SVG sits inside the HTML


def _metric_plot(tables: dict[str, dict[str, dict[str, float]]], mode: str) -> str:
    """Per headline metric: the mean per dataset as a bar, every scene as a dot on it."""
    import matplotlib.pyplot as plt

    rows = SUMMARY_ROWS[mode]
    datasets = [split_key(k)[0] for k in tables if split_key(k)[1] == mode]
    fig, axes = plt.subplots(1, len(rows), figsize=((0.8 * len(datasets) + 1.6) * len(rows), 3.0), squeeze=False)
    for ax, (label, key) in zip(axes[0], rows):
        for x, dataset in enumerate(datasets):
            table = tables[f"{dataset}_{mode}"]
            scenes = [row[key] for name, row in table.items() if name != "mean" and key in row]
            if not scenes:
                continue
            ax.bar(x, table["mean"][key], color="#9ec5e8", width=0.6)
            ax.scatter(
                np.full(len(scenes), x) + np.linspace(-0.15, 0.15, len(scenes)), scenes, s=14, color="#1f4e79", zorder=3
            )
        ax.set_xticks(range(len(datasets)), [DATASET_DISPLAY.get(d, d) for d in datasets], rotation=30, fontsize=8)
        ax.set_title(f"{label} ({'lower' if key in LOWER_IS_BETTER else 'higher'} is better)", fontsize=10)
        if key not in LOWER_IS_BETTER:  # AUCs, F-scores and δ are fractions: a fixed axis compares runs at a glance
            ax.set_ylim(0, 1.02)
        ax.grid(axis="y", alpha=0.3)
    return _svg(fig)


def _pose_curves(results: BenchmarkResults) -> str:
    """Fraction of view pairs under an error threshold, per dataset (mean over scenes, scenes thin)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    curves: dict[str, list[list[float]]] = {}
    for o in results.outcomes:
        if "pose" in o.curves:
            curves.setdefault(o.dataset, []).append(o.curves["pose"])
    for i, (dataset, rows) in enumerate(curves.items()):
        color = f"C{i}"
        for row in rows:
            ax.plot(range(len(row)), row, color=color, alpha=0.25, linewidth=0.8)
        ax.plot(
            range(len(rows[0])),
            np.mean(rows, axis=0),
            color=color,
            linewidth=2,
            label=DATASET_DISPLAY.get(dataset, dataset),
        )
    ax.set_xlabel("error threshold (degrees, max of rotation and translation direction)")
    ax.set_ylabel("view pairs within")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _svg(fig)


def _timing_plot(results: BenchmarkResults) -> str:
    """Seconds per scene: inference (decode + forward, per inference kind) against evaluation (fusion + metrics)."""
    import matplotlib.pyplot as plt

    names = [f"{o.dataset}/{o.scene}" for o in results.outcomes]
    infer = [sum(p.get("inference_s") or 0.0 for p in o.predictions.values()) for o in results.outcomes]
    evaluate = [sum(o.eval_seconds.values()) for o in results.outcomes]
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(names) + 1.0))
    y = np.arange(len(names))
    ax.barh(y, infer, color="#f0b37e", label="inference (as recorded in the store)")
    ax.barh(y, evaluate, left=infer, color="#7fb77e", label="evaluation (fusion + metrics)")
    ax.set_yticks(y, names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("seconds")
    ax.legend(fontsize=8)
    return _svg(fig)


def _table_html(key: str, table: dict[str, dict[str, float]]) -> str:
    columns = list(dict.fromkeys(k for row in table.values() for k in row))
    scenes = [s for s in table if s != "mean"]
    best = {}
    for c in columns:
        values = [table[s][c] for s in scenes if c in table[s]]
        if len(values) > 1 and c != "frames":
            best[c] = (min(values), max(values)) if c in LOWER_IS_BETTER else (max(values), min(values))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for scene in [*scenes, "mean"]:
        cells = []
        for c in columns:
            value = table[scene].get(c)
            cls = ""
            if scene != "mean" and c in best and best[c][0] != best[c][1]:
                cls = " class='best'" if value == best[c][0] else " class='worst'" if value == best[c][1] else ""
            cells.append(f"<td{cls}>{'' if value is None else f'{value:.4f}'}</td>")
        body.append(f"<tr{' class=mean' if scene == 'mean' else ''}><td>{html.escape(scene)}</td>{''.join(cells)}</tr>")
    dataset, mode = split_key(key)
    return (
        f"<h3>{DATASET_DISPLAY.get(dataset, dataset)} · {mode}</h3>"
        f"<table><tr><th>scene</th>{head}</tr>{''.join(body)}</table>"
    )


def html_report(results: BenchmarkResults, summary: str) -> str:
    """The report as one HTML document."""
    import matplotlib

    matplotlib.use("Agg")  # no display; the plots are only rendered to SVG
    tables = results.tables()
    info = results.info
    parts = [
        f"<h1>DA3 benchmark: {html.escape(str(info.get('label', '')))}</h1>",
        "<p class=meta>"
        + " · ".join(f"{html.escape(str(k))}: {html.escape(str(v))}" for k, v in info.items() if k != "label")
        + "</p>",
    ]
    cards = []
    for key, table in tables.items():
        dataset, mode = split_key(key)
        for label, metric in SUMMARY_ROWS[mode]:
            if metric in table["mean"]:
                cards.append(
                    f"<div class=card>{DATASET_DISPLAY.get(dataset, dataset)} · {mode} · {label}"
                    f"<b>{table['mean'][metric]:.4f}</b></div>"
                )
    parts += ["<div class=cards>" + "".join(cards) + "</div>"]
    failures = results.failure_lines()
    if failures:
        parts += [
            f"<h2 class=fail>Failures ({len(failures)})</h2><ul>"
            + "".join(f"<li class=fail>{html.escape(line)}</li>" for line in failures)
            + "</ul>"
        ]
    for mode in results.modes:
        if not any(split_key(k)[1] == mode for k in tables):
            continue
        parts += [f"<h2>{html.escape(TITLES.get(mode, mode))}</h2>", _metric_plot(tables, mode)]
        if mode == "pose":
            parts.append(_pose_curves(results))
        parts += [_table_html(k, t) for k, t in tables.items() if split_key(k)[1] == mode]
    if results.outcomes:
        parts += ["<h2>Time per scene</h2>", _timing_plot(results)]
    if results.not_applicable:
        parts += [
            "<h2>Not scored</h2><ul>"
            + "".join(f"<li>{html.escape(k)}: {html.escape(v)}</li>" for k, v in results.not_applicable.items())
            + "</ul>"
        ]
    parts += ["<h2>Summary (as printed)</h2>", f"<pre>{html.escape(summary)}</pre>"]
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>DA3 benchmark</title>"
        f"<style>{_STYLE}</style></head><body>{''.join(parts)}</body></html>"
    )
