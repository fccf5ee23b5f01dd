"""The output contract of DA3 inference, shared by the model, the exporters and the scene store."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")


def present(value: T | None, what: str) -> T:
    """``value``, or a ValueError naming the prediction output ``what`` that an export needs and lacks."""
    if value is None:
        raise ValueError(f"the prediction has no {what}, which this export needs (check the preset and options)")
    return value


@dataclass
class Gaussians:
    """World-space 3D Gaussians, one per processed pixel: G = N * H * W in view-major, row-major order.

    Upstream keeps these as batched torch tensors; here they are numpy arrays without the batch dim.
    """

    means: np.ndarray  # (G, 3) float32
    scales: np.ndarray  # (G, 3) float32, linear (not log)
    rotations: np.ndarray  # (G, 4) float32 quaternion w, x, y, z
    harmonics: np.ndarray  # (G, 3, d_sh) float32 SH coefficients per colour channel
    opacities: np.ndarray  # (G,) float32 in [0, 1]

    def __len__(self) -> int:
        return len(self.means)


@dataclass
class Prediction:
    """Per-view outputs at the processed resolution (H, W), in input order.

    Cameras follow OpenCV: ``extrinsics`` are world-to-camera, ``intrinsics`` are in processed pixels.
    """

    depth: np.ndarray  # (N, H, W) float32 z-depth
    is_metric: int = 0  # 1 when depth is in metres (nested model)
    sky: np.ndarray | None = None  # (N, H, W) bool, mono/metric presets only
    conf: np.ndarray | None = None  # (N, H, W) float32 >= 1, any-view presets only
    extrinsics: np.ndarray | None = None  # (N, 3, 4) float32 world-to-camera
    intrinsics: np.ndarray | None = None  # (N, 3, 3) float32
    processed_images: np.ndarray | None = None  # (N, H, W, 3) uint8 RGB, the network input
    gaussians: Gaussians | None = None
    aux: dict[str, Any] = field(default_factory=dict)  # "feat_layer_{i}": (N, h, w, C) float32
    scale_factor: float | None = None  # nested metric scale applied to depth and translations
    ref_view_idx: int | None = None  # reference view chosen by the backbone (None if no selection ran)
    source_sizes: np.ndarray | None = None  # (N, 2) int original (H, W) of each input image
    # Processed pixel (u, v) of view i came from original pixel (u, v) * source_scale[i] + source_offset[i] (x, y);
    # None: a plain resize to the processed size (scale = source size / processed size, offset 0).
    source_scale: np.ndarray | None = None  # (N, 2) float64
    source_offset: np.ndarray | None = None  # (N, 2) float64, non-zero where a view was cropped
    source_names: list[str] | None = None  # file name of each input view, when it came from a file

    def __len__(self) -> int:
        return len(self.depth)
