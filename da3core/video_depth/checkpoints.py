"""The Video Depth Anything model zoo: encoder sizes and the six official checkpoints.

Facts from the upstream README and run.py. The README licenses the models by size (Small: Apache-2.0;
Base and Large: CC-BY-NC-4.0) and states no separate licence for the metric repos, so the metric
entries carry the licence of their size.
"""

from __future__ import annotations

from dataclasses import dataclass

from da3core.model.presets import VIT_SIZES

ENCODERS = ("vits", "vitb", "vitl")


@dataclass(frozen=True)
class EncoderConfig:
    """A DINOv2 size (da3core.model.presets.VIT_SIZES), the ViT layers the head reads, and the DPT head widths."""

    vit: str
    layers: tuple[int, ...]
    features: int
    out_channels: tuple[int, int, int, int]

    @property
    def embed_dim(self) -> int:
        """Backbone width."""
        return VIT_SIZES[self.vit].embed_dim

    @property
    def depth(self) -> int:
        """Number of ViT blocks."""
        return VIT_SIZES[self.vit].depth

    @property
    def heads(self) -> int:
        """Attention heads per block."""
        return VIT_SIZES[self.vit].heads


ENCODER_CONFIGS = {
    "vits": EncoderConfig("vits", (2, 5, 8, 11), 64, (48, 96, 192, 384)),
    "vitb": EncoderConfig("vitb", (2, 5, 8, 11), 128, (96, 192, 384, 768)),
    "vitl": EncoderConfig("vitl", (4, 11, 17, 23), 256, (256, 512, 1024, 1024)),
}


@dataclass(frozen=True)
class CheckpointInfo:
    """Where an official checkpoint lives and what it is."""

    name: str
    repo_id: str
    filename: str
    encoder: str
    metric: bool
    params_m: float
    licence: str

    @property
    def approx_size_mb(self) -> int:
        """File size estimated from the parameter count (fp32)."""
        return round(self.params_m * 4)

    @property
    def url(self) -> str:
        """Direct download URL on the Hugging Face Hub."""
        return f"https://huggingface.co/{self.repo_id}/resolve/main/{self.filename}"


_SIZES = {
    "vits": ("Small", 28.4, "Apache-2.0"),
    "vitb": ("Base", 113.1, "CC-BY-NC-4.0"),
    "vitl": ("Large", 381.8, "CC-BY-NC-4.0"),
}


def checkpoint_name(encoder: str, metric: bool) -> str:
    """Official file stem, e.g. ``metric_video_depth_anything_vits``."""
    return f"{'metric_' if metric else ''}video_depth_anything_{encoder}"


def _info(encoder: str, metric: bool) -> CheckpointInfo:
    size, params, licence = _SIZES[encoder]
    name = checkpoint_name(encoder, metric)
    repo = f"depth-anything/{'Metric-' if metric else ''}Video-Depth-Anything-{size}"
    return CheckpointInfo(name, repo, f"{name}.pth", encoder, metric, params, licence)


CHECKPOINTS: dict[str, CheckpointInfo] = {
    info.name: info for info in (_info(e, m) for m in (False, True) for e in ENCODERS)
}
