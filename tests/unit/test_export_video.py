"""feat_vis and gs_video: videos read back with PyAV (frames, size, fps), PCA colours and renders checked."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest
from export_scenes import synthetic_prediction
from PIL import Image

from da3core.export import export
from da3core.export.feat_vis import pca_colors
from da3core.export.gs_video import depth_colors


def luma(rgb: np.ndarray) -> np.ndarray:
    """Rec. 601 luma: what yuv420p keeps at full resolution."""
    return rgb.astype(float) @ np.array([0.299, 0.587, 0.114])


def read_video(path):
    """(frames (T, H, W, 3) uint8, fps) decoded by PyAV."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(stream)])
        return frames, Fraction(stream.average_rate)


def test_pca_colours_recover_the_embedded_signal_deterministically():
    prediction = synthetic_prediction(n_views=3, width=70, height=56, features=True)[0]
    features = prediction.aux["feat_layer_3"]
    colors = pca_colors(features, clip_percent=0.0)
    assert colors.shape == features.shape[:3] + (3,) and colors.min() >= 0 and colors.max() <= 1
    np.testing.assert_array_equal(colors, pca_colors(features, clip_percent=0.0))
    # The features are a linear image of the RGB signal, so the PCA colours must be an affine map of it.
    rgb = prediction.processed_images[:, ::7, ::7].reshape(-1, 3) / 255.0
    design = np.concatenate([rgb, np.ones((len(rgb), 1))], axis=1)
    target = colors.reshape(-1, 3)
    fit = design @ np.linalg.lstsq(design, target, rcond=None)[0]
    r2 = 1 - ((target - fit) ** 2).sum(0) / ((target - target.mean(0)) ** 2).sum(0)
    assert (r2 > 0.98).all(), r2


def test_feat_vis_frames_and_video(tmp_path):
    prediction = synthetic_prediction(n_views=3, width=70, height=56, features=True)[0]
    paths = export(prediction, "feat_vis", tmp_path, feat_vis_fps=10)["feat_vis"]
    jpgs = [str(tmp_path / f"feat_vis/feat_layer_3/{i:06d}.jpg") for i in range(3)]
    assert paths == jpgs + [str(tmp_path / "feat_vis/feat_layer_3.mp4")]
    assert Image.open(jpgs[0]).size == (140, 56)
    frames, fps = read_video(tmp_path / "feat_vis/feat_layer_3.mp4")
    assert frames.shape == (3, 56, 140, 3) and fps == 10
    # Left half is the image (up to H.264 loss; chroma is subsampled, so compare luma).
    assert np.abs(luma(frames[:, :, :70]) - luma(prediction.processed_images)).mean() < 8


@pytest.fixture(scope="module")
def splat_scene():
    return synthetic_prediction(n_views=3, width=70, height=56, gaussians=True)


def test_gs_video_renders_the_input_views_beside_their_depth(splat_scene, tmp_path):
    prediction, capture = splat_scene
    paths = export(prediction, "gs_video", tmp_path, gs_video={"trj_mode": "original", "progress": False})
    assert paths == {"gs_video": [str(tmp_path / "gs_video/0000_original.mp4")]}
    frames, fps = read_video(tmp_path / "gs_video/0000_original.mp4")
    assert frames.shape == (3, 56, 70 + 8 + 70, 3) and fps == 24
    assert (frames[:, :, 72:76] > 225).all()  # the white gap between colour and depth
    # Colour: the views themselves, blurred by the Gaussians' footprints and by H.264.
    assert np.abs(luma(frames[:, 4:-4, 4:66]) - luma(capture.images[:, 4:-4, 4:66])).mean() < 20
    # Depth panel: nearer pixels get the red end of Spectral, farther the blue end.
    depth_panel = frames[0, :, 78:].astype(int)
    near = capture.depth[0] < np.percentile(capture.depth[0], 20)
    far = capture.depth[0] > np.percentile(capture.depth[0], 80)
    assert depth_panel[near, 0].mean() > depth_panel[far, 0].mean() + 40


def test_gs_video_with_render_cameras_and_metric_scale(splat_scene, tmp_path):
    prediction, capture = splat_scene
    metric = synthetic_prediction(n_views=3, width=70, height=56, gaussians=True)[0]
    metric.is_metric, metric.scale_factor = 1, 2.0
    metric.extrinsics = metric.extrinsics.copy()
    metric.extrinsics[:, :, 3] *= 2.0  # metric translations = Gaussian frame x scale_factor
    export(metric, "gs_video", tmp_path / "metric", gs_video={"trj_mode": "original", "progress": False,
                                                             "vis_depth": None})
    export(prediction, "gs_video", tmp_path / "plain", gs_video={"trj_mode": "original", "progress": False,
                                                                 "vis_depth": None})
    a, b = (read_video(tmp_path / f"{d}/gs_video/0000_original.mp4")[0] for d in ("metric", "plain"))
    np.testing.assert_array_equal(a, b)

    K = capture.intrinsics[:2] * np.array([0.5, 0.5, 1.0])[:, None]
    export(prediction, "gs_video", tmp_path / "custom", render_exts=capture.extrinsics[:2], render_ixts=K,
           render_hw=(28, 36), gs_video={"trj_mode": "original", "progress": False, "video_quality": "low"})
    frames, _ = read_video(tmp_path / "custom/gs_video/0000_original.mp4")
    assert frames.shape == (2, 28, 36 + 8 + 36, 3)


def test_depth_colours_span_log_depth_between_percentiles():
    depth = np.tile(np.geomspace(1.0, 100.0, 200, dtype=np.float32), (1, 10, 1))
    colors = depth_colors(depth).astype(int)
    assert colors.shape == (1, 10, 200, 3)
    assert colors[0, 0, 0, 0] > colors[0, 0, 0, 2] + 50  # nearest: red end
    assert colors[0, 0, -1, 2] > colors[0, 0, -1, 0] + 50  # farthest: blue end
