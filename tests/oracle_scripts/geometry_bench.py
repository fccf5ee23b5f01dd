"""Time upstream's preprocessing and ray-pose conversion (min of `repeats` after one warm-up).

args: {"image_paths": [...], "process_res": int, "ray_key": key, "conf_key": key, "ray_hw": [H, W], "repeats": int}
outputs: preprocess_s, ray_pose_s (seconds, min over repeats).
"""

import json
import sys
import time

import numpy as np
import torch
from addict import Dict
from depth_anything_3.model.da3 import DepthAnything3Net
from depth_anything_3.utils.io.input_processor import InputProcessor

inputs, args = np.load(sys.argv[1]), json.loads(open(sys.argv[2]).read())
torch.set_num_threads(int(args.get("threads", 2)))


def best_of(fn):
    fn()
    times = []
    for _ in range(args["repeats"]):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


ray, conf = torch.from_numpy(inputs[args["ray_key"]]), torch.from_numpy(inputs[args["conf_key"]])
out = {
    "preprocess_s": best_of(lambda: InputProcessor()(image=list(args["image_paths"]), process_res=args["process_res"])),
    "ray_pose_s": best_of(
        lambda: DepthAnything3Net._process_ray_pose_estimation(
            None, Dict(ray=ray.clone(), ray_conf=conf.clone()), *args["ray_hw"]
        )
    ),
}
np.savez(sys.argv[3], **{k: np.array(v) for k, v in out.items()})
