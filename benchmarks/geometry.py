"""Preprocessing and ray-pose conversion: ours vs the reference, interleaved rounds, min of k.

Run: DA3_ORACLE_PYTHON=/path/to/.venv-oracle/bin/python .venv/bin/python benchmarks/geometry.py [--rounds 3]
Inputs: 8 JPEG photos-sized images (1920x1080) to process_res 504, and ray maps of 4 and 8 views at
216x288 (what DualDPT emits for a 504x378 input). Ours runs in this process, the reference in the oracle
venv; both use the same number of torch threads.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from oracle import run_oracle  # noqa: E402

from da3core.preprocess import preprocess_images  # noqa: E402
from da3core.ray_pose import rays_to_cameras  # noqa: E402


def best_of(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def ray_inputs(views: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Plausible noisy ray maps (a forward-looking camera) with confidences >= 1, (1, views, 216, 288, ...)."""
    rng = np.random.default_rng(seed)
    h, w = 216, 288
    v, u = np.meshgrid((np.arange(h) + 0.5) / h * 2 - 1, (np.arange(w) + 0.5) / w * 2 - 1, indexing="ij")
    dirs = np.stack([u * 0.7, v * 0.5, np.ones_like(u)], -1)[None].repeat(views, 0)
    dirs += 0.01 * rng.normal(size=dirs.shape)
    ray = np.concatenate([dirs, rng.normal(0, 0.01, dirs.shape)], -1)[None].astype(np.float32)
    conf = rng.uniform(1, 5, ray.shape[:4]).astype(np.float32)
    return ray, conf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i in range(8):
            img = np.clip(rng.normal(128, 40, (1080, 1920, 3)), 0, 255).astype(np.uint8)
            paths.append(str(Path(tmp) / f"{i}.jpg"))
            Image.fromarray(img).save(paths[-1], quality=90)
        rows = []
        for views in (4, 8):
            ray, conf = ray_inputs(views)
            ours_pre, ours_ray, ref_pre, ref_ray = [], [], [], []
            for _ in range(args.rounds):
                ours_pre.append(best_of(lambda: preprocess_images(paths), args.repeats))
                ours_ray.append(
                    best_of(
                        lambda ray=ray, conf=conf: rays_to_cameras(
                            torch.from_numpy(ray), torch.from_numpy(conf), (378, 504)
                        ),
                        args.repeats,
                    )
                )
                ref = run_oracle(
                    "geometry_bench.py",
                    {"ray": ray, "conf": conf},
                    image_paths=paths,
                    process_res=504,
                    ray_key="ray",
                    conf_key="conf",
                    ray_hw=[378, 504],
                    repeats=args.repeats,
                    threads=args.threads,
                )
                ref_pre.append(float(ref["preprocess_s"]))
                ref_ray.append(float(ref["ray_pose_s"]))
            if views == 4:
                rows.append(("preprocess 8 x 1920x1080 JPEG -> 504x280", min(ours_pre), min(ref_pre)))
            rows.append((f"ray pose, {views} views, 216x288 rays", min(ours_ray), min(ref_ray)))
    print("| case | ours (s) | reference (s) | ratio |\n|---|---|---|---|")
    for name, ours, ref in rows:
        print(f"| {name} | {ours:.3f} | {ref:.3f} | {ours / ref:.2f} |")


if __name__ == "__main__":
    main()
