"""Upstream benchmark metrics (depth_anything_3.bench.utils) on given inputs.

args: {"cases": [{"kind": "pose", "pred": key, "gt": key}
                 | {"kind": "recon", "pred": key, "gt": key, "threshold": float, "voxel": float|null}
                 | {"kind": "tsdf", "depths": key, "images": key, "K": key, "ext": key, "voxel": float, "trunc": float,
                    "max_depth": float, "n_points": int, "seed": int}
                 | {"kind": "scale", "a": key, "b": key}, ...]}
outputs per case i: pose -> case{i}_auc03/05/15/30; recon -> case{i}_<metric>; tsdf -> case{i}_vertices,
_triangles, _points (sampled after open3d's RNG is seeded with ``seed``); scale -> case{i}_scale.
"""

import json
import sys

import numpy as np
import open3d as o3d
import torch
from depth_anything_3.bench.utils import (
    compute_pose,
    create_tsdf_volume,
    evaluate_3d_reconstruction,
    fuse_depth_to_tsdf,
    sample_points_from_mesh,
)
from depth_anything_3.utils.alignment import least_squares_scale_scalar
from depth_anything_3.utils.geometry import as_homogeneous

inputs, args = np.load(sys.argv[1]), json.loads(open(sys.argv[2]).read())
out = {}
for i, case in enumerate(args["cases"]):
    if case["kind"] == "pose":
        result = compute_pose(
            torch.from_numpy(as_homogeneous(inputs[case["pred"]])), torch.from_numpy(as_homogeneous(inputs[case["gt"]]))
        )
        out.update({f"case{i}_{k}": np.array(float(v)) for k, v in result.items()})
    elif case["kind"] == "recon":
        result = evaluate_3d_reconstruction(inputs[case["pred"]], inputs[case["gt"]], case["threshold"], case["voxel"])
        out.update({f"case{i}_{k}": np.array(float(v)) for k, v in result.items()})
    elif case["kind"] == "tsdf":
        volume = create_tsdf_volume(voxel_length=case["voxel"], sdf_trunc=case["trunc"])
        mesh = fuse_depth_to_tsdf(
            volume,
            inputs[case["depths"]],
            inputs[case["images"]],
            inputs[case["K"]],
            inputs[case["ext"]],
            max_depth=case["max_depth"],
        )
        o3d.utility.random.seed(case["seed"])
        points = np.asarray(sample_points_from_mesh(mesh, case["n_points"]).points)
        out.update(
            {
                f"case{i}_vertices": np.asarray(mesh.vertices),
                f"case{i}_triangles": np.asarray(mesh.triangles),
                f"case{i}_points": points,
            }
        )
    else:
        scale = least_squares_scale_scalar(torch.from_numpy(inputs[case["a"]]), torch.from_numpy(inputs[case["b"]]))
        out[f"case{i}_scale"] = np.array(float(scale))
np.savez(sys.argv[3], **out)
