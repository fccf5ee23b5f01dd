"""Benchmark results: per-scene outcomes, per dataset-and-mode tables as upstream writes them, the printed summary.

``results[f"{dataset}_{mode}"]`` is ``{scene: metrics, ..., "mean": metrics}``, the shape of upstream's
``metric_results/<dataset>_<mode>.json`` (so upstream's ``print_metrics --input_dir`` reads our files too).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from da3core.choices import EVAL_MODES

DATASET_ORDER = ("hiroom", "eth3d", "dtu", "7scenes", "scannetpp", "dtu64")  # upstream's summary columns
# Upstream's pose summary reports DTU-64 in DTU's place and leaves full DTU out (here: last, outside the average).
POSE_ORDER = ("hiroom", "eth3d", "dtu64", "7scenes", "scannetpp", "dtu")
# Modes whose average leaves DTU out, as upstream's summary: pose (see above), reconstruction (millimetres).
DTU_NOT_AVERAGED = ("pose", "recon_unposed", "recon_posed")
DATASET_DISPLAY = {
    "hiroom": "HiRoom",
    "eth3d": "ETH3D",
    "dtu": "DTU",
    "7scenes": "7Scenes",
    "scannetpp": "ScanNet++",
    "dtu64": "DTU-64",
}
# The rows of the summary per mode: (label, metric key). Upstream prints Auc3/Auc30 and F-score/Overall.
SUMMARY_ROWS = {
    "pose": (("Auc3", "auc03"), ("Auc30", "auc30")),
    "recon_unposed": (("F-score", "fscore"), ("Overall", "overall")),
    "recon_posed": (("F-score", "fscore"), ("Overall", "overall")),
    "rel_depth": (("AbsRel", "abs_rel"), ("δ<1.25", "delta_1_25")),
    "metric_depth": (("AbsRel", "abs_rel"), ("δ<1.25", "delta_1_25")),
}
TITLES = {
    "pose": "POSE ESTIMATION",
    "recon_unposed": "RECON_UNPOSED (Pred Pose)",
    "recon_posed": "RECON_POSED (GT Pose)",
    "rel_depth": "REL_DEPTH (per-frame scale)",
    "metric_depth": "METRIC_DEPTH",
}
LOWER_IS_BETTER = {"acc", "comp", "overall", "abs_rel"}


@dataclass
class SceneOutcome:
    """What one benchmark scene produced: metrics per mode, failures per mode (or ``scene``), predictions, timings."""

    dataset: str
    scene: str
    views: int = 0
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # mode -> metric -> value
    failures: dict[str, str] = field(default_factory=dict)  # mode or "scene" -> one-line reason
    predictions: dict[str, dict[str, Any]] = field(default_factory=dict)  # unposed/posed -> status, store, seconds
    eval_seconds: dict[str, float] = field(default_factory=dict)  # mode -> seconds of fusion + metrics
    curves: dict[str, list[float]] = field(default_factory=dict)  # pose -> pair accuracy at 0..30 degrees


@dataclass
class BenchmarkResults:
    """Everything one evaluation run produced, plus what it could not do and why."""

    modes: list[str]
    outcomes: list[SceneOutcome] = field(default_factory=list)
    dataset_failures: dict[str, str] = field(default_factory=dict)  # dataset -> one-line reason
    not_applicable: dict[str, str] = field(default_factory=dict)  # "<dataset>/<mode>" -> why it is not scored
    info: dict[str, Any] = field(default_factory=dict)  # model, predictor, output location

    def tables(self) -> dict[str, dict[str, dict[str, float]]]:
        """``{"<dataset>_<mode>": {scene: metrics, ..., "mean": metrics}}`` for every pair with a scored scene."""
        out: dict[str, dict[str, dict[str, float]]] = {}
        for o in self.outcomes:
            for mode, metrics in o.metrics.items():
                out.setdefault(f"{o.dataset}_{mode}", {})[o.scene] = metrics
        for table in out.values():
            table["mean"] = mean_of(list(table.values()))
        return dict(sorted(out.items(), key=lambda kv: _order(*split_key(kv[0]))))

    def failure_lines(self) -> list[str]:
        """One line per failed dataset, scene or scene-and-mode."""
        lines = [f"{name}: FAILED: {reason}" for name, reason in self.dataset_failures.items()]
        for o in self.outcomes:
            lines += [
                f"{o.dataset}/{o.scene}" + ("" if what == "scene" else f" [{what}]") + f": FAILED: {reason}"
                for what, reason in o.failures.items()
            ]
        return lines

    def to_json(self) -> dict[str, Any]:
        """The whole run as JSON-ready data (tables, scenes, failures)."""
        return {
            "info": self.info,
            "modes": self.modes,
            "results": self.tables(),
            "scenes": [asdict(o) for o in self.outcomes],
            "dataset_failures": self.dataset_failures,
            "not_applicable": self.not_applicable,
            "failures": self.failure_lines(),
        }


def split_key(key: str) -> tuple[str, str]:
    """``"7scenes_recon_posed"`` -> ("7scenes", "recon_posed")."""
    dataset, mode = key.split("_", 1)
    return dataset, mode


def _order(dataset: str, mode: str) -> tuple[int, int]:
    order = POSE_ORDER if mode == "pose" else DATASET_ORDER
    return (
        EVAL_MODES.index(mode) if mode in EVAL_MODES else len(EVAL_MODES),
        order.index(dataset) if dataset in order else len(order),
    )


def mean_of(rows: list[dict[str, float]]) -> dict[str, float]:
    """Key-wise mean over metric dicts (the keys of the first), as upstream's ``_mean_of_dicts``."""
    if not rows:
        return {}
    return {k: float(np.mean([r[k] for r in rows if k in r])) for k in rows[0]}


