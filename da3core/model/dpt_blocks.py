"""DPT decoder pieces shared by the DA3 heads and the Video Depth Anything head.

Names mirror the checkpoints: ``projects.k``, ``resize_layers.k``, ``scratch.layerK_rn``,
``scratch.refinenetK.{resConfUnit1,resConfUnit2,out_conv}``.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn


class ResidualConvUnit(nn.Module):
    """conv2(relu(conv1(relu(x)))) + x with 3x3 convolutions."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(F.relu(self.conv1(F.relu(x)))) + x


class FeatureFusionBlock(nn.Module):
    """Fuse a top-down map with a lateral one, refine, upsample (bilinear, align_corners) and project 1x1."""

    def __init__(self, features: int, has_residual: bool = True) -> None:
        super().__init__()
        self.resConfUnit1 = ResidualConvUnit(features) if has_residual else None
        self.resConfUnit2 = ResidualConvUnit(features)
        self.out_conv = nn.Conv2d(features, features, 1)

    def forward(self, x: Tensor, lateral: Tensor | None = None, size: tuple[int, int] | None = None) -> Tensor:
        if lateral is not None and self.resConfUnit1 is not None:
            x = x + self.resConfUnit1(lateral)
        x = self.resConfUnit2(x)
        size = size or (x.shape[-2] * 2, x.shape[-1] * 2)
        return self.out_conv(F.interpolate(x, size=size, mode="bilinear", align_corners=True))


def make_projects(dim_in: int, out_channels: list[int]) -> nn.ModuleList:
    """1x1 projections of the four token maps to per-stage widths."""
    return nn.ModuleList(nn.Conv2d(dim_in, oc, 1) for oc in out_channels)


def make_resize_layers(out_channels: list[int]) -> nn.ModuleList:
    """Stage resampling to 4x, 2x, 1x and 1/2x of the patch grid."""
    c = out_channels
    return nn.ModuleList(
        [
            nn.ConvTranspose2d(c[0], c[0], kernel_size=4, stride=4),
            nn.ConvTranspose2d(c[1], c[1], kernel_size=2, stride=2),
            nn.Identity(),
            nn.Conv2d(c[3], c[3], kernel_size=3, stride=2, padding=1),
        ]
    )


class Scratch(nn.Module):
    """Container of a head's convs and fusion blocks, named after the checkpoint keys each head sets."""

    def __getattr__(self, name: str) -> Any:  # the names are set per head, so type checkers see Any
        return super().__getattr__(name)


def make_scratch(out_channels: list[int], features: int) -> Scratch:
    """Container for ``layerK_rn`` (3x3, no bias) convs mapping each stage to ``features`` channels."""
    scratch = Scratch()
    for k, oc in enumerate(out_channels, start=1):
        setattr(scratch, f"layer{k}_rn", nn.Conv2d(oc, features, 3, padding=1, bias=False))
    return scratch
