"""Streaming Video Depth Anything inference (upstream's experimental ``video_depth_stream``): one frame per step.

Each frame runs the encoder alone and the head with its temporal attention reading cached attention inputs
of earlier frames instead of a 32-frame window. The first frame's states fill all 32 cache slots; the context
of a frame is cache entries [0, 1] plus the newest 29. Once ``frame + 32 > 42`` (upstream's
``gap = (32 - 10) * 2 - 1 - (10 - 8)``), each step drops entry 1, so frame 0 stays an anchor while the list
keeps 42 entries. There is no scale/shift alignment; upstream reports lower accuracy than the windowed mode.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import torch

from da3core.video_depth.model import VideoDepthAnything
from da3core.video_depth.runtime import FrameSource, precision, to_frame_size
from da3core.video_depth.windowed import INFER_LEN, INTERP_LEN, OVERLAP

CONTEXT_HEAD = 2  # oldest cache entries always in the context (frame 0's)
CONTEXT_TAIL = INFER_LEN - 3  # newest entries: 2 + 29 cached frames + the current one
GAP = (INFER_LEN - OVERLAP) * 2 - 1 - (OVERLAP - INTERP_LEN)  # 41


@torch.no_grad()
def infer_streaming(
    model: VideoDepthAnything,
    frames: Iterable[np.ndarray],
    *,
    input_size: int = 518,
    device: str | torch.device = "cpu",
    fp32: bool = False,
) -> Iterator[np.ndarray]:
    """Depth of every frame (HxW float32), each yielded right after its frame arrives.

    Same inputs and outputs as :func:`~da3core.video_depth.windowed.infer_windows`: relative models yield
    relative **disparity**, metric models metres; fp16 autocast only on CUDA with ``fp32=False``.
    """
    device = torch.device(device)
    model = model.to(device).eval()
    source = FrameSource(frames, input_size)
    cache: list[list[torch.Tensor]] = []
    index = 0
    while source.has(index):
        x = source.get(index)[None, None].to(device)
        source.keep_only([], index + 1)
        with precision(device, fp32):
            features = model.forward_features(x)
            if not cache:
                depth, states = model.forward_depth(features, x.shape)
                cache = [states] * INFER_LEN
            else:
                context = cache[:CONTEXT_HEAD] + cache[-CONTEXT_TAIL:]
                stacked = [torch.cat([entry[i] for entry in context], dim=1) for i in range(len(context[0]))]
                depth, states = model.forward_depth(features, x.shape, stacked)
                cache.append(states)
        if index + INFER_LEN > GAP + 1:
            del cache[1]
        index += 1
        yield to_frame_size(depth[0], source.frame_size)[0]
