"""Camera geometry in numpy, OpenCV conventions throughout.

Conventions (shared by the whole project):
- camera frame: +x right, +y down, +z forward (OpenCV);
- extrinsics are world-to-camera (``cam_from_world``), shape (3, 4) or (4, 4);
- intrinsics are pixel-unit 3x3 matrices; pixel (col, row) samples image point (u, v) = (col, row),
  i.e. pixel centres sit on integer coordinates (as in DA3's back-projection);
- depth is the camera-frame z of the surface point (not the ray length).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike


def as_homogeneous(ext: np.ndarray) -> np.ndarray:
    """Pad (..., 3, 4) rigid transforms to (..., 4, 4); (..., 4, 4) input is returned as a copy."""
    ext = np.asarray(ext)
    if ext.shape[-2:] == (4, 4):
        return ext.copy()
    if ext.shape[-2:] != (3, 4):
        raise ValueError(f"expected (..., 3, 4) or (..., 4, 4) transforms, got {ext.shape}")
    out = np.zeros(ext.shape[:-2] + (4, 4), dtype=ext.dtype)
    out[..., :3, :] = ext
    out[..., 3, 3] = 1
    return out


def affine_inverse(ext: np.ndarray) -> np.ndarray:
    """Invert rigid transforms [R|t] -> [R^T | -R^T t], keeping the input's (3, 4) or (4, 4) shape."""
    ext = np.asarray(ext)
    rot, trans = ext[..., :3, :3], ext[..., :3, 3:]
    rot_t = np.swapaxes(rot, -1, -2)
    inv = np.concatenate([rot_t, -rot_t @ trans], axis=-1)
    return as_homogeneous(inv) if ext.shape[-2:] == (4, 4) else inv


def look_at(eye: np.ndarray, target: np.ndarray, up: ArrayLike = (0.0, 0.0, 1.0)) -> np.ndarray:
    """World-to-camera (3, 4) extrinsics of an OpenCV camera at ``eye`` looking at ``target``."""
    eye, target, up = (np.asarray(v, dtype=np.float64) for v in (eye, target, up))
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, up)
    if np.linalg.norm(x) < 1e-9:
        raise ValueError("look_at: viewing direction is parallel to the up vector")
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    rot = np.stack([x, y, z])  # rows: camera axes in world coordinates
    return np.concatenate([rot, (-rot @ eye)[:, None]], axis=1)


def intrinsics_from_fov(width: int, height: int, fov_x_deg: float) -> np.ndarray:
    """Pinhole K with square pixels, horizontal field of view ``fov_x_deg`` and principal point (W/2, H/2)."""
    fx = (width / 2.0) / np.tan(np.deg2rad(fov_x_deg) / 2.0)
    return np.array([[fx, 0.0, width / 2.0], [0.0, fx, height / 2.0], [0.0, 0.0, 1.0]])


def pixel_rays(intrinsics: np.ndarray, height: int, width: int) -> np.ndarray:
    """Camera-frame directions with z = 1 for every pixel, shape (H, W, 3)."""
    v, u = np.meshgrid(np.arange(height, dtype=np.float64), np.arange(width, dtype=np.float64), indexing="ij")
    pix = np.stack([u, v, np.ones_like(u)], axis=-1)
    return pix @ np.linalg.inv(np.asarray(intrinsics, dtype=np.float64)).T


def depth_to_world_points(depth: np.ndarray, intrinsics: np.ndarray, extrinsics: np.ndarray) -> np.ndarray:
    """Back-project an (H, W) z-depth map to world points (H, W, 3) through w2c ``extrinsics``."""
    cam = pixel_rays(intrinsics, *depth.shape) * depth[..., None]
    c2w = affine_inverse(np.asarray(extrinsics, dtype=np.float64)[:3])
    return cam @ c2w[:3, :3].T + c2w[:3, 3]


def project_points(points: np.ndarray, intrinsics: np.ndarray, extrinsics: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project world points (..., 3) into pixels; returns (uv (..., 2), camera z (...))."""
    ext = np.asarray(extrinsics, dtype=np.float64)[:3]
    cam = points @ ext[:3, :3].T + ext[:3, 3]
    z = cam[..., 2]
    pix = cam @ np.asarray(intrinsics, dtype=np.float64).T
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = pix[..., :2] / pix[..., 2:3]
    return uv, z


# COLMAP and nerfstudio put the centre of the top-left pixel at (0.5, 0.5); this project, like DA3, at (0, 0).
COLMAP_PIXEL_OFFSET = 0.5


def intrinsics_to_colmap(intrinsics: np.ndarray) -> np.ndarray:
    """Shift the principal point of (..., 3, 3) K from this project's pixel convention to COLMAP's and nerfstudio's."""
    K = np.array(intrinsics, dtype=np.float64, copy=True)
    K[..., 0, 2] += COLMAP_PIXEL_OFFSET
    K[..., 1, 2] += COLMAP_PIXEL_OFFSET
    return K


def intrinsics_from_colmap(intrinsics: np.ndarray) -> np.ndarray:
    """Inverse of :func:`intrinsics_to_colmap`."""
    K = np.array(intrinsics, dtype=np.float64, copy=True)
    K[..., 0, 2] -= COLMAP_PIXEL_OFFSET
    K[..., 1, 2] -= COLMAP_PIXEL_OFFSET
    return K
