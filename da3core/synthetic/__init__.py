"""Synthetic scenes with exact ground truth, and writers for every input kind the pipeline reads."""

from da3core.synthetic.bench_layouts import MINIATURE_WRITERS, write_miniature
from da3core.synthetic.gauge_predictor import GaugePredictor
from da3core.synthetic.long_paths import make_sequence
from da3core.synthetic.scene import (
    SyntheticCapture,
    SyntheticScene,
    make_capture,
    make_scene,
    render_capture,
    render_view,
    scene_mesh,
    surface_points,
)
from da3core.synthetic.writers import (
    VideoInfo,
    encode_frames,
    pattern_frames,
    write_colmap,
    write_ground_truth,
    write_image_folder,
    write_video,
)

__all__ = [
    "GaugePredictor",
    "MINIATURE_WRITERS",
    "SyntheticCapture",
    "SyntheticScene",
    "VideoInfo",
    "encode_frames",
    "make_capture",
    "make_scene",
    "make_sequence",
    "pattern_frames",
    "render_capture",
    "render_view",
    "scene_mesh",
    "surface_points",
    "write_miniature",
    "write_colmap",
    "write_ground_truth",
    "write_image_folder",
    "write_video",
]
