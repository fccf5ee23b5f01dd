"""Export speed: ours vs the reference depth-anything-3 on the same prediction arrays, plus the CPU rasterizer.

Both sides read one npz of prediction arrays (depth, conf, cameras, images, one Gaussian per pixel from an
exact synthetic capture) and write into a fresh temporary folder. Ours runs in this process, the reference
in the oracle venv (``DA3_ORACLE_PYTHON``, default ``.venv-oracle/bin/python``) through this file's
``worker`` mode; rounds alternate reference / ours and each side reports the minimum over its runs.

    python benchmarks/export.py                 # glb (1M points), gs_ply and gs_video from 10 views at
                                                # 504x336, rasterizer before/after
    python benchmarks/export.py --video-views 2 # a gs_video of 2 views' Gaussians only (5x fewer)
    python benchmarks/export.py --quick         # 2 views at 168x112, a few seconds per format

gs_video has no reference time on CPU: the worker tries the reference once and reports why it failed.
The rasterizer rows render 200k Gaussians of 2 views along their video path, with this checkout's
rasterizer and with the one at ``--baseline`` (default: the tiled rasterizer before the issue-15 rewrite).
Results are appended to benchmarks/RESULTS.md unless ``--no-write``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from report import publish

ROOT = Path(__file__).resolve().parent.parent
GS_KEYS = ("means", "scales", "rotations", "harmonics", "opacities")


def _worker(npz: str, args: dict) -> dict:
    """Reference side (oracle venv): time each format ``reps`` times; try gs_video once and report the error."""
    import shutil

    import torch

    torch.set_num_threads(args["threads"])
    from depth_anything_3.specs import Gaussians, Prediction
    from depth_anything_3.utils.export import export

    arrays = dict(np.load(npz))
    pred = Prediction(
        depth=arrays["depth"],
        is_metric=0,
        conf=arrays["conf"],
        extrinsics=arrays["extrinsics"],
        intrinsics=arrays["intrinsics"],
        processed_images=arrays["images"],
    )
    pred.gaussians = Gaussians(*(torch.from_numpy(arrays[f"gs_{k}"])[None] for k in GS_KEYS))
    times: dict = {}
    for fmt in args["formats"]:
        times[fmt] = []
        for _ in range(args["reps"]):
            out = tempfile.mkdtemp(prefix="da3-ref-bench-")
            start = time.perf_counter()
            export(pred, fmt, out, glb={"num_max_points": args["num_max_points"]})
            times[fmt].append(time.perf_counter() - start)
            shutil.rmtree(out)
    result = {"times": times}
    if args["try_video"]:
        out = tempfile.mkdtemp(prefix="da3-ref-bench-")
        try:
            export(pred, "gs_video", out)
            result["gs_video"] = "ran"
        except Exception as exc:  # noqa: BLE001 - the failure is the measurement
            result["gs_video"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
        shutil.rmtree(out)
    return result


def _reference(python: str, npz: Path, **args) -> dict:
    """Run :func:`_worker` in the oracle venv and return its JSON."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(OMP_NUM_THREADS=str(args["threads"]), HF_HUB_OFFLINE="1")
    proc = subprocess.run(
        [python, __file__, "worker", str(npz), json.dumps(args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tempfile.gettempdir(),
    )
    if proc.returncode != 0:
        raise RuntimeError(f"reference worker failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _scene(views: int, width: int, height: int, path: Path):
    """Synthetic prediction (exact geometry, pixel Gaussians) saved as the npz both sides read."""
    sys.path.insert(0, str(ROOT / "tests"))
    from export_scenes import synthetic_prediction

    prediction, _ = synthetic_prediction(n_views=views, width=width, height=height, gaussians=True)
    gs = prediction.gaussians
    np.savez(
        path,
        depth=prediction.depth,
        conf=prediction.conf,
        extrinsics=prediction.extrinsics,
        intrinsics=prediction.intrinsics,
        images=prediction.processed_images,
        **{f"gs_{k}": getattr(gs, k) for k in GS_KEYS},
    )
    return prediction


def _ours(prediction, fmt: str, reps: int, **options) -> list[float]:
    """Wall times of ``reps`` exports of ``fmt`` into fresh folders."""
    import shutil

    from da3core.export import export

    times = []
    for _ in range(reps):
        out = tempfile.mkdtemp(prefix="da3-bench-")
        start = time.perf_counter()
        export(prediction, fmt, out, **options)
        times.append(time.perf_counter() - start)
        shutil.rmtree(out)
    return times


def _video_prediction(prediction, views: list[int]):
    """The prediction restricted to ``views`` (Gaussians included), for a shorter gs_video."""
    from da3core.prediction import Gaussians, Prediction

    n, h, w = prediction.depth.shape
    keep = np.zeros((n, h * w), bool)
    keep[views] = True
    gs = prediction.gaussians
    return Prediction(
        depth=prediction.depth[views],
        conf=prediction.conf[views],
        extrinsics=prediction.extrinsics[views],
        intrinsics=prediction.intrinsics[views],
        processed_images=prediction.processed_images[views],
        gaussians=Gaussians(*(getattr(gs, k)[keep.reshape(-1)] for k in GS_KEYS)),
    )


def _baseline_rasterizer(rev: str):
    """The CPU rasterizer module as of git revision ``rev``."""
    import importlib.util

    source = subprocess.run(
        ["git", "show", f"{rev}:da3core/render/cpu_rasterizer.py"], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    path = Path(tempfile.mkdtemp(prefix="da3-baseline-")) / "cpu_rasterizer_baseline.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("cpu_rasterizer_baseline", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _per_frame(video_pred, n_gaussians: int, frames: int, rasterizer, threads: int) -> float:
    """Seconds per frame rendering ``frames`` trajectory frames of ``n_gaussians`` Gaussians with ``rasterizer``.

    Calls the module's ``rasterization`` directly (one call for all frames, covariances computed inside), so
    this checkout's rasterizer and an older one run the same way.
    """
    import torch

    from da3core.export.gs_video import render_cameras
    from da3core.geometry import affine_inverse, as_homogeneous
    from da3core.trajectories import make_trajectory

    w2c, intr, (h, w) = render_cameras(video_pred)
    c2w, intr_path = make_trajectory("extend", affine_inverse(w2c), intr, w)
    pick = np.linspace(0, len(c2w) - 1, frames).round().astype(int)
    gs = video_pred.gaussians
    subset = np.random.default_rng(0).choice(len(gs), size=min(n_gaussians, len(gs)), replace=False)
    tensor = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float32)  # noqa: E731
    params = {
        "means": tensor(gs.means[subset]),
        "quats": tensor(gs.rotations[subset]),
        "scales": tensor(gs.scales[subset]),
        "opacities": tensor(gs.opacities[subset]),
        "colors": tensor(gs.harmonics[subset]).transpose(1, 2).contiguous(),
        "viewmats": tensor(as_homogeneous(affine_inverse(c2w[pick]))),
        "Ks": tensor(intr_path[pick] * np.array([w, h, 1.0])[:, None]),
    }
    original_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        start = time.perf_counter()
        degree = int(round(np.sqrt(gs.harmonics.shape[-1]))) - 1
        rasterizer.rasterization(
            **params, width=w, height=h, sh_degree=degree, render_mode="RGB+ED", backgrounds=torch.zeros(frames, 3)
        )
        return (time.perf_counter() - start) / frames
    finally:
        torch.set_num_threads(original_threads)


def _machine() -> str:
    """CPU model, core count and load, for the results header."""
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "unknown CPU",
    )
    return f"{model}, {os.cpu_count()} cores"


def main() -> None:
    """Run the matrix and append a table to RESULTS.md."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 views at 168x112, 1 round")
    parser.add_argument("--rounds", type=int, default=2, help="alternating reference/ours rounds")
    parser.add_argument("--reps", type=int, default=2, help="runs per format per side per round")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--baseline", default="a9cf7bb", help="git revision of the rasterizer to compare with")
    parser.add_argument("--raster-frames", type=int, default=4)
    parser.add_argument("--video-views", type=int, default=0, help="views (evenly spaced) for gs_video; 0: all")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    import torch

    from da3core.export.gs_ply import keep_mask
    from da3core.render import cpu_rasterizer

    torch.set_num_threads(args.threads)
    views, width, height = (2, 168, 112) if args.quick else (10, 504, 336)
    rounds = 1 if args.quick else args.rounds
    oracle = os.environ.get("DA3_ORACLE_PYTHON", str(ROOT / ".venv-oracle" / "bin" / "python"))
    load_before = os.getloadavg()
    formats = ["glb", "gs_ply"]
    with tempfile.TemporaryDirectory(prefix="da3-export-bench-") as tmp:
        npz = Path(tmp) / "prediction.npz"
        prediction = _scene(views, width, height, npz)
        best = {f: {"ref": [], "ours": []} for f in formats}
        video_error = None
        for r in range(rounds):
            ref = _reference(
                oracle,
                npz,
                formats=formats,
                reps=args.reps,
                num_max_points=1_000_000,
                threads=args.threads,
                try_video=r == 0,
            )
            video_error = ref.get("gs_video", video_error)
            for fmt in formats:
                best[fmt]["ref"] += ref["times"][fmt]
                best[fmt]["ours"] += _ours(prediction, fmt, args.reps, num_max_points=1_000_000)
                print(
                    f"round {r}: {fmt} reference {min(ref['times'][fmt]):.2f}s, ours "
                    f"{min(best[fmt]['ours'][-args.reps :]):.2f}s",
                    flush=True,
                )
        picked = sorted(set(np.linspace(0, views - 1, args.video_views or views).round().astype(int).tolist()))
        video_pred = _video_prediction(prediction, picked)
        video_s = min(_ours(video_pred, "gs_video", 1, gs_video={"progress": False}))
        print(f"gs_video: ours {video_s:.1f}s; reference: {video_error}", flush=True)
        n_raster = 200_000 if not args.quick else 20_000
        raster_pred = _video_prediction(prediction, [0, views // 2])  # a 2-view path, as sparse as a video gets
        baseline = _baseline_rasterizer(args.baseline)
        # The baseline also runs with one thread: it shows how much of the gain is the threading alone.
        raster = {"before": [], "before_1": [], "after": []}
        for _ in range(rounds):  # alternate, as for the formats
            raster["before"].append(_per_frame(raster_pred, n_raster, args.raster_frames, baseline, args.threads))
            raster["before_1"].append(_per_frame(raster_pred, n_raster, args.raster_frames, baseline, 1))
            raster["after"].append(_per_frame(raster_pred, n_raster, args.raster_frames, cpu_rasterizer, args.threads))
        before, before_1, after = (min(raster[k]) for k in ("before", "before_1", "after"))
        print(
            f"rasterizer per frame: before {before:.2f}s ({before_1:.2f}s on 1 thread), after {after:.2f}s", flush=True
        )
    load_after = os.getloadavg()
    n_points = _point_count(prediction)
    n_frames = _video_frames(video_pred)
    n_ply = int(np.count_nonzero(keep_mask(prediction.depth)))
    command = "python benchmarks/export.py" + (" --quick" if args.quick else "")
    if "DA3_ORACLE_PYTHON" in os.environ:
        command = f"DA3_ORACLE_PYTHON={os.environ['DA3_ORACLE_PYTHON']} {command}"
    lines = [
        f"\n## Exports, CPU, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n",
        f"Machine: {_machine()}, shared with other work and loaded (1-min load average {load_before[0]:.1f} at the "
        f"start, {load_after[0]:.1f} at the end); torch threads {args.threads} both sides. Command: `{command}`. "
        f"Prediction: exact synthetic capture, {views} views at {width}x{height}, one Gaussian per pixel "
        f"({len(prediction.gaussians):,}). Times are whole `export()` calls into a fresh local folder, min over "
        f"{rounds * args.reps} runs per side, reference and ours alternating.\n",
        "| format | ours s | reference s | ours / reference |",
        "|---|---|---|---|",
    ]
    labels = {"glb": f"glb ({n_points:,} points + depth_vis)", "gs_ply": f"gs_ply ({n_ply:,} Gaussians)"}
    for fmt in formats:
        ours_s, ref_s = min(best[fmt]["ours"]), min(best[fmt]["ref"])
        lines.append(f"| {labels[fmt]} | {ours_s:.2f} | {ref_s:.2f} | {ours_s / ref_s:.2f} |")
    which = "all views" if len(picked) == views else f"views {', '.join(map(str, picked))}"
    lines.append(
        f"| gs_video ({which}: {len(video_pred.gaussians):,} Gaussians, {n_frames} frames "
        f"at {width}x{height}, 1 run) | {video_s:.1f} ({n_frames / video_s:.2f} frames/s) | "
        f"does not run on CPU | - |"
    )
    lines += [
        "",
        f"Reference gs_video on CPU fails: `{video_error}`. Past that upstream bug it would call gsplat 1.5.3, "
        "whose rasterizer has CUDA kernels only (spec/reference_oracle.md section 3), so there is no reference time.",
        "",
        f"CPU rasterizer, {n_raster:,} Gaussians of views 0 and {views // 2} at {width}x{height}, "
        f"{args.raster_frames} frames of their extend trajectory in one `rasterization` call, min of {rounds} "
        f"alternating runs: {before:.2f} s per frame at `{args.baseline}` ({before_1:.2f} s "
        f"with torch limited to 1 thread) -> {after:.2f} s per frame now ({before / after:.1f}x; "
        f"{before_1 / after:.1f}x against the 1-thread baseline).",
    ]
    publish("\n".join(lines), write=not args.no_write)


def _point_count(prediction) -> int:
    """Points our glb writes for ``prediction`` (after confidence filtering and the 1M cap)."""
    from da3core.export.glb import build_scene

    return len(build_scene(prediction, show_cameras=False).geometry["points"].vertices)


def _video_frames(prediction) -> int:
    """Frames in the default (extend) gs_video trajectory of ``prediction``."""
    from da3core.export.gs_video import render_cameras
    from da3core.geometry import affine_inverse
    from da3core.trajectories import make_trajectory

    w2c, intr, (_, w) = render_cameras(prediction)
    return len(make_trajectory("extend", affine_inverse(w2c), intr, w)[0])


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        print(json.dumps(_worker(sys.argv[2], json.loads(sys.argv[3]))))
    else:
        sys.path.insert(0, str(ROOT))
        main()
