"""Upstream pose alignment (evo Umeyama, RANSAC, the API step, the Gaussian adapter's batch scale).

args: {"cases": [{"kind": "align", "ref": key, "est": key, "ransac": bool}
                 | {"kind": "api", "depth": key, "pred_ext": key, "pred_K": key, "ext": key, "K": key, "scale": bool}
                 | {"kind": "batch", "ref": key, "est": key}, ...]}
outputs per case i: align -> case{i}_s, _R, _t, _aligned (N,4,4 w2c); api -> case{i}_depth, _extrinsics,
_intrinsics (or case{i}_error when upstream raised); batch -> case{i}_scales (clamped to [1/3, 3] as the
Gaussian adapter does).
"""

import json
import sys

import numpy as np
import torch
from depth_anything_3.api import DepthAnything3
from depth_anything_3.specs import Prediction
from depth_anything_3.utils.pose_align import align_poses_umeyama, batch_align_poses_umeyama

inputs, args = np.load(sys.argv[1]), json.loads(open(sys.argv[2]).read())
out = {}
for i, case in enumerate(args["cases"]):
    if case["kind"] == "align":
        r, t, s, aligned = align_poses_umeyama(
            inputs[case["ref"]], inputs[case["est"]], ransac=case["ransac"], return_aligned=True, random_state=42
        )
        out.update({f"case{i}_s": np.array(s), f"case{i}_R": r, f"case{i}_t": t, f"case{i}_aligned": aligned})
    elif case["kind"] == "api":
        pred = Prediction(
            depth=inputs[case["depth"]].copy(),
            is_metric=0,
            extrinsics=inputs[case["pred_ext"]].copy(),
            intrinsics=inputs[case["pred_K"]].copy(),
        )
        try:
            pred = DepthAnything3._align_to_input_extrinsics_intrinsics(
                None, torch.from_numpy(inputs[case["ext"]]), torch.from_numpy(inputs[case["K"]]), pred, case["scale"]
            )
        except Exception as exc:  # evo's "Degenerate covariance rank" for 2 views (upstream issue #88)
            out[f"case{i}_error"] = np.array(str(exc))
            continue
        out.update(
            {
                f"case{i}_depth": pred.depth,
                f"case{i}_extrinsics": pred.extrinsics,
                f"case{i}_intrinsics": pred.intrinsics,
            }
        )
    else:
        _, _, scales = batch_align_poses_umeyama(
            torch.from_numpy(inputs[case["ref"]]), torch.from_numpy(inputs[case["est"]])
        )
        out[f"case{i}_scales"] = torch.clamp(scales, min=1 / 3.0, max=3.0).numpy()
np.savez(sys.argv[3], **out)
