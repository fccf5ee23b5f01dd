"""Video depth throughput and peak memory against video length: memory must stay flat as the video grows.

Each length runs the whole ``video_depth`` flow (decode → model → zarr + depth.ndjson, then the npz and
vis-mp4 second pass) in a fresh process on a synthetic video, so the peak RSS of that process
(``ru_maxrss``) is the run's own; frames/s is the streaming stage (decode + model + writes).

    python benchmarks/video_depth.py [--frames 100 1000 3000] [--size 64 80] [--input-size 56] [--streaming]
    python benchmarks/video_depth.py --trace-rss 2000   # anonymous RSS every 250 frames within one run
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
from pathlib import Path

from report import publish

from flows.config import load_config

ROOT = Path(__file__).resolve().parent.parent


def child(video: str, argv: list[str]) -> None:
    """Run one flow in this process and print its numbers as JSON."""
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    from da3core.store import SceneStore
    from flows.video_depth import video_depth

    started = time.perf_counter()
    result = video_depth(load_config("video_depth", [f"video={video}", *argv]))
    wall = time.perf_counter() - started
    attrs = SceneStore(result.store_url).attrs()
    print(
        json.dumps(
            {
                "wall_s": wall,
                "frames": attrs["n_frames"],
                "stream_fps": attrs["stages"]["inference"]["frames_per_second"],
                "timings": attrs["timings"],
                "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )


def anonymous_rss_mib() -> float:
    """Resident anonymous memory (heap and arrays, not mapped files), after returning freed heap to the OS."""
    import ctypes
    import ctypes.util

    ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim(0)
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("RssAnon:")) / 1024


def trace_rss(n_frames: int, size: tuple[int, int], argv: list[str], workdir: Path) -> list[tuple[int, float]]:
    """One in-process run with the real model, sampling anonymous RSS every 250 frames as depth maps arrive."""
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    import tasks.video_depth as vd
    from da3core.synthetic import encode_frames, pattern_frames
    from flows.video_depth import video_depth

    samples: list[tuple[int, float]] = []
    model_stream = vd._depth_stream

    def sampled(*args):  # wraps the real model's iterator; only observes
        for k, depth in enumerate(model_stream(*args)):
            if k % 250 == 0:
                samples.append((k, anonymous_rss_mib()))
            yield depth

    vd._depth_stream = sampled
    video = encode_frames(pattern_frames(n_frames, *size), workdir / f"trace_{n_frames}.mp4").path
    video_depth(load_config("video_depth", [f"video={video}", *argv]))
    samples.append((n_frames, anonymous_rss_mib()))
    return samples


def measure(n_frames: int, size: tuple[int, int], argv: list[str], workdir: Path) -> dict:
    """Encode an ``n_frames`` synthetic video and run the flow on it in a fresh Python process."""
    from da3core.synthetic import encode_frames, pattern_frames

    video = encode_frames(pattern_frames(n_frames, *size), workdir / f"bench_{n_frames}.mp4").path
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(video), *argv],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    """Measure each length, print a table and append it to RESULTS.md."""
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2], sys.argv[3:])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, nargs="+", default=[100, 1000, 3000])
    parser.add_argument("--size", type=int, nargs=2, default=[64, 80], metavar=("H", "W"))
    parser.add_argument("--input-size", type=int, default=56)
    parser.add_argument("--streaming", action="store_true", help="one frame at a time instead of 32-frame windows")
    parser.add_argument("--machine", default="", help="extra words about the machine for RESULTS.md")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--trace-rss", type=int, metavar="FRAMES", help="sample RSS within one run instead")
    args = parser.parse_args()

    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    workdir = Path(tempfile.mkdtemp(prefix="da3-vda-bench-"))
    argv = [
        "encoder=vits",
        "weights=random",
        f"input_size={args.input_size}",
        f"streaming={str(args.streaming).lower()}",
        "save_npz=true",
        "save_depth_video=true",
        "device=cpu",
    ]
    if args.trace_rss:
        samples = trace_rss(args.trace_rss, tuple(args.size), argv, workdir)
        print("anonymous RSS MiB by frame: " + ", ".join(f"{k}: {mib:.0f}" for k, mib in samples))
        return
    rows = []
    for n in args.frames:
        r = measure(n, tuple(args.size), argv, workdir)
        rows.append(r)
        print(
            f"{n:>6} frames: {r['stream_fps']:.2f} frames/s, flow {r['wall_s']:.1f}s, "
            f"peak RSS {r['peak_rss_mib']:.0f} MiB",
            flush=True,
        )
    mode = "streaming" if args.streaming else "windowed (32-frame windows)"
    table = "\n".join(
        f"| {r['frames']:,} | {r['stream_fps']:.2f} | {r['wall_s']:.1f} | {r['peak_rss_mib']:.0f} |" for r in rows
    )
    text = (
        f"\n## Video depth: throughput and peak memory vs video length, {time.strftime('%Y-%m-%d')}\n\n"
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, CPU only{args.machine}. "
        f"`python benchmarks/video_depth.py --frames {' '.join(map(str, args.frames))} --input-size "
        f"{args.input_size}{' --streaming' if args.streaming else ''}`: vits with seeded random weights, "
        f"{mode}, a synthetic {args.size[0]}x{args.size[1]} 30 fps H.264 video, input_size {args.input_size}; "
        "outputs zarr + depth.ndjson + npz + vis mp4. Each length runs the whole flow in a fresh process; "
        "peak RSS is that process's `ru_maxrss` (Python, torch, Prefect client and model included); "
        "frames/s covers decode + model + per-frame writes.\n\n"
        "| frames | frames/s | flow wall s | peak RSS MiB |\n|---|---|---|---|\n" + table + "\n"
    )
    publish(text, write=not args.no_write)


if __name__ == "__main__":
    main()
