"""Video Depth Anything (relative disparity and metric depth) for long videos, streamed frame by frame.

Relative models output affine-invariant **disparity** (larger = nearer); metric models output depth in metres.
"""

from da3core.video_depth.checkpoints import CHECKPOINTS, ENCODERS
from da3core.video_depth.model import VideoDepthAnything
from da3core.video_depth.streaming import infer_streaming
from da3core.video_depth.weights import load_model, write_random_checkpoint
from da3core.video_depth.windowed import infer_windows

__all__ = ["CHECKPOINTS", "ENCODERS", "VideoDepthAnything", "infer_streaming", "infer_windows", "load_model",
           "write_random_checkpoint"]
