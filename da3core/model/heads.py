"""DA3 dense heads: DualDPT (depth + confidence, ray maps), DPT with a sky map (mono/metric), GSDPT (raw Gaussians).

All three share the DPT reassembly (1x1 projections, 4x/2x/1x/0.5x resampling, 3x3 ``layerK_rn``)
and the top-down fusion; they differ in their output convolutions. Frames are decoded in chunks
to bound memory.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from da3core.model.dpt_blocks import FeatureFusionBlock, make_projects, make_resize_layers, make_scratch

PATCH_SIZE = 14
CHUNK_FRAMES = 8


class Permute(nn.Module):
    """Tensor.permute as a module (keeps checkpoint indices of the Sequential it sits in)."""

    def __init__(self, *dims: int) -> None:
        super().__init__()
        self.dims = dims

    def forward(self, x: Tensor) -> Tensor:
        return x.permute(*self.dims)


@lru_cache(maxsize=64)
def _uv_embedding(ph: int, pw: int, channels: int, aspect: float, device: torch.device) -> Tensor:
    """(channels, ph, pw) sin/cos embedding of a centred UV grid spanning the image diagonal, times 0.1."""
    diag = (aspect**2 + 1.0) ** 0.5
    sx, sy = aspect / diag * (pw - 1) / pw, 1.0 / diag * (ph - 1) / ph
    u, v = torch.meshgrid(
        torch.linspace(-sx, sx, pw, device=device), torch.linspace(-sy, sy, ph, device=device), indexing="xy"
    )

    def sincos(pos: Tensor, dim: int) -> Tensor:
        omega = torch.arange(dim // 2, dtype=torch.float32, device=device) / (dim / 2.0)
        angles = torch.einsum("m,d->md", pos.reshape(-1), 1.0 / 100**omega)
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    emb = torch.cat([sincos(u, channels // 2), sincos(v, channels // 2)], dim=-1).view(ph, pw, channels)
    return (emb * 0.1).permute(2, 0, 1)


def add_uv_embedding(x: Tensor, W: int, H: int) -> Tensor:
    """Add the UV position embedding of an (H, W) image to a feature map (B, C, h, w)."""
    return x + _uv_embedding(x.shape[-2], x.shape[-1], x.shape[1], W / H, x.device)


def _output_conv(in_ch: int, out_ch: int, layer_norm: bool = False) -> nn.Sequential:
    mid = 32
    norm = [Permute(0, 2, 3, 1), nn.LayerNorm(mid), Permute(0, 3, 1, 2)] if layer_norm else []
    return nn.Sequential(nn.Conv2d(in_ch, mid, 3, padding=1), *norm, nn.ReLU(inplace=True), nn.Conv2d(mid, out_ch, 1))


class _DPTBase(nn.Module):
    """Reassembly + fusion shared by every DA3 head."""

    # Convolution kernels pick different algorithms for strided and dense inputs; laying tokens out as
    # upstream does per head keeps outputs bitwise equal to the reference.
    contiguous_tokens = False
    _decode: Callable[..., dict[str, Tensor]]  # each head decodes its own outputs from the fused maps

    def __init__(self, dim_in: int, features: int, out_channels: tuple[int, ...], pos_embed: bool, token_norm: bool):
        super().__init__()
        self.pos_embed = pos_embed
        self.norm = nn.LayerNorm(dim_in) if token_norm else nn.Identity()
        self.projects = make_projects(dim_in, list(out_channels))
        self.resize_layers = make_resize_layers(list(out_channels))
        self.scratch = make_scratch(list(out_channels), features)
        self.scratch.refinenet1 = FeatureFusionBlock(features)
        self.scratch.refinenet2 = FeatureFusionBlock(features)
        self.scratch.refinenet3 = FeatureFusionBlock(features)
        self.scratch.refinenet4 = FeatureFusionBlock(features, has_residual=False)
        self.scratch.output_conv1 = nn.Conv2d(features, features // 2, 3, padding=1)

    def _reassemble(self, tokens: list[Tensor], H: int, W: int) -> list[Tensor]:
        ph, pw = H // PATCH_SIZE, W // PATCH_SIZE
        maps = []
        for k, t in enumerate(tokens):
            x = self.norm(t).permute(0, 2, 1)
            x = (x.contiguous() if self.contiguous_tokens else x).reshape(t.shape[0], t.shape[2], ph, pw)
            x = self.projects[k](x)
            if self.pos_embed:
                x = add_uv_embedding(x, W, H)
            x = self.resize_layers[k](x)
            maps.append(getattr(self.scratch, f"layer{k + 1}_rn")(x))
        return maps

    def _fuse(self, maps: list[Tensor], suffix: str = "") -> list[Tensor]:
        """Top-down fusion; returns the map after each refinenet (coarse to fine)."""
        s = self.scratch
        l1, l2, l3, l4 = maps
        out = [getattr(s, f"refinenet4{suffix}")(l4, size=l3.shape[2:])]
        out.append(getattr(s, f"refinenet3{suffix}")(out[-1], l3, size=l2.shape[2:]))
        out.append(getattr(s, f"refinenet2{suffix}")(out[-1], l2, size=l1.shape[2:]))
        out.append(getattr(s, f"refinenet1{suffix}")(out[-1], l1))
        return out

    def _upsample(self, x: Tensor, H: int, W: int) -> Tensor:
        size = ((H // PATCH_SIZE) * PATCH_SIZE, (W // PATCH_SIZE) * PATCH_SIZE)
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
        # In place on the fresh upsampled map: a full-resolution temporary fewer (same values).
        return x.add_(_uv_embedding(*x.shape[-2:], x.shape[1], W / H, x.device)) if self.pos_embed else x

    def forward(self, feats: list[Tensor], H: int, W: int, **kwargs) -> dict[str, Tensor]:
        """Token features [(B, S, N, C)] x 4 -> dict of (B, S, ...) maps, decoded CHUNK_FRAMES frames at a time."""
        b, s = feats[0].shape[:2]
        flat = [f.flatten(0, 1) for f in feats]
        extra = {k: v.flatten(0, 1) for k, v in kwargs.items() if isinstance(v, Tensor)}
        flags = {k: v for k, v in kwargs.items() if not isinstance(v, Tensor)}
        parts = [
            self._decode(
                [f[i : i + CHUNK_FRAMES] for f in flat],
                H,
                W,
                **{k: v[i : i + CHUNK_FRAMES] for k, v in extra.items()},
                **flags,
            )
            for i in range(0, b * s, CHUNK_FRAMES)
        ]
        return {k: torch.cat([p[k] for p in parts]).unflatten(0, (b, s)) for k in parts[0]}


class DualDPT(_DPTBase):
    """Any-view head: depth (exp) + confidence (exp + 1), and ray maps (6, linear) + ray confidence at 8h x 8w."""

    AUX_LEVELS = 4

    def __init__(self, dim_in: int, features: int, out_channels: tuple[int, ...]):
        super().__init__(dim_in, features, out_channels, pos_embed=True, token_norm=True)
        half = features // 2
        self.scratch.output_conv2 = _output_conv(half, 2)
        for k in range(1, 5):
            setattr(self.scratch, f"refinenet{k}_aux", FeatureFusionBlock(features, has_residual=k != 4))

        def aux_stack() -> nn.Sequential:
            return nn.Sequential(
                *(
                    nn.Conv2d(features if i % 2 == 0 else half, half if i % 2 == 0 else features, 3, padding=1)
                    for i in range(5)
                )
            )

        # Checkpoints hold one aux output stack per pyramid level; only the finest one shapes the rays.
        self.scratch.output_conv1_aux = nn.ModuleList(aux_stack() for _ in range(self.AUX_LEVELS))
        self.scratch.output_conv2_aux = nn.ModuleList(
            _output_conv(half, 7, layer_norm=True) for _ in range(self.AUX_LEVELS)
        )

    def _decode(self, tokens: list[Tensor], H: int, W: int, with_rays: bool = True) -> dict[str, Tensor]:
        maps = self._reassemble(tokens, H, W)
        main = self.scratch.output_conv1(self._fuse(maps)[-1])
        logits = self.scratch.output_conv2(self._upsample(main, H, W))
        out = {"depth": torch.exp(logits[:, 0]), "depth_conf": torch.exp(logits[:, 1]) + 1}
        if with_rays:  # upstream always decodes rays and drops them unless ray pose is used
            aux = self.scratch.output_conv1_aux[-1](self._fuse(maps, "_aux")[-1])
            aux = add_uv_embedding(aux, W, H)
            ray_logits = self.scratch.output_conv2_aux[-1](aux).permute(0, 2, 3, 1)
            out["ray"] = ray_logits[..., :6]
            out["ray_conf"] = torch.exp(ray_logits[..., 6]) + 1
        return out


class MonoDPT(_DPTBase):
    """Mono/metric head: depth (exp) and a sky score (ReLU), no confidence."""

    contiguous_tokens = True

    def __init__(self, dim_in: int, features: int, out_channels: tuple[int, ...]):
        super().__init__(dim_in, features, out_channels, pos_embed=False, token_norm=False)
        self.scratch.output_conv2 = _output_conv(features // 2, 1)
        self.scratch.sky_output_conv2 = _output_conv(features // 2, 1)

    def _decode(self, tokens: list[Tensor], H: int, W: int) -> dict[str, Tensor]:
        feat = self._upsample(self.scratch.output_conv1(self._fuse(self._reassemble(tokens, H, W))[-1]), H, W)
        return {
            "depth": torch.exp(self.scratch.output_conv2(feat)[:, 0]),
            "sky": torch.relu(self.scratch.sky_output_conv2(feat)[:, 0]),
        }


class GSDPT(_DPTBase):
    """Gaussian head: 37 raw Gaussian parameters per pixel and an opacity probability (sigmoid).

    The normalised input image is encoded by ``images_merger`` and added at full resolution.
    """

    def __init__(self, dim_in: int, features: int, out_channels: tuple[int, ...], raw_dim: int = 37):
        super().__init__(dim_in, features, out_channels, pos_embed=True, token_norm=False)
        half = features // 2
        self.scratch.output_conv2 = _output_conv(half, raw_dim + 1)
        self.images_merger = nn.Sequential(
            nn.Conv2d(3, half // 4, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(half // 4, half // 2, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(half // 2, half, 3, padding=1),
            nn.GELU(),
        )

    def _decode(self, tokens: list[Tensor], H: int, W: int, images: Tensor) -> dict[str, Tensor]:
        fused = self.scratch.output_conv1(self._fuse(self._reassemble(tokens, H, W))[-1])
        size = ((H // PATCH_SIZE) * PATCH_SIZE, (W // PATCH_SIZE) * PATCH_SIZE)
        fused = F.interpolate(fused, size=size, mode="bilinear", align_corners=True) + self.images_merger(images)
        logits = self.scratch.output_conv2(add_uv_embedding(fused, W, H)).permute(0, 2, 3, 1)
        return {"raw_gs": logits[..., :-1], "raw_gs_conf": torch.sigmoid(logits[..., -1])}
