"""Video Depth Anything (relative disparity and metric depth) for long videos, streamed frame by frame.

Relative models output affine-invariant **disparity** (larger = nearer); metric models output depth in metres.

    model = load_model("checkpoints/video_depth_anything_vits.pth")    # or a CHECKPOINTS name, a dir, a hub id
    for depth in infer_windows(model, frames, device="cuda"):          # frames: iterable of uint8 RGB (H, W, 3)
        ...                                                            # float32 (H, W), in frame order

``infer_streaming`` has the same interface (upstream's experimental one-frame-at-a-time mode).
``write_random_checkpoint`` writes seeded random weights in the official layout for tests and demos;
models loaded from them have ``random_weights = True``.
"""

from da3core.video_depth.checkpoints import CHECKPOINTS, ENCODERS
from da3core.video_depth.loading import load_model, write_random_checkpoint
from da3core.video_depth.model import VideoDepthAnything
from da3core.video_depth.streaming import infer_streaming
from da3core.video_depth.windowed import infer_windows

__all__ = [
    "CHECKPOINTS",
    "ENCODERS",
    "VideoDepthAnything",
    "infer_streaming",
    "infer_windows",
    "load_model",
    "write_random_checkpoint",
]
