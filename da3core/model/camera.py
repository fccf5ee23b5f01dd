"""Camera tokens from known poses (CameraEnc), poses from camera tokens (CameraDec), and the 9-d pose encoding
``[t_c2w (3), quaternion_c2w xyzw (4), fov_h, fov_w]`` that links them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from da3core.model.vit import Block, Mlp


def affine_inverse(A: Tensor) -> Tensor:
    """Invert rigid transforms (..., 3|4, 4), keeping the shape."""
    rot_t = A[..., :3, :3].transpose(-1, -2)
    inv = torch.cat([rot_t, -rot_t @ A[..., :3, 3:]], dim=-1)
    return torch.cat([inv, A[..., 3:, :]], dim=-2)


def quat_to_mat(q: Tensor) -> Tensor:
    """Rotation matrices (..., 3, 3) from scalar-last quaternions (..., 4), which need not be unit."""
    i, j, k, r = q.unbind(-1)
    two_s = 2.0 / (q * q).sum(-1)
    m = torch.stack(
        [
            1 - two_s * (j * j + k * k),
            two_s * (i * j - k * r),
            two_s * (i * k + j * r),
            two_s * (i * j + k * r),
            1 - two_s * (i * i + k * k),
            two_s * (j * k - i * r),
            two_s * (i * k - j * r),
            two_s * (j * k + i * r),
            1 - two_s * (i * i + j * j),
        ],
        -1,
    )
    return m.reshape(q.shape[:-1] + (3, 3))


def mat_to_quat(m: Tensor) -> Tensor:
    """Scalar-last unit quaternions (..., 4) with a non-negative scalar part from rotation matrices (..., 3, 3)."""
    m00, m01, m02, m10, m11, m12, m20, m21, m22 = m.reshape(m.shape[:-2] + (9,)).unbind(-1)
    q_abs = torch.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1)
    q_abs = torch.where(q_abs > 0, q_abs.clamp(min=0).sqrt(), torch.zeros_like(q_abs))
    # Four candidate (r, i, j, k) quaternions; the one with the largest |component| is best conditioned.
    cands = torch.stack(
        [
            torch.stack([q_abs[..., 0] ** 2, m21 - m12, m02 - m20, m10 - m01], -1),
            torch.stack([m21 - m12, q_abs[..., 1] ** 2, m10 + m01, m02 + m20], -1),
            torch.stack([m02 - m20, m10 + m01, q_abs[..., 2] ** 2, m12 + m21], -1),
            torch.stack([m10 - m01, m20 + m02, m21 + m12, q_abs[..., 3] ** 2], -1),
        ],
        -2,
    )
    cands = cands / (2.0 * q_abs[..., None].clamp(min=0.1))
    best = F.one_hot(q_abs.argmax(-1), 4) > 0.5
    rijk = cands[best].reshape(m.shape[:-2] + (4,))
    xyzw = rijk[..., [1, 2, 3, 0]]
    return torch.where(xyzw[..., 3:4] < 0, -xyzw, xyzw)


def encode_pose(c2w: Tensor, intrinsics: Tensor, image_hw: tuple[int, int]) -> Tensor:
    """(B, S, 9) pose encoding of camera-to-world poses and pixel intrinsics."""
    H, W = image_hw
    fov_h = 2 * torch.atan((H / 2) / intrinsics[..., 1, 1])
    fov_w = 2 * torch.atan((W / 2) / intrinsics[..., 0, 0])
    return torch.cat([c2w[..., :3, 3], mat_to_quat(c2w[..., :3, :3]), fov_h[..., None], fov_w[..., None]], -1).float()


def decode_pose(enc: Tensor, image_hw: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """(c2w (B, S, 3, 4), intrinsics (B, S, 3, 3)) from a pose encoding; principal point at the image centre."""
    H, W = image_hw
    c2w = torch.cat([quat_to_mat(enc[..., 3:7]), enc[..., :3, None]], dim=-1)
    K = torch.zeros(enc.shape[:-1] + (3, 3), device=enc.device)
    K[..., 0, 0] = (W / 2.0) / torch.clamp(torch.tan(enc[..., 8] / 2.0), 1e-6)
    K[..., 1, 1] = (H / 2.0) / torch.clamp(torch.tan(enc[..., 7] / 2.0), 1e-6)
    K[..., 0, 2], K[..., 1, 2], K[..., 2, 2] = W / 2, H / 2, 1.0
    return c2w, K


class CameraEnc(nn.Module):
    """Known cameras -> one token per view: pose encoding -> MLP -> 4 transformer blocks across views."""

    def __init__(self, dim_out: int, trunk_depth: int = 4, num_heads: int = 16):
        super().__init__()
        self.pose_branch = Mlp(9, dim_out // 2, out_dim=dim_out)
        self.token_norm = nn.LayerNorm(dim_out)
        self.trunk = nn.Sequential(
            *(Block(dim_out, num_heads, init_values=0.01, norm_eps=1e-5) for _ in range(trunk_depth))
        )
        self.trunk_norm = nn.LayerNorm(dim_out)

    def forward(self, extrinsics: Tensor, intrinsics: Tensor, image_hw: tuple[int, int]) -> Tensor:
        """w2c (B, S, 4, 4) and pixel intrinsics (B, S, 3, 3) -> camera tokens (B, S, C)."""
        tokens = self.token_norm(self.pose_branch(encode_pose(affine_inverse(extrinsics), intrinsics, image_hw)))
        return self.trunk_norm(self.trunk(tokens))


class CameraDec(nn.Module):
    """Camera token (2C) -> pose encoding (translation, quaternion, ReLU'd fields of view)."""

    def __init__(self, dim_in: int):
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(dim_in, dim_in), nn.ReLU(), nn.Linear(dim_in, dim_in), nn.ReLU())
        self.fc_t = nn.Linear(dim_in, 3)
        self.fc_qvec = nn.Linear(dim_in, 4)
        self.fc_fov = nn.Sequential(nn.Linear(dim_in, 2), nn.ReLU())

    def forward(self, token: Tensor) -> Tensor:
        """(B, S, 2C) -> (B, S, 9)."""
        feat = self.backbone(token.float())
        return torch.cat([self.fc_t(feat), self.fc_qvec(feat), self.fc_fov(feat)], dim=-1)
