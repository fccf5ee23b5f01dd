"""Upstream benchmark dataset classes (depth_anything_3.bench.datasets) on a DA3-BENCH folder.

args: {"root": folder holding <dataset>/ folders, "scenes": {dataset: [scene, ...]}, "seed": int,
       "eval": {dataset: {scene: key of an (M, 3) predicted point cloud}}}
The classes read the fixed relative paths workspace/benchmark_dataset/<dataset>, so the working directory gets a
link of that name to ``root``. Outputs per dataset d and scene index j (prefix "d/j/"): files (paths relative to
the dataset folder), extrinsics, intrinsics, masks (N, H, W) as the class's GT-mask loader returns them (absent for
dtu64); for "eval" entries, the class's eval3d metrics (prefix "d/j/eval_") after seeding open3d's RNG with ``seed``.
"""

import json
import os
import sys
import tempfile

import cv2
import numpy as np
import open3d as o3d

inputs, args = np.load(sys.argv[1]), json.loads(open(sys.argv[2]).read())
os.makedirs("workspace", exist_ok=True)
os.symlink(os.path.abspath(args["root"]), "workspace/benchmark_dataset")

from depth_anything_3.bench.registries import MV_REGISTRY  # noqa: E402  (after the link: hiroom reads its list at import)


def masks(name, dataset, scene, data):
    if name == "eth3d":
        return [dataset._load_gt_mask(scene, os.path.basename(f), cv2.imread(f).shape[:2]) for f in data.image_files]
    if name in ("7scenes", "scannetpp"):
        return [dataset._load_gt_mask(f) for f in data.aux.gt_depth_files]
    if name == "hiroom":
        return [dataset._load_gt_mask(d, a) for d, a in zip(data.aux.gt_depth_files, data.aux.aliasing_mask_files)]
    if name == "dtu":
        return list(dataset.load_masks(data.aux.mask_files))
    return None


out = {}
for name, scenes in args["scenes"].items():
    dataset = MV_REGISTRY.get(name)()
    base = os.path.join("workspace/benchmark_dataset", name)
    for j, scene in enumerate(scenes):
        data = dataset.get_data(scene)
        prefix = f"{name}/{j}/"
        out[prefix + "files"] = np.array([os.path.relpath(f, base) for f in data.image_files])
        out[prefix + "extrinsics"], out[prefix + "intrinsics"] = data.extrinsics, data.intrinsics
        loaded = masks(name, dataset, scene, data)
        if loaded is not None:
            out[prefix + "masks"] = np.stack(loaded)
        key = args.get("eval", {}).get(name, {}).get(scene)
        if key is not None:
            with tempfile.TemporaryDirectory() as tmp:
                cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(inputs[key]))
                o3d.io.write_point_cloud(os.path.join(tmp, "pred.ply"), cloud)
                o3d.utility.random.seed(args["seed"])
                metrics = dataset.eval3d(scene, os.path.join(tmp, "pred.ply"))
            out.update({prefix + "eval_" + k: np.array(float(v)) for k, v in metrics.items()})
np.savez(sys.argv[3], **out)
