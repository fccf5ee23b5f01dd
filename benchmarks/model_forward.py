"""DA3 forward time and peak memory: ours vs the reference depth-anything-3 on identical weights and inputs.

Each measurement runs in a fresh process (so peak memory is per case), ours and the reference alternating,
each side in its best precision (bf16 autocast on the backbone, heads fp32), and the reported time is the
minimum over repetitions after the warm-ups. On CPU peak memory is the process's peak RSS; on CUDA it is
``torch.cuda.max_memory_allocated`` and throughput is also given in images/s.

    python benchmarks/model_forward.py                      # da3-small/base x 1/4/8 views at 504, CPU
    python benchmarks/model_forward.py --presets da3-small --views 1 4 --rounds 2
    python benchmarks/model_forward.py --device cuda --presets da3-large --views 16
    python benchmarks/model_forward.py --vda --device cuda  # Video Depth Anything vits, ms/frame (ours only)

The reference runs with ``DA3_ORACLE_PYTHON`` (default ``.venv-oracle/bin/python``). Results are
appended to benchmarks/RESULTS.md unless ``--no-write``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from report import publish

ROOT = Path(__file__).resolve().parent.parent


def _peak_mb(device: str) -> float:
    """Peak memory so far: CUDA allocations on a GPU, the process's RSS on CPU (MiB)."""
    import torch

    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_side(side: str, model_dir: str, precision: str, device: str):
    """The model of one side, on ``device`` in ``precision``, as a callable ``run(images, res)``."""
    import torch

    if side == "ours":
        sys.path.insert(0, str(ROOT))
        from da3core import DepthAnything3

        model = DepthAnything3.from_pretrained(model_dir, device=device).set_precision(precision)
        return lambda images, res: model.inference(images, process_res=res)
    from depth_anything_3.api import DepthAnything3 as Reference

    model = Reference.from_pretrained(model_dir).to(device).eval()
    if precision == "bf16" and device == "cpu":  # the reference picks bf16 only when it believes CUDA supports it
        torch.cuda.is_bf16_supported = lambda *a, **k: True
    elif precision == "fp32":
        net = model.model
        model.forward = lambda image, *a: net(image, *a)
    return lambda images, res: model.inference(images, process_res=res)


# Self time of one profiled forward is split by kind of kernel: attention, GEMM and convolution run the same
# library kernels (torch's CPU flash attention, MKL, oneDNN) on both sides, so they bound how far ours can get
# ahead of the reference without kernels of its own.
KERNELS = {
    "attention": ("scaled_dot_product", "flash_attention"),
    "gemm": ("addmm", "aten::mm", "bmm"),
    "conv": ("conv",),
}


def _kind(op: str) -> str:
    return next((kind for kind, keys in KERNELS.items() if any(k in op for k in keys)), "other")


