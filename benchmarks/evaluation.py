"""Evaluation overhead per scene against inference, through the evaluation flow (flows.evaluate): per scene, the
inference seconds its stores record (decode + forward, unposed and posed) beside the seconds of each mode's scoring
(fusion + metrics), then the wall time of an evaluation-only rerun that reuses every prediction.

Run: .venv/bin/python benchmarks/evaluation.py [--root DIR] [--datasets hiroom,eth3d] [--no-write] [overrides ...]
``--root`` holds DA3-BENCH dataset folders (<root>/<dataset>/); without it the synthetic miniatures are written to a
temporary folder. Overrides go to the flow as on its command line; the default model is da3-small with random
weights at process_res=504 (inference cost of the real model, no download). benchmarks/evaluation_overhead.py
times the library's stages alone, without Prefect or inference.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's packages
from report import publish  # noqa: E402

from da3core.choices import BENCHMARK_DATASETS  # noqa: E402
from da3core.synthetic import write_miniature  # noqa: E402
from flows.config import load_config  # noqa: E402
from flows.evaluate import evaluate  # noqa: E402

MODEL = ["model=da3-small", "model.weights=random", "processing.process_res=504"]


def table(results, modes: list[str]) -> str:
    """A row per scene: views, inference seconds, scoring seconds per mode, and scoring over inference."""
    cols = ["scene", "views", "inference", *modes, "scoring/inference"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for o in results.outcomes:
        infer = sum(p.get("inference_s") or 0.0 for p in o.predictions.values())
        scoring = sum(o.eval_seconds.values())
        cells = [
            f"{o.dataset}/{o.scene}",
            str(o.views),
            f"{infer:.2f}",
            *(f"{o.eval_seconds[m]:.2f}" if m in o.eval_seconds else "" for m in modes),
            f"{scoring / infer:.1f}" if infer else "",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, help="folder of DA3-BENCH datasets (default: write the miniatures)")
    parser.add_argument("--datasets", default="hiroom,eth3d,7scenes")
    parser.add_argument("--modes", default="pose,recon_unposed,recon_posed,rel_depth")
    parser.add_argument("--no-write", action="store_true", help="print only; do not append to RESULTS.md")
    parser.add_argument("overrides", nargs="*", help=f"flow overrides (default model: {' '.join(MODEL)})")
    args = parser.parse_args()
    names = args.datasets.split(",")
    unknown = sorted(set(names) - set(BENCHMARK_DATASETS))
    if unknown:
        parser.error(f"unknown datasets {unknown}; choose from {','.join(BENCHMARK_DATASETS)}")
    with tempfile.TemporaryDirectory() as tmp:
        root = args.root or Path(tmp) / "bench"
        if args.root is None:
            for name in names:
                write_miniature(name, root)
        overrides = [
            f"benchmark=[{','.join(names)}]",
            f"bench_root={root}",
            f"modes=[{args.modes}]",
            f"output_dir={Path(tmp) / 'out'}",
            *MODEL,
            *args.overrides,
        ]
        started = time.perf_counter()
        results = evaluate(load_config("evaluate", overrides))
        first = time.perf_counter() - started
        started = time.perf_counter()
        evaluate(load_config("evaluate", overrides))  # every store complete: evaluation only
        rerun = time.perf_counter() - started
    source = str(args.root) if args.root else "synthetic miniatures"
    publish(
        f"\n## Evaluation flow: scoring against inference per scene ({source}; seconds; "
        f"{' '.join(MODEL + args.overrides)})\n\n"
        "inference: decode + forward as the stores record it (unposed, plus posed for recon_posed); a mode's "
        "column: its fusion + metrics.\n\n"
        + table(results, args.modes.split(","))
        + f"\n\nwhole flow {first:.1f}s; evaluation-only rerun (predictions reused) {rerun:.1f}s\n",
        write=not args.no_write,
    )


if __name__ == "__main__":
    main()
