"""From raw per-pixel Gaussian parameters (GSDPT) to world-space 3D Gaussians, one per pixel.

Means sit on each pixel's (offset) ray at the predicted depth (used as ray length, as upstream does),
scales follow the pixel footprint, rotations and SH colour coefficients are turned from camera to
world frame. The quaternion bookkeeping replicates upstream literally (its "xyzw"/"wxyz" labels do
not match what the numbers are), so exported splats are identical to the reference's.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from da3core.model.camera import affine_inverse, mat_to_quat, quat_to_mat
from da3core.pose_align import batch_pose_scale
from da3core.prediction import Gaussians

SH_DEGREE = 2
SCALE_MIN, SCALE_MAX = 1e-5, 30.0


def _sh_mask(device: torch.device) -> Tensor:
    mask = torch.ones((SH_DEGREE + 1) ** 2, device=device)
    for degree in range(1, SH_DEGREE + 1):
        mask[degree**2 : (degree + 1) ** 2] = 0.1 * 0.25**degree
    return mask


def rotate_sh(sh: Tensor, rotations: Tensor) -> Tensor:
    """Rotate real SH coefficients (..., n) by rotation matrices (..., 3, 3) (e3nn Wigner-D, y-up basis)."""
    from e3nn.o3 import matrix_to_angles, wigner_D

    P = torch.tensor([[0, 0, 1], [1, 0, 0], [0, 1, 0]], dtype=torch.float32, device=rotations.device)
    r = torch.linalg.inv(P) @ rotations.float() @ P
    u, _, vh = torch.linalg.svd(r)  # project onto SO(3) (the reference's strict projection)
    fix = torch.where((torch.det(u) * torch.det(vh.mH)) < 0, -1.0, 1.0)
    r = u @ torch.diag_embed(torch.stack([torch.ones_like(fix), torch.ones_like(fix), fix], -1)) @ vh
    r = r * torch.pow(torch.det(r), -1 / 3)[..., None, None]
    alpha, beta, gamma = matrix_to_angles(r)
    out = []
    for degree in range(int(sh.shape[-1] ** 0.5)):
        with torch.device(sh.device):
            D = wigner_D(degree, alpha, -beta, gamma).to(sh.dtype)
        out.append(torch.einsum("...ij,...j->...i", D, sh[..., degree**2 : (degree + 1) ** 2]))
    return torch.cat(out, dim=-1)


def gaussians_from_raw(
    raw: Tensor,
    opacity: Tensor,
    depth: Tensor,
    extrinsics: Tensor,
    intrinsics: Tensor,
    input_extrinsics: Tensor | None = None,
) -> Gaussians:
    """Raw GSDPT output (B, S, H, W, 37) + opacity, depth (B, S, H, W), predicted w2c (B, S, 4, 4), K -> Gaussians.

    When the cameras were given (pose conditioning), the predicted poses are first brought to the
    input's scale (Umeyama scale, clamped to [1/3, 3]) so the splats match the input frame.
    """
    b, s, H, W, _ = raw.shape
    dev = raw.device
    c2w = affine_inverse(extrinsics)
    k_norm = intrinsics.clone()
    k_norm[..., 0, :] /= W
    k_norm[..., 1, :] /= H
    ray_len = depth + raw[..., 36]
    if input_extrinsics is not None and not torch.equal(extrinsics, input_extrinsics):
        scales = batch_pose_scale(input_extrinsics, extrinsics).to(raw.dtype)
        c2w = c2w.clone()
        c2w[:, :, :3, 3] *= scales[:, None, None]
        ray_len = ray_len * scales[:, None, None, None]
    ys, xs = torch.meshgrid(torch.arange(H, device=dev), torch.arange(W, device=dev), indexing="ij")
    pixel = 1 / torch.tensor((W, H), dtype=raw.dtype, device=dev)
    xy = torch.stack([(xs + 0.5) / W, (ys + 0.5) / H], -1) + raw[..., :2] * pixel
    dirs = torch.einsum(
        "bsij,bshwj->bshwi", k_norm.float().inverse().to(k_norm), torch.cat([xy, torch.ones_like(xy[..., :1])], -1)
    )
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    dirs = torch.einsum("bsij,bshwj->bshwi", c2w[..., :3, :3], dirs)
    means = c2w[:, :, None, None, :3, 3] + dirs * ray_len[..., None]

    footprint = 0.1 * torch.einsum("bsij,j->bsi", k_norm[..., :2, :2].float().inverse().to(k_norm), pixel).sum(-1)
    scale = SCALE_MIN + (SCALE_MAX - SCALE_MIN) * raw[..., 2:5].sigmoid()
    scale = scale * ray_len[..., None] * footprint[..., None, None, None]

    q = raw[..., 5:9]
    q = q / (q.norm(dim=-1, keepdim=True) + 1e-8)
    q = torch.cat([q[..., 3:4], q[..., 0:3]], dim=-1)  # upstream relabels "xyzw" -> "wxyz" ...
    rot_world = c2w[:, :, None, None, :3, :3] @ quat_to_mat(q)  # ... but quat_to_mat reads scalar-last
    quats = mat_to_quat(rot_world)

    sh = raw[..., 9:36].unflatten(-1, (3, 9)) * _sh_mask(dev)
    sh = rotate_sh(sh, c2w[:, :, None, None, None, :3, :3])

    def flat(t: Tensor) -> np.ndarray:
        return t.reshape(b, s * H * W, *t.shape[4:])[0].float().cpu().numpy()

    return Gaussians(
        means=flat(means), scales=flat(scale), rotations=flat(quats), harmonics=flat(sh), opacities=flat(opacity)
    )
