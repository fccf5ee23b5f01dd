"""DTU's reconstruction mode (MVSNet protocol, millimetres): depth back-projection or multi-view consistency fusion,
and the evaluation restricted by the observation mask and the ground plane, as upstream's DTU benchmark does them.

recon_unposed back-projects every masked depth pixel; recon_posed keeps a pixel's point when at least 4 views agree
within 0.2 mm (averaging their points). The evaluation thins the cloud to 0.2 mm, keeps what the ObsMask observes,
and averages nearest distances under 20 mm both ways.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.io import loadmat
from scipy.spatial import cKDTree

from da3core.evaluation.datasets.base import BenchScene, GroundTruthMissingError
from da3core.evaluation.reconstruction import nearest_distances
from da3core.pose_align import align_poses_umeyama, apply_sim3_to_extrinsics

CONSISTENCY_MM = 0.2  # a source view agrees with a reference pixel when its warped point is this close
MIN_CONSISTENT_VIEWS = 4
MAX_POINTS = 4_000_000
SOURCE_BATCH = 20
THIN_MM = 0.2  # minimum distance between evaluated points
OBS_PATCH = 60  # margin around the ObsMask bounding box
MAX_DIST_MM = 20  # nearest distances beyond this are outliers
SEED = 42  # upstream's RANSAC, shuffle and cap


def _projections(intrinsics: np.ndarray, extrinsics: np.ndarray) -> torch.Tensor:
    """(N, 4, 4) float32 [[K R, K t], [0, 0, 0, 1]]."""
    proj = np.tile(np.eye(4, dtype=np.float32), (len(intrinsics), 1, 1))
    for i, (K, ext) in enumerate(zip(intrinsics, extrinsics)):
        proj[i, :3] = np.dot(K, np.asarray(ext)[:3])
    return torch.from_numpy(proj)


def _dtu_mask(scene: BenchScene, index: int) -> np.ndarray:
    mask = scene.valid_mask(index)
    if mask is None:
        raise GroundTruthMissingError(f"{scene.name}: DTU frame {index} has no object mask")
    return mask


def dtu_fusion_inputs(
    scene: BenchScene, pred_depth: np.ndarray, pred_intrinsics: np.ndarray, pred_extrinsics: np.ndarray, posed: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """(depths (N, 1, H, W), projections (N, 4, 4)) at the mask resolution, scaled to the GT by a RANSAC Sim(3)."""
    scale, rot, trans = align_poses_umeyama(scene.extrinsics, pred_extrinsics, ransac=True, random_state=SEED)
    masks = np.stack([_dtu_mask(scene, i) for i in range(len(scene))])
    depths = np.asarray(pred_depth, dtype=np.float32)
    resize = depths.shape[-2:] != masks.shape[-2:]
    if posed:
        intrinsics, extrinsics = scene.intrinsics, scene.extrinsics
    else:
        depths = depths * np.float32(scale)
        intrinsics = np.array(pred_intrinsics)
        intrinsics[:, 0] *= masks.shape[-1] / depths.shape[-1]
        intrinsics[:, 1] *= masks.shape[-2] / depths.shape[-2]
        extrinsics = apply_sim3_to_extrinsics(pred_extrinsics, scale, rot, trans)
    if resize:  # torch's legacy nearest, as upstream
        depths = F.interpolate(torch.from_numpy(depths)[None], size=masks.shape[-2:], mode="nearest")[0].numpy()
    if posed or resize:  # upstream masks the unposed depths only when it resizes them
        depths = depths.copy()
        depths[~masks] = 0.0
    if posed:
        depths = depths * np.float32(scale)
    return torch.from_numpy(np.ascontiguousarray(depths, dtype=np.float32))[:, None], _projections(
        intrinsics, extrinsics
    )


def _pixel_grid(height: int, width: int, batch: int) -> torch.Tensor:
    y, x = torch.meshgrid(
        torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32), indexing="ij"
    )
    x, y = x.reshape(-1), y.reshape(-1)
    return torch.stack((x, y, torch.ones_like(x)))[None].repeat(batch, 1, 1)


def backproject(depth: torch.Tensor, proj: torch.Tensor) -> torch.Tensor:
    """World points (B, 3, H, W) of (B, 1, H, W) depths through (B, 4, 4) projections."""
    batch, _, height, width = depth.shape
    inv = torch.inverse(proj)
    points = inv[:, :3, :3] @ _pixel_grid(height, width, batch) * depth.view(batch, 1, -1) + inv[:, :3, 3:4].view(
        batch, 3, 1
    )
    return points.view(batch, 3, height, width)


def _warp_to_reference(
    src_points: torch.Tensor, src_proj: torch.Tensor, ref_proj: torch.Tensor, ref_depth: torch.Tensor
) -> torch.Tensor:
    """Sample each source view's points at the pixels the reference depth projects to (bilinear, zeros outside)."""
    batch, channels, height, width = src_points.shape
    rel = src_proj @ torch.inverse(ref_proj)
    cam = (rel[:, :3, :3] @ _pixel_grid(height, width, batch)).unsqueeze(2) * ref_depth.view(-1, 1, 1, height * width)
    cam = cam + rel[:, :3, 3:4].view(batch, 3, 1, 1)
    xy = cam[:, :2] / cam[:, 2:3]
    grid = torch.stack((xy[:, 0] / ((width - 1) / 2) - 1, xy[:, 1] / ((height - 1) / 2) - 1), dim=3)
    warped = F.grid_sample(
        src_points, grid.view(batch, height, width, 2), mode="bilinear", padding_mode="zeros", align_corners=True
    )
    return warped.view(batch, channels, height, width)


