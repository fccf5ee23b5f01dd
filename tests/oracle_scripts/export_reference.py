"""Run the reference exporters (glb, npz, mini_npz, depth_vis, gs_ply, colmap) on given prediction arrays.

inputs: depth, conf, extrinsics, intrinsics, images [, source_hw (N, 2), gs_means, gs_scales, gs_rotations,
gs_harmonics, gs_opacities]; args: {"formats": [...], "glb": {...}, "colmap": {...}, "gs_ply": {...}}.
Outputs are the files read back in the oracle venv, prefixed by format.
"""

import json
import os
import sys
import tempfile
import threading

import numpy as np

inputs, args = dict(np.load(sys.argv[1])), json.loads(open(sys.argv[2]).read())

import torch  # noqa: E402
import trimesh  # noqa: E402
from depth_anything_3.specs import Gaussians, Prediction  # noqa: E402
from depth_anything_3.utils.export import export  # noqa: E402
from depth_anything_3.utils.visualize import visualize_depth  # noqa: E402
from PIL import Image  # noqa: E402

pred = Prediction(
    depth=inputs["depth"],
    is_metric=0,
    conf=inputs["conf"],
    extrinsics=inputs["extrinsics"],
    intrinsics=inputs["intrinsics"],
    processed_images=inputs["images"],
)
if "gs_means" in inputs:
    t = lambda k: torch.from_numpy(inputs[k])[None]  # noqa: E731
    pred.gaussians = Gaussians(t("gs_means"), t("gs_scales"), t("gs_rotations"), t("gs_harmonics"), t("gs_opacities"))
out = {}
with tempfile.TemporaryDirectory() as tmp:
    kwargs = {k: v for k, v in args.items() if k != "formats"}
    if "colmap" in args["formats"]:
        paths = []
        for i, (h, w) in enumerate(inputs["source_hw"]):
            paths.append(os.path.join(tmp, f"img_{i:03d}.png"))
            Image.new("RGB", (int(w), int(h))).save(paths[-1])
        kwargs.setdefault("colmap", {})["image_paths"] = paths
        os.makedirs(os.path.join(tmp, "export"), exist_ok=True)  # upstream's colmap export needs it
    export(pred, "-".join(args["formats"]), os.path.join(tmp, "export"), **kwargs)
    for thread in threading.enumerate():  # npz/mini_npz are written by detached threads
        if thread is not threading.current_thread():
            thread.join()
    root = os.path.join(tmp, "export")
    for name in ("npz", "mini_npz"):
        if name in args["formats"]:
            with np.load(os.path.join(root, "exports", name, "results.npz")) as f:
                out.update({f"{name}_{k}": f[k] for k in f.files})
    if "glb" in args["formats"]:
        scene = trimesh.load(os.path.join(root, "scene.glb"))
        clouds = [g for g in scene.geometry.values() if isinstance(g, trimesh.PointCloud)]
        out["glb_points"] = clouds[0].vertices.astype(np.float32)
        out["glb_colors"] = clouds[0].colors[:, :3].astype(np.uint8)
        out["glb_n_paths"] = np.array(sum(isinstance(g, trimesh.path.Path3D) for g in scene.geometry.values()))
        out["glb_scene_jpg"] = np.frombuffer(open(os.path.join(root, "scene.jpg"), "rb").read(), np.uint8)
    if "depth_vis" in args["formats"] or "glb" in args["formats"]:
        for i in range(len(pred.depth)):
            out[f"depth_vis_colors_{i}"] = visualize_depth(pred.depth[i])
            out[f"depth_vis_jpg_{i}"] = np.frombuffer(
                open(os.path.join(root, f"depth_vis/{i:04d}.jpg"), "rb").read(), np.uint8
            )
    if "gs_ply" in args["formats"]:
        from plyfile import PlyData

        vertex = PlyData.read(os.path.join(root, "gs_ply", "0000.ply"))["vertex"]
        out["gs_ply_names"] = np.array(vertex.data.dtype.names)
        out["gs_ply_data"] = np.stack([vertex[n] for n in vertex.data.dtype.names], axis=1)
    if "colmap" in args["formats"]:
        import pycolmap

        rec = pycolmap.Reconstruction(root)
        ids = sorted(rec.images)
        out["colmap_K"] = np.stack([rec.cameras[rec.images[i].camera_id].calibration_matrix() for i in ids])
        out["colmap_size"] = np.array(
            [[rec.cameras[rec.images[i].camera_id].height, rec.cameras[rec.images[i].camera_id].width] for i in ids]
        )
        out["colmap_w2c"] = np.stack([rec.images[i].cam_from_world().matrix() for i in ids])
        pids = sorted(rec.points3D)
        out["colmap_xyz"] = np.stack([rec.points3D[p].xyz for p in pids])
        out["colmap_rgb"] = np.stack([rec.points3D[p].color for p in pids])
np.savez(sys.argv[3], **out)