def table_json(table: dict[str, dict[str, float]]) -> str:
    """One dataset-and-mode table as upstream's JSON file."""
    return json.dumps(table, indent=4, ensure_ascii=False)


def table_csv(table: dict[str, dict[str, float]]) -> str:
    """One dataset-and-mode table as CSV: a row per scene, then the mean."""
    columns = list(dict.fromkeys(k for row in table.values() for k in row))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["scene", *columns])
    for scene, row in table.items():
        writer.writerow([scene, *(repr(row[c]) if c in row else "" for c in columns)])
    return buf.getvalue()


def _fmt(value: float | None) -> str:
    return "N/A" if value is None else f"{value:.4f}"


def summary_text(results: BenchmarkResults) -> str:
    """The printed summary: a block per mode, a row per metric, Avg then the datasets in upstream's order.

    As upstream, the pose and reconstruction averages leave DTU out (pose: upstream reports DTU-64 instead;
    reconstruction: DTU's metrics are millimetres, not an F-score).
    """
    tables = results.tables()
    lines = ["=" * 100, "SUMMARY", "=" * 100]
    for mode in results.modes:
        datasets = sorted({d for d, m in map(split_key, tables) if m == mode}, key=lambda d: _order(d, mode))
        if not datasets:
            continue
        averaged = [d for d in datasets if not (mode in DTU_NOT_AVERAGED and d == "dtu")]
        header = f"{'Metric':<15}{'Avg' + ('*' if averaged != datasets else ''):<12}" + "".join(
            f"{DATASET_DISPLAY.get(d, d):<12}" for d in datasets
        )
        lines += ["", TITLES.get(mode, mode.upper()), "-" * len(header), header, "-" * len(header)]
        for label, key in SUMMARY_ROWS[mode]:
            values = {d: tables[f"{d}_{mode}"]["mean"].get(key) for d in datasets}
            present = [v for d in averaged if (v := values[d]) is not None]
            avg = sum(present) / len(present) if present else None
            lines.append(f"{label:<15}{_fmt(avg):<12}" + "".join(f"{_fmt(values[d]):<12}" for d in datasets))
        if averaged != datasets:
            why = "it reports DTU-64" if mode == "pose" else "millimetre distances, no F-score"
            lines.append(f"* Avg leaves DTU out ({why}), as upstream's summary does")
    failures = results.failure_lines()
    if failures:
        lines += ["", f"FAILURES ({len(failures)})", *failures]
    if results.not_applicable:
        lines += ["", "NOT SCORED", *(f"{k}: {v}" for k, v in results.not_applicable.items())]
    return "\n".join(lines)
