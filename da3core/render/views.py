"""Render :class:`Gaussians` from many cameras in chunks, on CUDA through gsplat or on CPU through ours."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from da3core.geometry import as_homogeneous
from da3core.prediction import Gaussians
from da3core.render import cpu_rasterizer


def rasterize(**kwargs: Any) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """``gsplat.rasterization(**kwargs)`` for CUDA tensors, :func:`cpu_rasterizer.rasterization` otherwise."""
    if kwargs["means"].is_cuda:
        from gsplat import rasterization

        return rasterization(**kwargs)
    return cpu_rasterizer.rasterization(**kwargs)


def default_device() -> torch.device:
    """CUDA when available (gsplat's kernels need it), else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@torch.no_grad()
def render_gaussians(
    gaussians: Gaussians,
    extrinsics: np.ndarray,
    intrinsics: np.ndarray,
    height: int,
    width: int,
    chunk_size: int = 4,
    render_mode: str = "RGB+ED",
    device: str | torch.device | None = None,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Render colour (V, H, W, 3) float32 and depth (V, H, W) float32 on a black background.

    ``extrinsics`` (V, 3|4, 4) w2c and ``intrinsics`` (V, 3, 3) in pixels of the (height, width) render.
    SH colours use the degree implied by ``harmonics`` ((deg+1)^2 coefficients per channel).
    """
    device = torch.device(device) if device is not None else default_device()
    degree = int(round(np.sqrt(gaussians.harmonics.shape[-1]))) - 1
    tensor = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float32, device=device)  # noqa: E731
    params = {
        "means": tensor(gaussians.means),
        "quats": tensor(gaussians.rotations),
        "scales": tensor(gaussians.scales),
        "opacities": tensor(gaussians.opacities),
        "colors": tensor(gaussians.harmonics).transpose(1, 2).contiguous(),  # (G, K, 3) as gsplat expects
    }
    if device.type == "cpu":  # once for every chunk rather than per rasterization call (gsplat computes its own)
        params["covars"] = cpu_rasterizer.quat_scale_to_covar(params["quats"], params["scales"])
    viewmats, Ks = tensor(as_homogeneous(np.asarray(extrinsics))), tensor(intrinsics)
    colors, depths = [], []
    starts = range(0, len(viewmats), chunk_size)
    for s in tqdm(starts, desc="Rendering Gaussians", disable=not progress, leave=False):
        n = len(viewmats[s : s + chunk_size])
        out, _, _ = rasterize(
            **params,
            viewmats=viewmats[s : s + chunk_size],
            Ks=Ks[s : s + chunk_size],
            width=width,
            height=height,
            backgrounds=torch.zeros(n, 3, device=device),
            render_mode=render_mode,
            packed=False,
            sh_degree=degree,
        )
        colors.append(out[..., :3].cpu().numpy())
        depths.append(out[..., 3].cpu().numpy())
    return np.concatenate(colors), np.concatenate(depths)
