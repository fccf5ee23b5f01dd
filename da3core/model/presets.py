"""The seven DA3 presets as data: backbone, head and optional camera/Gaussian modules per model card."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple


class ViTSize(NamedTuple):
    """A DINOv2 size (shared by both model families): width, blocks, attention heads, SwiGLU MLP or not."""

    embed_dim: int
    depth: int
    heads: int
    swiglu: bool


VIT_SIZES = {
    "vits": ViTSize(384, 12, 6, False),
    "vitb": ViTSize(768, 12, 12, False),
    "vitl": ViTSize(1024, 24, 16, False),
    "vitg": ViTSize(1536, 40, 24, True),
}


@dataclass(frozen=True)
class NetSpec:
    """One DepthAnything3Net: backbone layout, head widths, and which optional modules exist."""

    vit: str
    out_layers: tuple[int, ...]
    alt_start: int  # first alternating (camera-token) block; -1 = all attention is per view
    head_features: int
    head_channels: tuple[int, int, int, int]
    any_view: bool  # DualDPT + camera encoder/decoder (else mono DPT with a sky head)
    gaussians: bool = False

    @property
    def embed_dim(self) -> int:
        """Backbone width C."""
        return VIT_SIZES[self.vit].embed_dim


@dataclass(frozen=True)
class Preset:
    """A model card: its network(s), hub id and what it outputs."""

    name: str
    hub_id: str
    net: NetSpec  # the any-view (or mono/metric) network
    metric: NetSpec | None = None  # nested presets: the metric network that scales `net`

    @property
    def has_conf(self) -> bool:
        """Whether depth comes with a confidence map."""
        return self.net.any_view

    @property
    def has_gaussians(self) -> bool:
        """Whether the preset can predict 3D Gaussians (infer_gs)."""
        return self.net.gaussians


_SMALL = NetSpec("vits", (5, 7, 9, 11), 4, 64, (48, 96, 192, 384), True)
_BASE = NetSpec("vitb", (5, 7, 9, 11), 4, 128, (96, 192, 384, 768), True)
_LARGE = NetSpec("vitl", (11, 15, 19, 23), 8, 256, (256, 512, 1024, 1024), True)
_GIANT = NetSpec("vitg", (19, 27, 33, 39), 13, 256, (256, 512, 1024, 1024), True, gaussians=True)
_MONO = NetSpec("vitl", (4, 11, 17, 23), -1, 256, (256, 512, 1024, 1024), False)

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("da3-small", "depth-anything/DA3-SMALL", _SMALL),
        Preset("da3-base", "depth-anything/DA3-BASE", _BASE),
        Preset("da3-large", "depth-anything/DA3-LARGE-1.1", _LARGE),
        Preset("da3-giant", "depth-anything/DA3-GIANT-1.1", _GIANT),
        Preset("da3mono-large", "depth-anything/DA3MONO-LARGE", _MONO),
        Preset("da3metric-large", "depth-anything/DA3METRIC-LARGE", _MONO),
        Preset("da3nested-giant-large", "depth-anything/DA3NESTED-GIANT-LARGE-1.1", _GIANT, metric=_MONO),
    )
}

# The model every entry point uses when none is named (the da3 commands, `da3 backend`, `da3 gradio`): upstream's
# CLI default, so `--use-backend` and a local run compute with the same network.
DEFAULT_PRESET = "da3nested-giant-large"


def get_preset(name: str) -> Preset:
    """The preset called ``name``; unknown names raise ValueError listing the valid ones."""
    if name not in PRESETS:
        raise ValueError(f"unknown DA3 preset '{name}'; available: {', '.join(PRESETS)}")
    return PRESETS[name]


def has_gaussian_head(name: str) -> bool:
    """Whether preset ``name`` can infer 3D Gaussians."""
    return get_preset(name).has_gaussians


def preset_of_hub_id(hub_id: str) -> str | None:
    """The preset whose model card is ``hub_id`` (any case, with or without a version suffix such as -1.1)."""
    strip = lambda s: re.sub(r"-\d+(\.\d+)*$", "", s.lower())  # noqa: E731
    return next((name for name, p in PRESETS.items() if strip(p.hub_id) == strip(hub_id)), None)
