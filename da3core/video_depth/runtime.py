"""What both inference modes share: lazy frame preprocessing, precision context, resizing outputs back."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from da3core.video_depth.preprocess import network_size, preprocess_frame

_END = object()  # what the frame iterator gives once it is exhausted


class FrameSource:
    """Pulls frames from an iterator on demand and keeps only the preprocessed ones still needed.

    The first frame fixes the frame size and the network input size; every later frame must match it.
    """

    def __init__(self, frames: Iterable[np.ndarray], input_size: int) -> None:
        self._frames: Iterator[np.ndarray] = iter(frames)
        self._inputs: dict[int, torch.Tensor] = {}
        self.count = 0
        self.exhausted = False
        self.frame_size = (0, 0)  # (H, W), fixed by the first frame
        self.input_size = input_size
        self.net_size = (0, 0)

    def has(self, index: int) -> bool:
        """Whether frame ``index`` exists (reading up to it)."""
        while self.count <= index and not self.exhausted:
            frame = next(self._frames, _END)
            if frame is _END:
                self.exhausted = True
                break
            if frame is None:  # not the end of the video: a frame that failed to arrive
                raise ValueError(f"frame {self.count} is None; pass every frame as an (H, W, 3) uint8 array")
            frame = np.asarray(frame)
            if self.count == 0:
                self.frame_size = (frame.shape[0], frame.shape[1])
                self.net_size = network_size(*self.frame_size, self.input_size)
            elif frame.shape[:2] != self.frame_size:
                raise ValueError(f"frame {self.count} is {frame.shape[:2]}, but the video started at {self.frame_size}")
            self._inputs[self.count] = preprocess_frame(frame, self.net_size)
            self.count += 1
        return index < self.count

    def get(self, index: int) -> torch.Tensor:
        """Preprocessed frame ``index``; past the end of the video, the last frame (upstream's padding)."""
        self.has(index)
        return self._inputs[min(index, self.count - 1)]

    def keep_only(self, indices: Iterable[int], from_index: int) -> None:
        """Forget preprocessed frames not in ``indices`` and below ``from_index`` (the last one is always kept)."""
        keep = set(indices) | {self.count - 1}
        for i in [i for i in self._inputs if i < from_index and i not in keep]:
            del self._inputs[i]


def precision(device: torch.device, fp32: bool) -> contextlib.AbstractContextManager:
    """fp16 autocast on CUDA unless ``fp32``; fp32 elsewhere."""
    return (
        torch.autocast(device_type="cuda", dtype=torch.float16)
        if device.type == "cuda" and not fp32
        else contextlib.nullcontext()
    )


def to_frame_size(depth: torch.Tensor, frame_size: tuple[int, int]) -> np.ndarray:
    """(T, h, w) network-size depth -> float32 (T, H, W) on the CPU (bilinear, corners aligned)."""
    out = F.interpolate(depth.float().unsqueeze(1), size=frame_size, mode="bilinear", align_corners=True)
    return out[:, 0].cpu().numpy()
