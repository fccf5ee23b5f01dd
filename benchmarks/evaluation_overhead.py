"""Evaluation overhead per benchmark scene: reading, pose AUC, depth metrics, and the reconstruction mode's
preparation + TSDF fusion + scoring (da3core.evaluation).

Run: .venv/bin/python benchmarks/evaluation_overhead.py [--root DIR] [--datasets eth3d,hiroom] [--no-write]
``--root`` holds DA3-BENCH dataset folders (<root>/<dataset>/); without it the synthetic miniatures are written
to a temporary folder. The "prediction" is the ground truth with its cameras moved by a known Sim(3), so the
figures are the evaluation side alone; inference time per scene joins them with the evaluation flow.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's packages
from report import publish  # noqa: E402

from da3core.evaluation import dtu_evaluate, dtu_reconstruct, metric_depth_metrics, pose_auc  # noqa: E402
from da3core.evaluation.datasets import DATASETS, BenchmarkDataError, open_dataset  # noqa: E402
from da3core.evaluation.recon_mode import evaluate_reconstruction, reconstruct  # noqa: E402
from da3core.pose_align import apply_sim3_to_extrinsics  # noqa: E402
from da3core.synthetic import write_miniature  # noqa: E402

SIM3 = (0.5, Rotation.from_euler("xyz", [10, 20, 30], degrees=True).as_matrix(), np.array([0.3, -0.2, 1.0]))


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def scene_row(dataset, scene_name: str) -> dict[str, float | str]:
    """Seconds per stage for one scene; stages a dataset lacks are left empty."""
    scene, t_load = timed(lambda: dataset.load(scene_name))
    pred_ext = apply_sim3_to_extrinsics(scene.extrinsics, *SIM3).astype(np.float32)
    row: dict[str, float | str] = {"scene": f"{dataset.name}/{scene_name}", "views": len(scene), "load": t_load}
    row["pose"] = timed(lambda: pose_auc(pred_ext, scene.extrinsics))[1]
    if dataset.name == "dtu":  # no GT depth maps; its own fusion and evaluation (a constant depth stands in)
        depths = np.full((len(scene), *scene.valid_mask(0).shape), 500.0, dtype=np.float32)
        points, row["fuse"] = timed(lambda: dtu_reconstruct(scene, depths, scene.intrinsics, scene.extrinsics, True))
        row["recon_eval"] = timed(lambda: dtu_evaluate(scene, points))[1]
        return row
    try:
        depths, t_depth_read = timed(lambda: np.stack([scene.gt_depth(i) for i in range(len(scene))]))
    except BenchmarkDataError:
        return row
    row["depth"] = t_depth_read + timed(lambda: [metric_depth_metrics(d, d) for d in depths])[1]
    if dataset.fusion is None:
        return row
    points, row["fuse"] = timed(lambda: reconstruct(scene, depths * SIM3[0], scene.intrinsics, pred_ext, posed=False))
    row["recon_eval"] = timed(lambda: evaluate_reconstruction(scene, points))[1]
    return row


def table(rows: list[dict]) -> str:
    cols = ["scene", "views", "load", "pose", "depth", "fuse", "recon_eval"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in rows:
        cells = [row.get(c, "") for c in cols]
        lines.append("| " + " | ".join(f"{c:.2f}" if isinstance(c, float) else str(c) for c in cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, help="folder of DA3-BENCH datasets (default: write the miniatures)")
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--no-write", action="store_true", help="print only; do not append to RESULTS.md")
    args = parser.parse_args()
    names = args.datasets.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        root = args.root or Path(tmp)
        rows = []
        for name in names:
            if args.root is None:
                write_miniature(name, root)
            dataset = open_dataset(name, root / name)
            rows += [scene_row(dataset, scene) for scene in dataset.scenes()]
    source = str(args.root) if args.root else "synthetic miniatures"
    publish(
        f"\n## Evaluation overhead per scene ({source}; seconds)\n\n"
        "load: read cameras; pose: AUC over all pairs; depth: read GT depth + AbsRel/δ per frame; fuse: "
        "recon_unposed preparation + TSDF fusion + 1M-point sampling (dtu: recon_posed consistency fusion); "
        "recon_eval: GT sampling + metrics.\n\n" + table(rows) + "\n",
        write=not args.no_write,
    )


if __name__ == "__main__":
    main()