def consistent_points(depths: torch.Tensor, proj: torch.Tensor, index: int) -> np.ndarray:
    """The reference view's pixels that at least 4 views (itself included) place within 0.2 mm, as averaged points."""
    _, _, height, width = depths.shape
    total = torch.zeros((3, height, width))
    count = torch.zeros((1, height, width))
    ref_depth, ref_proj = depths[index : index + 1], proj[index : index + 1]
    ref_points = backproject(ref_depth, ref_proj)
    for start in range(0, len(depths), SOURCE_BATCH):
        src_depth, src_proj = depths[start : start + SOURCE_BATCH], proj[start : start + SOURCE_BATCH]
        warped = _warp_to_reference(backproject(src_depth, src_proj), src_proj, ref_proj, ref_depth)
        gap = ref_points - warped
        agree = (torch.sqrt(gap[:, 0] ** 2 + gap[:, 1] ** 2 + gap[:, 2] ** 2).unsqueeze(1) < CONSISTENCY_MM).float()
        total += (warped * agree).sum(0)
        count += agree.sum(0)
    keep = (count >= MIN_CONSISTENT_VIEWS).squeeze(0).numpy().reshape(-1)
    return torch.div(total, count).permute(1, 2, 0).numpy().reshape(-1, 3)[keep]


def dtu_reconstruct(
    scene: BenchScene, pred_depth: np.ndarray, pred_intrinsics: np.ndarray, pred_extrinsics: np.ndarray, posed: bool
) -> np.ndarray:
    """DTU's fused point cloud (mm), at most 4M points."""
    depths, proj = dtu_fusion_inputs(scene, pred_depth, pred_intrinsics, pred_extrinsics, posed)
    clouds = []
    for i in range(len(depths)):
        if posed:
            clouds.append(consistent_points(depths, proj, i))
        else:
            cloud = backproject(depths[i : i + 1], proj[i : i + 1])[:, :, (depths[i : i + 1] > 0.001).squeeze()]
            clouds.append(cloud.squeeze(0).permute(1, 0).numpy())
    points = np.concatenate(clouds).astype(np.float64)
    if len(points) > MAX_POINTS:
        points = points[np.random.default_rng(SEED).choice(len(points), MAX_POINTS, replace=False)]
    return points


def thin(points: np.ndarray, radius: float) -> np.ndarray:
    """Greedy thinning in the given order: a kept point removes every later point within ``radius``."""
    neighbours = cKDTree(points).query_ball_point(points, r=radius)
    keep = np.ones(len(points), dtype=bool)
    for i, near in enumerate(neighbours):
        if keep[i]:
            keep[near] = False
            keep[i] = True
    return points[keep]


def dtu_evaluate(scene: BenchScene, points: np.ndarray) -> dict[str, float]:
    """acc (reconstruction -> scan), comp (scan above the ground plane -> reconstruction), overall; mm.

    Upstream's ``eval3d`` reports the same two numbers with the names swapped (its "comp" is this acc).
    """
    for path in (scene.aux["obs_mask_file"], scene.aux["plane_file"]):
        if not scene.reader.store.fs.exists(path):
            raise GroundTruthMissingError(f"DTU evaluation mask missing: {path}")
    data = np.array(points, dtype=np.float64)
    np.random.default_rng(SEED).shuffle(data, axis=0)
    data = thin(data, THIN_MM)
    with scene.reader.store.fs.open(scene.aux["obs_mask_file"]) as f:
        obs = loadmat(f)
    obs_mask, bbox, res = obs["ObsMask"], obs["BB"].astype(np.float32), obs["Res"]
    inside = ((data >= bbox[:1] - OBS_PATCH) & (data < bbox[1:] + OBS_PATCH * 2)).all(-1)
    data_in = data[inside]
    cells = np.around((data_in - bbox[:1]) / res).astype(np.int32)
    on_grid = ((cells >= 0) & (cells < np.array(obs_mask.shape)[None])).all(-1)
    observed = obs_mask[cells[on_grid, 0], cells[on_grid, 1], cells[on_grid, 2]].astype(bool)
    data_observed = data_in[on_grid][observed]
    scan = scene.gt_points()
    with scene.reader.store.fs.open(scene.aux["plane_file"]) as f:
        plane = loadmat(f)["P"].reshape(1, 4)
    above = (plane * np.concatenate([scan, np.ones_like(scan[:, :1])], -1)).sum(-1) > 0
    to_scan = nearest_distances(scan, data_observed)
    to_data = nearest_distances(data_in, scan[above])
    acc, comp = float(to_scan[to_scan < MAX_DIST_MM].mean()), float(to_data[to_data < MAX_DIST_MM].mean())
    return {"acc": acc, "comp": comp, "overall": (acc + comp) / 2}
