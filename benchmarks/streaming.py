"""Streaming reconstruction: frames/s and peak memory against sequence length, and Dask with 2 workers against 1.

Each case runs the whole reconstruct flow in streaming mode (``streaming.chunk_size=60 streaming.overlap=30``, the
real model path: da3-small with seeded random weights at a tiny processing resolution) on a synthetic H.264 video in
a fresh process, so the flow process's peak RSS (``ru_maxrss``) is the run's own. Memory must stay flat as the
sequence grows (acceptance: the peak at 3,000 frames <= 1.2x the peak at 300). With ``runner=dask`` the chunks run
in worker processes, whose peak RSS is sampled separately. frames/s is frames / the ``streaming`` stage (decode,
inference, alignment, loop closure and the writes into the store; exports excluded).

    python benchmarks/streaming.py [--frames 300 3000] [--dask-frames 600] [--size 48 64] [--res 56]
    python benchmarks/streaming.py --frames 120 --dask-frames 0 --no-write   # smoke run
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
import threading
import time
from pathlib import Path

from report import publish

ROOT = Path(__file__).resolve().parent.parent
STREAM = ["streaming.enabled=true", "streaming.chunk_size=60", "streaming.overlap=30"]


def worker_peaks(stop: threading.Event, peaks: dict[int, float]) -> None:
    """Sample this process's Dask worker processes every 0.2 s: their peak RSS (MiB) by pid."""
    import psutil

    me = psutil.Process()
    while not stop.wait(0.2):
        for proc in me.children(recursive=True):
            try:
                # The nanny starts each worker through multiprocessing's spawn; Prefect's server is another child.
                if any("spawn_main" in part for part in proc.cmdline()):
                    peaks[proc.pid] = max(peaks.get(proc.pid, 0.0), proc.memory_info().rss / 2**20)
            except psutil.Error:  # a worker that exited between the listing and the read
                continue


def child(video: str, argv: list[str]) -> None:
    """Run one streaming flow in this process and print its numbers as JSON."""
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    from da3core.store import SceneStore
    from flows.config import load_config
    from flows.reconstruct import reconstruct

    stop = threading.Event()
    peaks: dict[int, float] = {}
    sampler = threading.Thread(target=worker_peaks, args=(stop, peaks), daemon=True)
    sampler.start()
    started = time.perf_counter()
    result = reconstruct(load_config("reconstruct", [f"scene={video}", *argv]))
    wall = time.perf_counter() - started
    stop.set()
    sampler.join()
    attrs = SceneStore(result.store_url).attrs()
    stage = attrs["stages"]["streaming"]
    print(
        json.dumps(
            {
                "frames": attrs["n_frames"],
                "chunks": len(stage["chunks"]),
                "wall_s": wall,
                "streaming_s": attrs["timings"]["streaming"],
                "inference_s": attrs["timings"]["inference"],
                "workers": len({json.dumps(c["worker"]) for c in stage["chunks"]}),
                "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "worker_peak_rss_mib": max(peaks.values(), default=None),
            }
        )
    )


def measure(n_frames: int, size: tuple[int, int], argv: list[str], workdir: Path) -> dict:
    """Encode an ``n_frames`` synthetic video (once per length) and run the flow on it in a fresh Python process."""
    from da3core.synthetic import encode_frames, pattern_frames

    video = workdir / f"walk_{n_frames}.mp4"
    if not video.exists():
        encode_frames(pattern_frames(n_frames, *size), video)
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(video), *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    if out.returncode:
        sys.exit(f"the {n_frames}-frame run failed:\n{out.stderr[-3000:]}")
    row = json.loads(out.stdout.strip().splitlines()[-1])
    row["fps"] = row["frames"] / row["streaming_s"]
    return row


