"""Forward time and peak memory against the number of views, ours beside the reference depth-anything-3.

Default: one forward of da3-small at process_res 280 with 8, 16, 32 and 64 views, each side and each view
count in a fresh process (peak memory is that process's own: RSS on CPU, ``torch.cuda.max_memory_allocated``
on CUDA), after one warm-up forward of the same shape. Memory growth per view is compared between the
smallest and the largest view count: ours must grow no faster than the reference's.

``--find-max`` instead looks for the largest view count one forward fits: each side loads the model once and
runs 16, 32, 64, ... views until a forward runs out of memory or the next one would pass ``--time-cap``
seconds (global attention makes time grow ~4x per doubling); it also projects the count at which the
measured per-view memory growth would fill the device.

    python benchmarks/scaling.py                                   # CPU, da3-small @280, 8/16/32/64 views
    python benchmarks/scaling.py --device cuda --preset da3-large --res 504 --find-max

The reference runs with ``DA3_ORACLE_PYTHON`` (default ``.venv-oracle/bin/python``). Results are appended to
benchmarks/RESULTS.md unless ``--no-write``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from model_forward import _peak_mb, bench_weights, load_side, machine, measure
from report import publish

ROOT = Path(__file__).resolve().parent.parent


def _ladder_worker(
    side: str, model_dir: str, res: int, precision: str, device: str, start: int, time_cap: float, max_views: int
) -> None:
    """Print one JSON line per view count (doubling from ``start``) until out of memory or past the time cap."""
    import numpy as np
    import torch

    run = load_side(side, model_dir, precision, device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    rng = np.random.default_rng(0)
    views = start
    while views <= max_views:
        images = [rng.integers(0, 256, (res * 3 // 4, res, 3), dtype=np.uint8) for _ in range(views)]
        if device == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        try:
            with torch.inference_mode():
                sync()
                start_t = time.perf_counter()
                run(images, res)
                sync()
        except torch.OutOfMemoryError:
            print(json.dumps({"views": views, "fits": False}), flush=True)
            return
        seconds = time.perf_counter() - start_t
        print(json.dumps({"views": views, "fits": True, "seconds": seconds, "peak_mb": _peak_mb(device)}), flush=True)
        if seconds * 4 > time_cap:
            print(json.dumps({"views": views * 2, "fits": None, "reason": "time cap"}), flush=True)
            return
        views *= 2


def find_max(python: str, side: str, model_dir: Path, args) -> list[dict]:
    """Run :func:`_ladder_worker` for one side in a fresh process; its JSON lines, in order."""
    cmd = [
        python,
        __file__,
        "ladder",
        side,
        str(model_dir),
        str(args.res),
        args.precision,
        args.device,
        str(args.start),
        str(args.time_cap),
        str(args.max_views),
    ]
    env = (
        {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        if side == "ref"
        else dict(os.environ)
    )
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    lines = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 and not lines:
        raise RuntimeError(f"{side} ladder failed: {out.stderr.strip().splitlines()[-1:]}")
    return lines


def projected_max(steps: list[dict], device: str) -> int | None:
    """Views at which the per-view memory growth of the two largest fitting runs would fill the device."""
    fit = [s for s in steps if s["fits"]]
    if device != "cuda" or len(fit) < 2:
        return None
    import torch

    (v0, m0), (v1, m1) = ((s["views"], s["peak_mb"]) for s in fit[-2:])
    per_view = (m1 - m0) / (v1 - v0)
    return (
        int(v1 + (torch.cuda.get_device_properties(0).total_memory / 2**20 - m1) / per_view) if per_view > 0 else None
    )


def _max_report(args, ladders: dict[str, list[dict]]) -> str:
    """Results section for ``--find-max``."""
    lines = [
        f"\n## Views per forward, {args.preset} @{args.res}, {args.device.upper()}, {time.strftime('%Y-%m-%d')}\n",
        f"Machine: {machine(args.device)}. `python benchmarks/scaling.py --device {args.device} --preset "
        f"{args.preset} --res {args.res} --find-max`: one forward per view count, doubling from {args.start}, "
        f"until out of memory or the next forward would take over {args.time_cap:.0f} s; {args.precision} "
        "backbone both sides.\n",
        "| side | views | fits | forward s | images/s | peak MiB |",
        "|---|---|---|---|---|---|",
    ]
    for side, steps in ladders.items():
        for s in steps:
            fits = {True: "yes", False: "out of memory", None: "not tried (time cap)"}[s["fits"]]
            timing = (
                f"{s['seconds']:.2f} | {s['views'] / s['seconds']:.1f} | {s['peak_mb']:.0f}"
                if s["fits"]
                else "- | - | -"
            )
            lines.append(f"| {side} | {s['views']} | {fits} | {timing} |")
    lines.append("")
    for side, steps in ladders.items():
        largest = max((s["views"] for s in steps if s["fits"]), default=0)
        projection = projected_max(steps, args.device)
        lines.append(
            f"- {side}: largest run that fit {largest} views"
            + (
                f"; memory growth of the last two runs projects {projection} views to fill the device"
                if projection
                else ""
            )
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    """Measure the view ladder and append a table to RESULTS.md."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="da3-small")
    parser.add_argument("--views", nargs="+", type=int, default=[8, 16, 32, 64])
    parser.add_argument("--res", type=int, default=280)
    parser.add_argument("--precision", default="bf16", choices=["bf16", "fp32"])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--reps", type=int, default=1, help="timed forwards per process (after one warm-up)")
    parser.add_argument("--find-max", action="store_true", help="largest view count per forward instead")
    parser.add_argument("--start", type=int, default=16, help="--find-max: first view count")
    parser.add_argument("--time-cap", type=float, default=60.0, help="--find-max: seconds a forward may take")
    parser.add_argument("--max-views", type=int, default=4096, help="--find-max: stop doubling past this")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    oracle = os.environ.get("DA3_ORACLE_PYTHON", str(ROOT / ".venv-oracle" / "bin" / "python"))
    model_dir = bench_weights(args.preset)
    sides = (("ref", oracle), ("ours", sys.executable))

    if args.find_max:
        ladders = {}
        for side, python in sides:
            ladders[side] = find_max(python, side, model_dir, args)
            print(
                f"{side}: " + ", ".join(f"{s['views']} {'fits' if s['fits'] else 'no'}" for s in ladders[side]),
                flush=True,
            )
        publish(_max_report(args, ladders), write=not args.no_write)
        return

    rows = []
    for views in args.views:
        result = {
            side: measure(
                python, side, model_dir, views, args.res, args.precision, args.reps, warmup=1, device=args.device
            )
            for side, python in sides
        }
        rows.append((views, result))
        print(
            f"{views} views: "
            + ", ".join(
                f"{side} {min(r['times']):.2f}s peak {r['peak_mb']:.0f} MiB "
                f"(+{r['peak_mb'] - r['loaded_mb']:.0f} over the loaded model)"
                for side, r in result.items()
            ),
            flush=True,
        )
    (v0, first), (v1, last) = rows[0], rows[-1]
    growth = {
        side: ((last[side]["peak_mb"] - first[side]["peak_mb"]) / (v1 - v0) if v1 > v0 else 0.0) for side, _ in sides
    }
    memory = "peak CUDA MiB" if args.device == "cuda" else "peak RSS MiB"
    lines = [
        f"\n## Scaling with views, {args.preset} @{args.res}, {args.device.upper()}, {time.strftime('%Y-%m-%d')}\n",
        f"Machine: {machine(args.device)}. `python benchmarks/scaling.py --device {args.device} --preset "
        f"{args.preset} --res {args.res}`: one whole `inference()` per view count after one warm-up of the "
        f"same shape, each side and count in a fresh process; {args.precision} backbone both sides. "
        "'forward MiB' is the peak minus the memory after loading the model.\n",
        f"| views | reference s | ours s | ours / reference | {memory} ref | {memory} ours "
        "| forward MiB ref | forward MiB ours |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for views, r in rows:
        t_ref, t_ours = min(r["ref"]["times"]), min(r["ours"]["times"])
        lines.append(
            f"| {views} | {t_ref:.2f} | {t_ours:.2f} | {t_ours / t_ref:.2f} | {r['ref']['peak_mb']:.0f} | "
            f"{r['ours']['peak_mb']:.0f} | {r['ref']['peak_mb'] - r['ref']['loaded_mb']:.0f} | "
            f"{r['ours']['peak_mb'] - r['ours']['loaded_mb']:.0f} |"
        )
    verdict = "no faster than" if growth["ours"] <= growth["ref"] else "FASTER than"
    lines.append(
        f"\nPeak memory grows {growth['ours']:.1f} MiB per view for ours and {growth['ref']:.1f} for the "
        f"reference between {v0} and {v1} views: ours grows {verdict} the reference's.\n"
    )
    publish("\n".join(lines), write=not args.no_write)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "ladder":
        side, model_dir, res, precision, device, start, cap, max_views = sys.argv[2:10]
        _ladder_worker(side, model_dir, int(res), precision, device, int(start), float(cap), int(max_views))
    else:
        sys.path.insert(0, str(ROOT))
        main()
