"""The Video Depth Anything network: a DINOv2 encoder (``pretrained.*``) and the temporal DPT head (``head.*``)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from da3core.model.vit import Block, PatchEmbed, interpolate_pos_embed
from da3core.video_depth.checkpoints import ENCODER_CONFIGS, ENCODERS
from da3core.video_depth.head import PATCH_SIZE, TemporalDPTHead

PRETRAIN_GRID = 37  # DINOv2 was trained at 518 px = 37 patches


class DinoV2Encoder(nn.Module):
    """Plain DINOv2 ViT (LayerScale, exact GELU) returning normalised patch tokens of chosen layers."""

    def __init__(self, embed_dim: int, depth: int, heads: int) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, PRETRAIN_GRID**2 + 1, embed_dim))
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim))  # unused at inference, present in checkpoints
        self.patch_embed = PatchEmbed(PATCH_SIZE, embed_dim)
        self.blocks = nn.ModuleList(Block(embed_dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)

    def forward(self, x: Tensor, layers: tuple[int, ...]) -> list[Tensor]:
        """Images (N, 3, H, W) -> normalised patch tokens (N, H/14 * W/14, C) of each layer in ``layers``."""
        h, w = x.shape[-2] // PATCH_SIZE, x.shape[-1] // PATCH_SIZE
        tokens = self.patch_embed(x)
        tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        tokens = tokens + interpolate_pos_embed(self.pos_embed, h, w)
        out = []
        for i, block in enumerate(self.blocks[: max(layers) + 1]):
            tokens = block(tokens)
            if i in layers:
                out.append(self.norm(tokens)[:, 1:])
        return out


class VideoDepthAnything(nn.Module):
    """Video Depth Anything (relative or metric) with the official parameter names.

    Relative models predict affine-invariant **disparity** (larger = nearer); metric models predict depth in
    metres. ``random_weights`` and ``weights_file`` record where the loaded weights came from.
    """

    def __init__(self, encoder: str = "vits", metric: bool = False) -> None:
        super().__init__()
        if encoder not in ENCODERS:
            raise ValueError(f"unknown encoder {encoder!r}; choose one of {ENCODERS}")
        cfg = ENCODER_CONFIGS[encoder]
        self.encoder, self.metric, self.layers = encoder, metric, cfg.layers
        self.random_weights = False
        self.weights_file: Path | None = None
        self.pretrained = DinoV2Encoder(cfg.embed_dim, cfg.depth, cfg.heads)
        self.head = TemporalDPTHead(cfg.embed_dim, cfg.features, list(cfg.out_channels))

    def forward(self, x: Tensor) -> Tensor:
        """Normalised frames (B, T, 3, H, W), H and W multiples of 14 -> depth (B, T, H, W)."""
        depth, _ = self.forward_depth(self.forward_features(x), x.shape)
        return depth

    def forward_features(self, x: Tensor) -> list[Tensor]:
        """Encoder tokens of the four head layers for all B*T frames."""
        return self.pretrained(x.flatten(0, 1), self.layers)

    def forward_depth(
        self,
        features: list[Tensor],
        shape: torch.Size,
        cached: list[Tensor] | None = None,
    ) -> tuple[Tensor, list[Tensor]]:
        """Head + ReLU at input resolution: (depth (B, T, H, W), temporal states for streaming)."""
        b, t, _, h, w = shape
        depth, states = self.head(features, h // PATCH_SIZE, w // PATCH_SIZE, t, cached)
        depth = F.relu(F.interpolate(depth, size=(h, w), mode="bilinear", align_corners=True))
        return depth.squeeze(1).unflatten(0, (b, t)), states
