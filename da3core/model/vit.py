"""DINOv2 ViT building blocks shared by the DA3 backbone and the Video Depth Anything encoder.

Parameter names follow the official checkpoints (``patch_embed.proj``, ``attn.qkv``, ``ls1.gamma``,
``mlp.fc1`` / ``mlp.w12`` ...), so state dicts load without renaming.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

RopeFn = Callable[[Tensor], Tensor]


class PatchEmbed(nn.Module):
    """Non-overlapping patch projection: (B, 3, H, W) -> (B, H/p * W/p, C)."""

    def __init__(self, patch_size: int, embed_dim: int, in_chans: int = 3) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(f"image size {h}x{w} is not a multiple of the patch size {self.patch_size}")
        return self.proj(x).flatten(2).transpose(1, 2)


class LayerScale(nn.Module):
    """Per-channel residual scaling."""

    def __init__(self, dim: int, init_values: float = 1.0) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_values)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class Mlp(nn.Module):
    """fc1 -> GELU (exact) -> fc2."""

    def __init__(self, dim: int, hidden: int, bias: bool = True, out_dim: int | None = None) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden, bias=bias)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, out_dim or dim, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwiGLUFFN(nn.Module):
    """Gated FFN of the giant backbone: w3(silu(x1) * x2) with [x1, x2] = w12(x)."""

    def __init__(self, dim: int, hidden: int, bias: bool = True) -> None:
        super().__init__()
        hidden = (int(hidden * 2 / 3) + 7) // 8 * 8  # DINOv2's fused-SwiGLU sizing
        self.w12 = nn.Linear(dim, 2 * hidden, bias=bias)
        self.w3 = nn.Linear(hidden, dim, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        x1, x2 = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(x1) * x2)


class Attention(nn.Module):
    """Multi-head self-attention through SDPA, with optional q/k LayerNorm and a rotary embedding."""

    def __init__(
        self, dim: int, num_heads: int, qkv_bias: bool = True, qk_norm: bool = False, norm_eps: float = 1e-5
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.q_norm = nn.LayerNorm(head_dim, eps=norm_eps) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(head_dim, eps=norm_eps) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, rope: RopeFn | None = None) -> Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = rope(q), rope(k)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class Block(nn.Module):
    """Pre-norm transformer block with LayerScale: x + ls1(attn(norm1 x)), then x + ls2(mlp(norm2 x))."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        swiglu: bool = False,
        qk_norm: bool = False,
        init_values: float = 1.0,
        norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qk_norm=qk_norm)
        self.ls1 = LayerScale(dim, init_values)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = (SwiGLUFFN if swiglu else Mlp)(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim, init_values)

    def forward(self, x: Tensor, rope: RopeFn | None = None) -> Tensor:
        x = x + self.ls1(self.attn(self.norm1(x), rope=rope))
        return x + self.ls2(self.mlp(self.norm2(x)))


def interpolate_pos_embed(pos_embed: Tensor, h_patches: int, w_patches: int, offset: float = 0.1) -> Tensor:
    """Resize a (1, 1 + M*M, C) DINOv2 position embedding to an h x w patch grid.

    Matches DINOv2 exactly: bicubic with ``scale_factor=((h + offset)/M, (w + offset)/M)`` (not a
    target size), computed in fp32; the table is returned unchanged for the square M x M grid.
    """
    n = pos_embed.shape[1] - 1
    m = int(round(n**0.5))
    if h_patches == w_patches == m:
        return pos_embed
    dtype = pos_embed.dtype
    pos_embed = pos_embed.float()
    grid = pos_embed[:, 1:].reshape(1, m, m, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(
        grid, scale_factor=((h_patches + offset) / m, (w_patches + offset) / m), mode="bicubic", antialias=False
    )
    if grid.shape[-2:] != (h_patches, w_patches):
        raise RuntimeError(f"position embedding resized to {tuple(grid.shape[-2:])}, expected {(h_patches, w_patches)}")
    grid = grid.permute(0, 2, 3, 1).reshape(1, h_patches * w_patches, -1)
    return torch.cat([pos_embed[:, :1], grid], dim=1).to(dtype)
