"""Video Depth Anything frame preprocessing, as upstream: a shrunken input size for very wide frames, a
lower-bound aspect-keeping resize to multiples of 14 (bicubic on float [0, 1] pixels), ImageNet normalisation.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch

from da3core.preprocess import MEAN, STD
from da3core.video_depth.head import PATCH_SIZE

MAX_RATIO = 1.78  # wider frames get a smaller input size ("memory limitation" upstream)
RATIO_TARGET = 1.777
_MEAN, _STD = np.array(MEAN), np.array(STD)  # float64, so normalisation rounds as upstream's numpy does


def network_size(height: int, width: int, input_size: int = 518) -> tuple[int, int]:
    """The (height, width) frames of this size are resized to: the short side at least ``input_size``, both x14."""
    ratio = max(height, width) / min(height, width)
    if ratio > MAX_RATIO:
        # At least one patch: upstream's rounding reaches 0 (and fails) past a ratio of about 130.
        input_size = max(PATCH_SIZE, round(int(input_size * RATIO_TARGET / ratio) / PATCH_SIZE) * PATCH_SIZE)
    scale = max(input_size / height, input_size / width)
    return _multiple_at_least(scale * height, input_size), _multiple_at_least(scale * width, input_size)


def _multiple_at_least(x: float, minimum: int) -> int:
    y = int(np.round(x / PATCH_SIZE) * PATCH_SIZE)  # numpy rounds halves to even, as upstream
    return y if y >= minimum else int(math.ceil(x / PATCH_SIZE) * PATCH_SIZE)


def preprocess_frame(frame: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """uint8 RGB (H, W, 3) -> normalised float32 (3, h, w) for ``size`` = (h, w)."""
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"frames must be uint8 RGB arrays (H, W, 3), got {frame.dtype} {frame.shape}")
    resized = cv2.resize(frame.astype(np.float32) / 255.0, (size[1], size[0]), interpolation=cv2.INTER_CUBIC)
    return torch.from_numpy(((resized - _MEAN) / _STD).transpose(2, 0, 1).astype(np.float32))
