"""Reference align_poses_umeyama on pairs of w2c pose sets: inputs ref_i, est_i; args: n, ransac."""

import json
import sys

import numpy as np

from depth_anything_3.utils.pose_align import align_poses_umeyama

inputs, args = np.load(sys.argv[1]), json.loads(open(sys.argv[2]).read())
out = {}
for i in range(args["n"]):
    r, t, s = align_poses_umeyama(inputs[f"ref_{i}"], inputs[f"est_{i}"], ransac=args["ransac"], random_state=42)
    out[f"R_{i}"], out[f"t_{i}"], out[f"s_{i}"] = r, np.asarray(t).reshape(3), np.asarray(s)
np.savez(sys.argv[3], **out)
