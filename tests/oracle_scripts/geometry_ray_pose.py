"""Upstream ray-map -> camera conversion (DepthAnything3Net._process_ray_pose_estimation).

args: {"cases": [{"ray": key, "conf": key, "hw": [H, W], "seed": int}, ...]}; before each case the global
torch RNG is seeded with torch.manual_seed(seed) (upstream draws its RANSAC samples from it).
outputs per case i: case{i}_extrinsics (B,S,3,4) w2c, case{i}_intrinsics (B,S,3,3).
"""

import json
import sys

import numpy as np
import torch
from addict import Dict
from depth_anything_3.model.da3 import DepthAnything3Net

inputs, args = np.load(sys.argv[1]), json.loads(open(sys.argv[2]).read())
out = {}
for i, case in enumerate(args["cases"]):
    torch.manual_seed(case["seed"])
    output = Dict(ray=torch.from_numpy(inputs[case["ray"]]), ray_conf=torch.from_numpy(inputs[case["conf"]]))
    output = DepthAnything3Net._process_ray_pose_estimation(None, output, *case["hw"])
    out[f"case{i}_extrinsics"] = output.extrinsics.numpy()
    out[f"case{i}_intrinsics"] = output.intrinsics.numpy()
np.savez(sys.argv[3], **out)