def kernel_breakdown(run: Callable[[], object]) -> dict[str, dict[str, float]]:
    """Seconds (self time) and GFLOP of one profiled ``run()``, per kind of kernel (KERNELS, then "other")."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=True, with_flops=True) as prof:
        run()
    out = {kind: {"s": 0.0, "gflop": 0.0} for kind in (*KERNELS, "other")}
    for avg in prof.key_averages(group_by_input_shape=True):
        kind = _kind(avg.key)
        out[kind]["s"] += avg.self_cpu_time_total / 1e6
        if kind == "attention" and "for_cpu" in avg.key:  # profiler counts no attention FLOPs: 4 B H N M D
            (b, h, n, d), (_, _, m, _) = avg.input_shapes[0], avg.input_shapes[1]
            out[kind]["gflop"] += 4 * b * h * n * m * d * avg.count / 1e9
        elif kind != "other":
            out[kind]["gflop"] += avg.flops / 1e9
    return out


def _worker(
    side: str, model_dir: str, views: int, res: int, precision: str, reps: int, warmup: int, device: str
) -> dict:
    """Time ``reps`` forwards of one side on a deterministic random batch (runs in its own process)."""
    import numpy as np
    import torch

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", os.cpu_count() or 1)))
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (res * 3 // 4, res, 3), dtype=np.uint8) for _ in range(views)]
    run = load_side(side, model_dir, precision, device)
    loaded_mb = _peak_mb(device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    with torch.inference_mode():
        for _ in range(warmup):
            run(images, res)
        times = []
        for _ in range(reps):
            sync()
            start = time.perf_counter()
            run(images, res)
            sync()
            times.append(time.perf_counter() - start)
        peak_mb = _peak_mb(device)  # before profiling, which holds records of every op
        kernels = kernel_breakdown(lambda: run(images, res)) if device == "cpu" else {}
    return {"times": times, "peak_mb": peak_mb, "loaded_mb": loaded_mb, "kernels": kernels}


def vda_ms_per_frame(device: str, input_size: int, frames: int) -> float:
    """Milliseconds per frame of our Video Depth Anything vits (seeded random weights) over a synthetic video."""
    import torch

    sys.path.insert(0, str(ROOT))
    from da3core.synthetic.writers import pattern_frames
    from da3core.video_depth.weights import load_model, write_random_checkpoint
    from da3core.video_depth.windowed import infer_windows

    with tempfile.TemporaryDirectory(prefix="da3-vda-bench-") as tmp:
        model = load_model(write_random_checkpoint(Path(tmp) / "vits.safetensors", "vits"))
    video = list(pattern_frames(frames, 480, 640))
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    best = float("inf")
    for _ in range(2):  # the first pass warms up the kernels
        sync()
        start = time.perf_counter()
        for _ in infer_windows(model, video, input_size=input_size, device=device):
            pass
        sync()
        best = min(best, time.perf_counter() - start)
    return 1000 * best / frames


def measure(
    python: str,
    side: str,
    model_dir: Path,
    views: int,
    res: int,
    precision: str,
    reps: int,
    warmup: int = 2,
    device: str = "cpu",
) -> dict:
    """Run :func:`_worker` for one side in a fresh process of ``python`` and return its JSON."""
    cmd = [
        python,
        __file__,
        "worker",
        side,
        str(model_dir),
        str(views),
        str(res),
        precision,
        str(reps),
        str(warmup),
        device,
    ]
    env = (
        {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        if side == "ref"
        else dict(os.environ)
    )
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"{side} worker failed ({views} views): {out.stderr.strip().splitlines()[-1:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_weights(preset: str) -> Path:
    """A model dir of seeded random weights for ``preset`` (written once, reused)."""
    from da3core.api import write_random_model_dir

    model_dir = ROOT / ".bench-weights" / preset
    if not (model_dir / "model.safetensors").exists():
        write_random_model_dir(preset, model_dir, seed=0)
    return model_dir


def machine(device: str) -> str:
    """CPU (or GPU) model and core count, for the results header."""
    if device == "cuda":
        import torch

        return f"{torch.cuda.get_device_name()}, {torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB"
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or platform.machine(),
    )
    return f"{model}, {os.cpu_count()} cores, torch threads = cores"


def main() -> None:
    """Run the matrix and append a table to RESULTS.md."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["da3-small", "da3-base"])
    parser.add_argument("--views", nargs="+", type=int, default=[1, 4, 8])
    parser.add_argument("--res", type=int, default=504)
    parser.add_argument("--precision", default="bf16", choices=["bf16", "fp32"])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--rounds", type=int, default=2, help="alternating ours/reference process pairs per case")
    parser.add_argument("--reps", type=int, default=2, help="timed forwards per process")
    parser.add_argument("--vda", action="store_true", help="time Video Depth Anything vits instead (ours only)")
    parser.add_argument("--vda-frames", type=int, default=96)
    parser.add_argument("--vda-input-size", type=int, default=518)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if args.vda:
        ms = vda_ms_per_frame(args.device, args.vda_input_size, args.vda_frames)
        publish(
            f"\n## Video Depth Anything vits, {args.device}, {time.strftime('%Y-%m-%d')}\n\nMachine: "
            f"{machine(args.device)}. `python benchmarks/model_forward.py --vda --device {args.device}`: "
            f"{args.vda_frames} synthetic 640x480 frames at input_size {args.vda_input_size}, windowed inference, "
            "seeded random weights, best of 2 passes: "
            f"**{ms:.1f} ms/frame**. No reference Video Depth Anything is installed to compare with.\n",
            write=not args.no_write,
        )
        return

    oracle = os.environ.get("DA3_ORACLE_PYTHON", str(ROOT / ".venv-oracle" / "bin" / "python"))
    rows, breakdowns = [], []
    for preset in args.presets:
        model_dir = bench_weights(preset)
        for views in args.views:
            best: dict[str, list[float]] = {"ours": [], "ref": []}
            peak = {"ours": 0.0, "ref": 0.0}
            kernels: dict[str, tuple[float, dict]] = {}  # side -> (its fastest process's time, that one's breakdown)
            for _ in range(args.rounds):
                for side, python in (("ref", oracle), ("ours", sys.executable)):
                    m = measure(python, side, model_dir, views, args.res, args.precision, args.reps, device=args.device)
                    best[side] += m["times"]
                    peak[side] = max(peak[side], m["peak_mb"])
                    if min(m["times"]) < kernels.get(side, (float("inf"), {}))[0]:
                        kernels[side] = (min(m["times"]), m["kernels"])
            t_ours, t_ref = min(best["ours"]), min(best["ref"])
            rows.append((preset, views, t_ref, t_ours, t_ours / t_ref, peak["ref"], peak["ours"]))
            breakdowns.append((preset, views, t_ref, kernels["ref"][1], kernels["ours"][1]))
            print(
                f"{preset} x{views}: reference {t_ref:.3f}s ({views / t_ref:.1f} images/s), ours {t_ours:.3f}s "
                f"({views / t_ours:.1f} images/s), ratio {t_ours / t_ref:.2f}, peak memory "
                f"{peak['ref']:.0f} / {peak['ours']:.0f} MiB",
                flush=True,
            )
    memory = "peak CUDA MiB" if args.device == "cuda" else "peak RSS MiB"
    table = [
        f"\n## DA3 forward, {args.device.upper()} ({args.precision} backbone both sides), "
        f"{time.strftime('%Y-%m-%d')}\n",
        f"Machine: {machine(args.device)}; `python benchmarks/model_forward.py --device {args.device} --precision "
        f"{args.precision}`; whole `inference()` (preprocess + forward + output) at process_res {args.res}, "
        f"min of {args.rounds * args.reps} runs per side.\n",
        f"| preset | views | reference s | ours s | ours / reference | images/s ref | images/s ours "
        f"| {memory} ref | {memory} ours |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    table += [
        f"| {p} | {v} | {tr:.3f} | {to:.3f} | {r:.2f} | {v / tr:.1f} | {v / to:.1f} | {mr:.0f} | {mo:.0f} |"
        for p, v, tr, to, r, mr, mo in rows
    ]
    if args.device == "cpu":
        table += breakdown_table(breakdowns)
    publish("\n".join(table), write=not args.no_write)


