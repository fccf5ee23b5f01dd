"""Upstream's DTU reconstruction mode: fuse3d (back-projection or multi-view consistency) then eval3d.

args: {"root": folder holding dtu/, "cases": [{"scene": s, "mode": "recon_posed" | "recon_unposed", "depth": key,
       "intrinsics": key, "extrinsics": key}, ...]}
outputs per case i: case{i}_points (the fused cloud as written) and case{i}_<metric> for eval3d's comp, acc, overall.
"""

import json
import os
import sys
import tempfile

import numpy as np
import open3d as o3d

inputs, args = np.load(sys.argv[1]), json.loads(open(sys.argv[2]).read())
os.makedirs("workspace", exist_ok=True)
os.symlink(os.path.abspath(args["root"]), "workspace/benchmark_dataset")

from depth_anything_3.bench.registries import MV_REGISTRY  # noqa: E402

dataset = MV_REGISTRY.get("dtu")()
out = {}
for i, case in enumerate(args["cases"]):
    with tempfile.TemporaryDirectory() as tmp:
        result, fused = os.path.join(tmp, "results.npz"), os.path.join(tmp, "pcd.ply")
        np.savez(
            result,
            depth=inputs[case["depth"]],
            intrinsics=inputs[case["intrinsics"]],
            extrinsics=inputs[case["extrinsics"]],
        )
        dataset.fuse3d(case["scene"], result, fused, case["mode"])
        out[f"case{i}_points"] = np.asarray(o3d.io.read_point_cloud(fused).points)
        out.update({f"case{i}_{k}": np.array(float(v)) for k, v in dataset.eval3d(case["scene"], fused).items()})
np.savez(sys.argv[3], **out)
