"""Upstream's benchmark summary printer (depth_anything_3.bench.print_metrics) on given metric tables.

args: {"metrics": {"<dataset>_<mode>": {scene: {metric: value}, ..., "mean": {...}}, ...}}
outputs: pose_auc03_avg, pose_auc30_avg, recon_unposed_fscore_avg: the Avg column of those rows (nan when absent).
"""

import contextlib
import io
import json
import re
import sys

import numpy as np
from depth_anything_3.bench.print_metrics import MetricsPrinter, strip_ansi

args = json.loads(open(sys.argv[2]).read())
text = io.StringIO()
with contextlib.redirect_stdout(text):
    MetricsPrinter(use_color=False).print_results(args["metrics"])
lines = [strip_ansi(line) for line in text.getvalue().splitlines()]


def avg(section: str, label: str) -> float:
    start = next(i for i, line in enumerate(lines) if section in line)
    row = next(line for line in lines[start:] if line.startswith(label + " "))
    value = row.split()[1]
    return float(value) if re.fullmatch(r"[-\d.]+", value) else float("nan")


out = {
    "pose_auc03_avg": np.array(avg("POSE ESTIMATION", "Auc3")),
    "pose_auc30_avg": np.array(avg("POSE ESTIMATION", "Auc30")),
    "recon_unposed_fscore_avg": np.array(avg("RECON_UNPOSED", "F-score")),
}
np.savez(sys.argv[3], **out)