def main() -> None:
    """Measure each case, print the tables and append them to RESULTS.md."""
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2], sys.argv[3:])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, nargs="+", default=[300, 3000], help="sequence lengths (thread runner)")
    parser.add_argument("--dask-frames", type=int, default=600, help="length for Dask 1 vs 2 workers; 0 skips it")
    parser.add_argument("--size", type=int, nargs=2, default=[48, 64], metavar=("H", "W"))
    parser.add_argument("--res", type=int, default=56, help="processing.process_res")
    parser.add_argument("--loop-closure", action="store_true")
    parser.add_argument("--machine", default="", help="extra words about the machine for RESULTS.md")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")  # a loaded machine starts slowly
    workdir = Path(tempfile.mkdtemp(prefix="da3-stream-bench-"))
    size = tuple(args.size)
    base = [
        "model=da3-small",
        "model.weights=random",
        f"processing.process_res={args.res}",
        "input.fps=0",
        *STREAM,
        f"streaming.loop_closure={str(args.loop_closure).lower()}",
        "export=mini_npz",
        "force=true",
    ]
    rows = []
    for n in args.frames:
        rows.append(measure(n, size, [*base, f"storage.root={workdir / f'thread_{n}'}"], workdir))
        r = rows[-1]
        print(
            f"{n:>6} frames: {r['chunks']} chunks, {r['fps']:.2f} frames/s, flow {r['wall_s']:.1f}s, "
            f"peak RSS {r['peak_rss_mib']:.0f} MiB",
            flush=True,
        )
    dask = []
    for workers in (1, 2) if args.dask_frames else ():
        dask.append(
            measure(
                args.dask_frames,
                size,
                [*base, "runner=dask", f"dask_workers={workers}", f"storage.root={workdir / f'dask_{workers}'}"],
                workdir,
            )
        )
        r = dask[-1]
        print(
            f"dask, {workers} worker(s), {args.dask_frames} frames: {r['fps']:.2f} frames/s, flow "
            f"{r['wall_s']:.1f}s, chunks on {r['workers']} worker(s), flow peak RSS {r['peak_rss_mib']:.0f} MiB, "
            f"largest worker peak {r['worker_peak_rss_mib'] or 0:.0f} MiB",
            flush=True,
        )

    command = (
        f"`python benchmarks/streaming.py --frames {' '.join(map(str, args.frames))} --dask-frames "
        f"{args.dask_frames} --size {size[0]} {size[1]} --res {args.res}"
        f"{' --loop-closure' if args.loop_closure else ''}`"
    )
    text = (
        f"\n## Streaming reconstruction: throughput and peak memory vs sequence length, {time.strftime('%Y-%m-%d')}"
        f"\n\nMachine: {platform.machine()}, {os.cpu_count()} cores, CPU only{args.machine}. {command}: the "
        f"reconstruct flow with {' '.join(STREAM)}, loop closure {'on' if args.loop_closure else 'off'}, "
        f"da3-small with seeded random weights at process_res {args.res}, a synthetic {size[0]}x{size[1]} 30 fps "
        "H.264 video (every frame), export mini_npz. Each case runs in a fresh process; peak RSS is the flow "
        "process's `ru_maxrss`; frames/s is frames / the streaming stage (decode, inference, alignment, "
        "writes).\n\n"
        "| frames | chunks | frames/s | streaming s | flow wall s | peak RSS MiB |\n|---|---|---|---|---|---|\n"
        + "".join(
            f"| {r['frames']:,} | {r['chunks']} | {r['fps']:.2f} | {r['streaming_s']:.1f} | "
            f"{r['wall_s']:.1f} | {r['peak_rss_mib']:.0f} |\n"
            for r in rows
        )
    )
    if len(rows) > 1:
        text += (
            f"\nPeak RSS at {rows[-1]['frames']:,} frames / at {rows[0]['frames']:,}: "
            f"{rows[-1]['peak_rss_mib'] / rows[0]['peak_rss_mib']:.2f}x (acceptance <= 1.2x).\n"
        )
    if dask:
        text += (
            f"\nDask (`runner=dask`, a local cluster, one model per worker), {args.dask_frames} frames:\n\n"
            "| workers | chunks ran on | frames/s | streaming s | flow wall s | flow peak RSS MiB | "
            "largest worker peak RSS MiB |\n|---|---|---|---|---|---|---|\n"
            + "".join(
                f"| {w} | {r['workers']} | {r['fps']:.2f} | {r['streaming_s']:.1f} | {r['wall_s']:.1f} | "
                f"{r['peak_rss_mib']:.0f} | {r['worker_peak_rss_mib'] or 0:.0f} |\n"
                for w, r in zip((1, 2), dask)
            )
        )
    publish(text, write=not args.no_write)


if __name__ == "__main__":
    main()
