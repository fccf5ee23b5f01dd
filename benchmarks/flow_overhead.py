"""Pipeline overhead: (flow wall time - model forward time) / model forward time for a 16-view scene.

The runs report to Prefect's API as the command line's do (:func:`flows.runtime.prefect_runtime`). The first run
pays for the model load; the reported figure is the best of the following runs (``force=true`` recomputes
everything each time).

    python benchmarks/flow_overhead.py [--views 16] [--res 504] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

from report import publish

from flows.config import load_config

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    """Time the reconstruct flow against its own inference stage and append the result to RESULTS.md."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--views", type=int, default=16)
    parser.add_argument("--res", type=int, default=504)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--preset", default="da3-small")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    from da3core.store import SceneStore
    from da3core.synthetic import make_capture, write_image_folder
    from flows.reconstruct import reconstruct
    from flows.runtime import prefect_runtime

    tmp = Path(tempfile.mkdtemp(prefix="da3-overhead-"))
    write_image_folder(make_capture(args.views, 640, 480, arc_deg=120, seed=0), tmp / "scene")
    argv = [
        f"scene={tmp / 'scene'}",
        f"storage.root={tmp / 'out'}",
        f"model={args.preset}",
        "model.weights=random",
        f"processing.process_res={args.res}",
        "export=mini_npz",
        "force=true",
    ]
    rows = []
    with prefect_runtime():  # one API for all runs, as in one command line process
        for i in range(args.runs + 1):
            start = time.perf_counter()
            result = reconstruct(load_config("reconstruct", argv))
            wall = time.perf_counter() - start
            model = SceneStore(result.store_url).attrs()["timings"]["inference"]
            rows.append((wall, model, (wall - model) / model))
            print(
                f"run {i}: flow {wall:.2f}s, model {model:.2f}s, overhead {100 * rows[-1][2]:.1f}%"
                + (" (first run: model load)" if i == 0 else ""),
                flush=True,
            )
    wall, model, overhead = min(rows[1:], key=lambda r: r[2])
    text = (
        f"\n## Flow overhead, {time.strftime('%Y-%m-%d')}\n\nMachine: {platform.machine()}, {os.cpu_count()} cores, "
        f"CPU. `python benchmarks/flow_overhead.py --views {args.views} --res {args.res}`: {args.preset}, "
        f"{args.views} views of 640x480 at process_res {args.res}, export mini_npz, best of {args.runs} runs after "
        f"the first.\n\n| flow wall s | model forward s | overhead |\n|---|---|---|\n"
        f"| {wall:.2f} | {model:.2f} | {100 * overhead:.1f}% (target <= 10%) |\n"
    )
    publish(text, write=not args.no_write)


if __name__ == "__main__":
    main()