def breakdown_table(breakdowns: list[tuple[str, int, float, dict, dict]]) -> list[str]:
    """Markdown lines: each side's kernel seconds (GFLOP/s) and the ratio ours cannot beat with those kernels."""

    def cell(k: dict[str, float]) -> str:
        return f"{k['s']:.3f} ({k['gflop'] / k['s']:.0f})" if k["gflop"] and k["s"] else f"{k['s']:.3f}"

    lines = [
        "\nSelf time of one profiled forward per kind of kernel, seconds (GFLOP/s). `floor` = (our attention + "
        "GEMM + conv seconds) / the reference's time: the ratio ours would reach if everything but these library "
        "kernels took no time.\n",
        "| preset | views | side | attention | GEMM | conv | other | floor |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for preset, views, t_ref, ref, ours in breakdowns:
        floor = sum(ours[kind]["s"] for kind in KERNELS) / t_ref
        for side, k in (("reference", ref), ("ours", ours)):
            cells = " | ".join(cell(k[kind]) for kind in (*KERNELS, "other"))
            lines.append(
                f"| {preset} | {views} | {side} | {cells} | {floor:.2f} |"
                if side == "ours"
                else f"| {preset} | {views} | {side} | {cells} | |"
            )
    return lines


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        side, model_dir, views, res, precision, reps, warmup, device = sys.argv[2:10]
        print(json.dumps(_worker(side, model_dir, int(views), int(res), precision, int(reps), int(warmup), device)))
    else:
        sys.path.insert(0, str(ROOT))
        main()
