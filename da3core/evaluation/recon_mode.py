"""The benchmark's reconstruction modes for one scene: align, mask and fuse a prediction, then score it against GT.

``recon_unposed`` fuses with the predicted cameras moved onto the GT trajectory by a RANSAC Umeyama Sim(3);
``recon_posed`` fuses with the GT cameras. Both scale the depth by that Sim(3)'s scale and zero it outside the
dataset's GT mask, as upstream's ``fuse3d`` does. DTU fuses differently: see :mod:`da3core.evaluation.dtu_recon`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from da3core.evaluation.datasets.base import BenchScene
from da3core.evaluation.fusion import sample_surface, tsdf_fuse
from da3core.evaluation.reconstruction import crop_to_box, reconstruction_metrics
from da3core.pose_align import align_poses_umeyama, apply_sim3_to_extrinsics

RANSAC_SEED = 42  # upstream fixes the RANSAC's random_state


@dataclass
class FusionInputs:
    """What the TSDF integrates: (N, H, W) depths, (N, 3, 3) intrinsics, (N, 4, 4) w2c, (N, H, W, 3) images."""

    depths: np.ndarray
    intrinsics: np.ndarray
    extrinsics: np.ndarray
    images: np.ndarray


def _fusion_settings(scene: BenchScene):
    if scene.reader.fusion is None:
        raise ValueError(
            f"{scene.dataset} has no TSDF reconstruction mode (dtu: use dtu_reconstruct/dtu_evaluate; "
            "dtu64 is pose-only)"
        )
    return scene.reader.fusion


def fusion_inputs(
    scene: BenchScene, pred_depth: np.ndarray, pred_intrinsics: np.ndarray, pred_extrinsics: np.ndarray, posed: bool
) -> FusionInputs:
    """The depth maps and cameras the benchmark fuses for ``scene`` from a prediction at the model's resolution."""
    _fusion_settings(scene)
    pred_depth = np.asarray(pred_depth, dtype=np.float32)
    if not len(pred_depth) == len(pred_intrinsics) == len(pred_extrinsics) == len(scene):
        raise ValueError(
            f"{scene.dataset}/{scene.name} has {len(scene)} frames but the prediction has "
            f"{len(pred_depth)} depths, {len(pred_intrinsics)} intrinsics, {len(pred_extrinsics)} extrinsics"
        )
    scale, rot, trans = align_poses_umeyama(scene.extrinsics, pred_extrinsics, ransac=True, random_state=RANSAC_SEED)
    model_h, model_w = pred_depth.shape[1:]
    depths, intrinsics, images = [], [], []
    for i in range(len(scene)):
        image, depth = scene.reader.fusion_view(scene, i, pred_depth[i])
        mask = scene.valid_mask(i)
        keep = np.isfinite(depth) & (mask if mask is not None else depth > 0)
        depths.append(np.where(keep, depth, 0).astype(np.float32) * np.float32(scale))  # float32 product, as upstream
        height, width = depth.shape
        if posed:
            intrinsics.append(scene.reader.posed_intrinsics(scene, i, (height, width)))
        else:
            K = np.array(pred_intrinsics[i])  # rescaled in the prediction's dtype, as upstream
            K[0] *= width / model_w
            K[1] *= height / model_h
            intrinsics.append(K)
        images.append(image)
    extrinsics = scene.extrinsics if posed else apply_sim3_to_extrinsics(pred_extrinsics, scale, rot, trans)
    return FusionInputs(
        np.stack(depths), np.stack(intrinsics), np.asarray(extrinsics, dtype=np.float64), np.stack(images)
    )


def reconstruct(
    scene: BenchScene,
    pred_depth: np.ndarray,
    pred_intrinsics: np.ndarray,
    pred_extrinsics: np.ndarray,
    posed: bool,
    seed: int = 0,
) -> np.ndarray:
    """The benchmark's predicted point set for ``scene``: prepared inputs, TSDF fusion, uniform surface sampling."""
    settings = _fusion_settings(scene)
    inputs = fusion_inputs(scene, pred_depth, pred_intrinsics, pred_extrinsics, posed)
    mesh = tsdf_fuse(
        inputs.depths,
        inputs.intrinsics,
        inputs.extrinsics,
        settings.voxel_length,
        settings.sdf_trunc,
        settings.max_depth,
        inputs.images,
    )
    return sample_surface(mesh, settings.n_points, seed)


def evaluate_reconstruction(scene: BenchScene, points: np.ndarray, seed: int = 0) -> dict[str, float]:
    """acc/comp/overall/precision/recall/F-score of ``points`` against the scene's GT at the dataset's settings."""
    settings = _fusion_settings(scene)
    gt = scene.gt_points(seed)
    if settings.crop_margin is not None:
        points = crop_to_box(points, gt, settings.crop_margin)
    return reconstruction_metrics(points, gt, settings.eval_threshold, settings.eval_voxel)
