"""Reference InputProcessor on several batches. args: cases [{name, n, process_res, method}];
inputs "<name>/img_i" uint8 and optional "<name>/K" (N,3,3); outputs "<name>/{images,processed,intrinsics}"."""

import json
import sys

import numpy as np
from depth_anything_3.utils.io.input_processor import InputProcessor

inputs, args = np.load(sys.argv[1]), json.loads(open(sys.argv[2]).read())
mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
out = {}
for case in args["cases"]:
    name = case["name"]
    images = [inputs[f"{name}/img_{i}"] for i in range(case["n"])]
    K = inputs[f"{name}/K"] if f"{name}/K" in inputs.files else None
    tensor, _, ixts = InputProcessor()(images, None, K, case["process_res"], case["method"], num_workers=1)
    out[f"{name}/images"] = tensor.numpy()
    out[f"{name}/processed"] = (np.clip(tensor.permute(0, 2, 3, 1).numpy() * std + mean, 0, 1) * 255).astype(np.uint8)
    if ixts is not None:
        out[f"{name}/intrinsics"] = ixts.numpy()
np.savez(sys.argv[3], **out)
