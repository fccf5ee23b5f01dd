"""DA3 forward time and peak memory: ours vs the reference depth-anything-3 on identical weights and inputs.

Each measurement runs in a fresh process (so peak RSS is per case), ours and the reference
alternating, each side in its best CPU precision (bf16 autocast on the backbone, heads fp32), and
the reported time is the minimum over repetitions after two warm-ups.

    python benchmarks/model_forward.py                      # da3-small/base x 1/4/8 views at 504
    python benchmarks/model_forward.py --presets da3-small --views 1 4 --rounds 2

The reference runs with ``DA3_ORACLE_PYTHON`` (default ``.venv-oracle/bin/python``). Results are
appended to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

from report import publish

ROOT = Path(__file__).resolve().parent.parent


def _worker(side: str, model_dir: str, views: int, res: int, precision: str, reps: int, warmup: int) -> dict:
    """Time ``reps`` forwards of one side on a deterministic random batch (runs in its own process)."""
    import numpy as np
    import torch

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", os.cpu_count() or 1)))
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (res * 3 // 4, res, 3), dtype=np.uint8) for _ in range(views)]
    if side == "ours":
        sys.path.insert(0, str(ROOT))
        from da3core import DepthAnything3

        model = DepthAnything3.from_pretrained(model_dir).set_precision(precision)
        run = lambda: model.inference(images, process_res=res)  # noqa: E731
    else:
        from depth_anything_3.api import DepthAnything3 as Reference

        model = Reference.from_pretrained(model_dir).eval()
        if precision == "bf16":  # the reference picks bf16 only when it believes CUDA supports it
            torch.cuda.is_bf16_supported = lambda *a, **k: True
        else:
            net = model.model
            model.forward = lambda image, *a: net(image, *a)
        run = lambda: model.inference(images, process_res=res)  # noqa: E731
    with torch.inference_mode():
        for _ in range(warmup):
            run()
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
    return {"times": times, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _measure(python: str, side: str, model_dir: Path, views: int, res: int, precision: str, reps: int) -> dict:
    cmd = [python, __file__, "worker", side, str(model_dir), str(views), str(res), precision, str(reps)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": ""} if side == "ref" else dict(os.environ))
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    """Run the matrix and append a table to RESULTS.md."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["da3-small", "da3-base"])
    parser.add_argument("--views", nargs="+", type=int, default=[1, 4, 8])
    parser.add_argument("--res", type=int, default=504)
    parser.add_argument("--precision", default="bf16", choices=["bf16", "fp32"])
    parser.add_argument("--rounds", type=int, default=2, help="alternating ours/reference process pairs per case")
    parser.add_argument("--reps", type=int, default=2, help="timed forwards per process")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    from da3core.api import write_random_model_dir

    oracle = os.environ.get("DA3_ORACLE_PYTHON", str(ROOT / ".venv-oracle" / "bin" / "python"))
    weights = ROOT / ".bench-weights"
    rows = []
    for preset in args.presets:
        model_dir = weights / preset
        if not (model_dir / "model.safetensors").exists():
            write_random_model_dir(preset, model_dir, seed=0)
        for views in args.views:
            best = {"ours": [], "ref": []}
            peak = {"ours": 0.0, "ref": 0.0}
            for _ in range(args.rounds):
                for side, python in (("ref", oracle), ("ours", sys.executable)):
                    m = _measure(python, side, model_dir, views, args.res, args.precision, args.reps)
                    best[side] += m["times"]
                    peak[side] = max(peak[side], m["peak_rss_mb"])
            t_ours, t_ref = min(best["ours"]), min(best["ref"])
            rows.append((preset, views, t_ref, t_ours, t_ours / t_ref, peak["ref"], peak["ours"]))
            print(f"{preset} x{views}: reference {t_ref:.2f}s, ours {t_ours:.2f}s, ratio {t_ours / t_ref:.2f}, "
                  f"peak RSS {peak['ref']:.0f} / {peak['ours']:.0f} MiB", flush=True)
    table = [f"\n## DA3 forward, CPU ({args.precision} backbone both sides), {time.strftime('%Y-%m-%d')}\n",
             f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads = cores; "
             f"`python benchmarks/model_forward.py --precision {args.precision}`; whole `inference()` (preprocess + "
             f"forward + output) at process_res {args.res}, min of {args.rounds * args.reps} runs per side.\n",
             "| preset | views | reference s | ours s | ours / reference | peak RSS ref MiB | peak RSS ours MiB |",
             "|---|---|---|---|---|---|---|"]
    table += [f"| {p} | {v} | {tr:.2f} | {to:.2f} | {r:.2f} | {mr:.0f} | {mo:.0f} |" for p, v, tr, to, r, mr, mo in rows]
    publish("\n".join(table), write=not args.no_write)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        side, model_dir, views, res, precision, reps = sys.argv[2:8]
        print(json.dumps(_worker(side, model_dir, int(views), int(res), precision, int(reps), warmup=2)))
    else:
        main()
