"""The printed benchmark summary averages what upstream's summary printer averages (checked against it)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from oracle import run_oracle

from da3core.evaluation.summary import BenchmarkResults, SceneOutcome

DATASETS = ("hiroom", "eth3d", "dtu", "dtu64", "7scenes", "scannetpp")


def _results() -> BenchmarkResults:
    rng = np.random.default_rng(4)
    results = BenchmarkResults(modes=["pose", "recon_unposed"])
    for d in DATASETS:
        metrics = {"pose": {"auc03": float(rng.random()), "auc30": float(rng.random())}}
        if d != "dtu64":
            metrics["recon_unposed"] = {"fscore": float(rng.random()), "overall": float(rng.random())}
        results.outcomes.append(SceneOutcome(d, "scene0", metrics=metrics))
    return results


def _avg(text: str, title: str, label: str) -> float:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if title in line)
    return float(next(line for line in lines[start:] if line.startswith(label + " ")).split()[1])


def test_pose_and_reconstruction_averages_leave_dtu_out_as_upstream():
    from da3core.evaluation.summary import summary_text

    results = _results()
    text = summary_text(results)
    tables = results.tables()
    pose = [tables[f"{d}_pose"]["mean"]["auc30"] for d in ("hiroom", "eth3d", "dtu64", "7scenes", "scannetpp")]
    assert _avg(text, "POSE ESTIMATION", "Auc30") == pytest.approx(np.mean(pose), abs=1e-4)
    header = next(line for line in text.splitlines() if line.startswith("Metric"))
    assert re.split(r"\s+", header.strip())[2:] == ["HiRoom", "ETH3D", "DTU-64", "7Scenes", "ScanNet++", "DTU"]
    assert "Avg leaves DTU out (it reports DTU-64)" in text


@pytest.mark.parity
def test_the_averages_equal_upstreams_summary_printer():
    from da3core.evaluation.summary import summary_text

    results = _results()
    ref = run_oracle("bench_summary.py", metrics=results.tables())
    text = summary_text(results)
    assert _avg(text, "POSE ESTIMATION", "Auc3") == pytest.approx(float(ref["pose_auc03_avg"]), abs=1e-4)
    assert _avg(text, "POSE ESTIMATION", "Auc30") == pytest.approx(float(ref["pose_auc30_avg"]), abs=1e-4)
    assert _avg(text, "RECON_UNPOSED", "F-score") == pytest.approx(float(ref["recon_unposed_fscore_avg"]), abs=1e-4)
