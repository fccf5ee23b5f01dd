"""Offline (windowed) Video Depth Anything inference, streamed: frames in, final depths out as soon as known.

The scheme is upstream's ``infer_video_depth``: 32-frame windows every 22 frames. Window k (start s = 22k > 0)
holds frame 0 (a global anchor), frame s - 10 (the previous window's slot 12), then frames s+2 .. s+31; past
the end of the video the last frame repeats. Each later window is fitted (least-squares scale and shift) on
its first two slots against the aligned depths of those frames, its 8 overlap frames are cross-faded into the
previous window's last 8, and the rest is appended, clamped at 0. Metric models skip the fit.

Unlike upstream, neither the frames nor the depths of the whole video are held: at most the inputs of
``windows_per_batch`` windows and 8 unfinished depths are buffered.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import torch

from da3core.video_depth.model import VideoDepthAnything
from da3core.video_depth.runtime import FrameSource, precision, to_frame_size

INFER_LEN = 32
OVERLAP = 10
INTERP_LEN = 8
STEP = INFER_LEN - OVERLAP  # 22 new frames per window
ANCHOR_SLOTS = OVERLAP - INTERP_LEN  # slots 0 and 1 hold keyframes and anchor the fit
REF_SLOT = 12  # the slot the next window sees again in its slot 1


def window_frames(k: int) -> list[int]:
    """Frame index of each of window k's 32 slots (before clamping to the video's last frame)."""
    s = STEP * k
    if k == 0:
        return list(range(INFER_LEN))
    return [0, s - STEP + REF_SLOT] + list(range(s + ANCHOR_SLOTS, s + INFER_LEN))


def fit_scale_shift(prediction: np.ndarray, target: np.ndarray) -> tuple[np.float32, np.float32]:
    """Least-squares ``scale, shift`` with ``prediction * scale + shift ~ target`` (float32, as upstream)."""
    p, t = prediction.astype(np.float32), target.astype(np.float32)
    a00, a01, a11 = np.sum(p * p), np.sum(p), np.float32(p.size)
    b0, b1 = np.sum(p * t), np.sum(t)
    det = a00 * a11 - a01 * a01
    if det == 0:
        return np.float32(1.0), np.float32(0.0)
    return (a11 * b0 - a01 * b1) / det, (-a01 * b0 + a00 * b1) / det


def crossfade_weights(n: int = INTERP_LEN) -> list[float]:
    """Weights of the new window in the overlap: 0, 1/(n-1), ..., 1."""
    step = 1.0 / (n - 1)
    return [0.0] + [i * step for i in range(1, n - 1)] + [1.0]


class WindowAligner:
    """Turns raw window depths into aligned, cross-faded frame depths, returning those that are final."""

    def __init__(self, metric: bool) -> None:
        self.metric = metric
        self.ref: list[np.ndarray] | None = None  # aligned depths of frame 0 and of the last window's slot 12
        self.tail: list[np.ndarray] = []  # the last INTERP_LEN aligned depths, still to be cross-faded

    def add(self, depth: np.ndarray) -> list[np.ndarray]:
        """One window's (32, H, W) depths -> the frames that no later window changes."""
        if self.ref is None:
            self.ref = [depth[0], depth[REF_SLOT]]
            self.tail = list(depth[INFER_LEN - INTERP_LEN :])
            return list(depth[: INFER_LEN - INTERP_LEN])
        scale: float | np.floating
        shift: float | np.floating
        if self.metric:
            scale, shift = 1.0, 0.0
        else:
            scale, shift = fit_scale_shift(np.concatenate(depth[:ANCHOR_SLOTS]), np.concatenate(self.ref))

        def aligned(slot: int) -> np.ndarray:
            return np.maximum(depth[slot] * scale + shift, 0)

        done = [
            pre * (1 - w) + aligned(ANCHOR_SLOTS + i) * w
            for i, (pre, w) in enumerate(zip(self.tail, crossfade_weights()))
        ]
        done += [aligned(i) for i in range(OVERLAP, INFER_LEN - INTERP_LEN)]
        self.tail = [aligned(i) for i in range(INFER_LEN - INTERP_LEN, INFER_LEN)]
        self.ref = [self.ref[0], aligned(REF_SLOT)]
        return done

    def finish(self) -> list[np.ndarray]:
        """The last, never cross-faded depths."""
        tail, self.tail = self.tail, []
        return tail


@torch.no_grad()
def infer_windows(
    model: VideoDepthAnything,
    frames: Iterable[np.ndarray],
    *,
    input_size: int = 518,
    device: str | torch.device = "cpu",
    fp32: bool = False,
    windows_per_batch: int = 1,
) -> Iterator[np.ndarray]:
    """Depth of every frame (HxW float32, in order) by upstream's windowed offline scheme.

    ``frames`` are uint8 RGB (H, W, 3) arrays of one size. Relative models yield relative **disparity**
    (affine-invariant, larger = nearer); metric models yield depth in metres. The model is moved to ``device``;
    ``fp32=False`` runs fp16 autocast on CUDA (as upstream); other devices always run fp32. Windows are
    independent of earlier outputs, so ``windows_per_batch`` of them share one forward pass.
    """
    if windows_per_batch < 1:
        raise ValueError(f"windows_per_batch must be >= 1, got {windows_per_batch}")
    device = torch.device(device)
    model = model.to(device).eval()
    source = FrameSource(frames, input_size)
    aligner = WindowAligner(model.metric)
    emitted, k = 0, 0
    while source.has(STEP * k):
        batch = [j for j in range(k, k + windows_per_batch) if source.has(STEP * j)]
        x = torch.stack([torch.stack([source.get(i) for i in window_frames(j)]) for j in batch]).to(device)
        with precision(device, fp32):
            depth = model(x)
        k += len(batch)
        source.keep_only([0, STEP * k - STEP + REF_SLOT], STEP * k + ANCHOR_SLOTS)
        for window in depth:
            for d in aligner.add(to_frame_size(window, source.frame_size)):
                if emitted < source.count:
                    emitted += 1
                    yield d
    for d in aligner.finish():
        if emitted < source.count:
            emitted += 1
            yield d
