"""feat_vis and gs_video: videos read back with PyAV (frames, size, fps), PCA colours and renders checked."""

from __future__ import annotations

from fractions import Fraction

import av
import cv2
import numpy as np
import pytest
import torch
from export_scenes import synthetic_prediction
from PIL import Image

from da3core.export import FORMATS, check_formats, export
from da3core.export.feat_vis import pca_colors
from da3core.export.gs_video import depth_colors

QUIET = {"trj_mode": "original", "enable_tqdm": False, "vis_depth": None}


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
    paths = export(prediction, "gs_video", tmp_path, gs_video={"trj_mode": "original", "enable_tqdm": False})
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


def test_gs_video_metric_cameras_return_to_the_gaussians_frame(splat_scene, tmp_path):
    prediction, _ = splat_scene
    metric = synthetic_prediction(n_views=3, width=70, height=56, gaussians=True)[0]
    metric.is_metric, metric.scale_factor = 1, 2.0
    metric.extrinsics = metric.extrinsics.copy()
    metric.extrinsics[:, :, 3] *= 2.0  # metric translations = Gaussian frame x scale_factor
    export(
        metric,
        "gs_video",
        tmp_path / "metric",
        gs_video={"trj_mode": "original", "enable_tqdm": False, "vis_depth": None},
    )
    export(
        prediction,
        "gs_video",
        tmp_path / "plain",
        gs_video={"trj_mode": "original", "enable_tqdm": False, "vis_depth": None},
    )
    a, b = (read_video(tmp_path / f"{d}/gs_video/0000_original.mp4")[0] for d in ("metric", "plain"))
    np.testing.assert_array_equal(a, b)


def test_depth_colours_span_log_depth_between_percentiles():
    depth = np.tile(np.geomspace(1.0, 100.0, 200, dtype=np.float32), (1, 10, 1))
    colors = depth_colors(depth).astype(int)
    assert colors.shape == (1, 10, 200, 3)
    assert colors[0, 0, 0, 0] > colors[0, 0, 0, 2] + 50  # nearest: red end
    assert colors[0, 0, -1, 2] > colors[0, 0, -1, 0] + 50  # farthest: blue end


# The API doc's gs_video options (upstream export_to_gs_video): each must be accepted and change the video.


def test_extrinsics_and_intrinsics_options_render_from_the_given_cameras(splat_scene, tmp_path):
    prediction, capture = splat_scene
    cams = {"extrinsics": capture.extrinsics[[2, 0]], "intrinsics": capture.intrinsics[[2, 0]]}
    frames, _ = read_video(export(prediction, "gs_video", tmp_path / "a", gs_video={**QUIET, **cams})["gs_video"][0])
    assert frames.shape == (2, 56, 70, 3)
    for frame, view in zip(frames, (2, 0)):  # the given cameras, in the given order
        same = np.abs(luma(frame[4:-4, 4:-4]) - luma(capture.images[view, 4:-4, 4:-4])).mean()
        other = np.abs(luma(frame[4:-4, 4:-4]) - luma(capture.images[2 - view, 4:-4, 4:-4])).mean()
        assert same < 20 and other > same + 5, (same, other)
    K = cams["intrinsics"].copy()
    K[:, 0, 2] += 10  # principal point 10 px to the right: the picture moves 10 px right
    moved, _ = read_video(
        export(prediction, "gs_video", tmp_path / "b", gs_video={**QUIET, **cams, "intrinsics": K})["gs_video"][0]
    )
    assert np.abs(luma(moved[:, 4:-4, 14:66]) - luma(frames[:, 4:-4, 4:56])).mean() < 6
    assert np.abs(luma(moved[:, 4:-4, 14:66]) - luma(frames[:, 4:-4, 14:66])).mean() > 10


def test_upstream_style_torch_cameras_with_a_batch_dimension_are_accepted(splat_scene, tmp_path):
    prediction, capture = splat_scene
    as_torch = {
        "extrinsics": torch.tensor(capture.extrinsics[None, :2]),
        "intrinsics": torch.tensor(capture.intrinsics[None, :2]),
    }
    as_numpy = {"extrinsics": capture.extrinsics[:2], "intrinsics": capture.intrinsics[:2]}
    videos = [
        read_video(export(prediction, "gs_video", tmp_path / name, gs_video={**QUIET, **cams})["gs_video"][0])[0]
        for name, cams in (("torch", as_torch), ("numpy", as_numpy))
    ]
    np.testing.assert_array_equal(*videos)


@pytest.mark.parametrize(
    "vis_depth, frame_hw", [(None, (28, 36)), ("hcat", (28, 36 + 8 + 36)), ("vcat", (28 + 8 + 28, 36))]
)
def test_out_image_hw_sets_the_frame_size_and_rescales_the_cameras(splat_scene, tmp_path, vis_depth, frame_hw):
    prediction, capture = splat_scene
    options = {**QUIET, "vis_depth": vis_depth, "out_image_hw": (28, 36), "video_quality": "low"}
    frames, _ = read_video(export(prediction, "gs_video", tmp_path, gs_video=options)["gs_video"][0])
    assert frames.shape == (3, *frame_hw, 3)
    # Without intrinsics the predicted ones are rescaled: the frames are the views, shrunk.
    small = np.stack([cv2.resize(im, (36, 28), interpolation=cv2.INTER_AREA) for im in capture.images])
    assert np.abs(luma(frames[:, 3:25, 3:33]) - luma(small[:, 3:25, 3:33])).mean() < 20


def test_color_mode_chooses_expected_or_accumulated_depth(tmp_path):
    prediction, capture = synthetic_prediction(n_views=3, width=70, height=56, gaussians=True)
    column = np.tile(np.arange(70), (3, 56, 1)).reshape(-1)
    prediction.gaussians.opacities = np.where(column < 35, 0.95, 0.15).astype(np.float32)  # a faint right half
    truth = depth_colors(capture.depth).astype(int)
    errors = {}
    for mode in ("RGB+ED", "RGB+D"):
        options = {**QUIET, "vis_depth": "hcat", "color_mode": mode}
        frames, _ = read_video(export(prediction, "gs_video", tmp_path / mode, gs_video=options)["gs_video"][0])
        errors[mode] = np.abs(frames[:, 4:-4, 78 + 4 : -4].astype(int) - truth[:, 4:-4, 4:-4]).mean()
    # Expected depth is normalised by opacity, so it is the true depth; accumulated depth shrinks with opacity.
    assert errors["RGB+ED"] < 20 and errors["RGB+D"] > errors["RGB+ED"] + 20, errors


def test_output_name_names_the_file(splat_scene, tmp_path):
    written = export(splat_scene[0], "gs_video", tmp_path, gs_video={**QUIET, "output_name": "fly through"})
    assert written == {"gs_video": [str(tmp_path / "gs_video/fly through.mp4")]}
    assert sorted(p.name for p in (tmp_path / "gs_video").iterdir()) == ["fly through.mp4"]
    assert read_video(tmp_path / "gs_video/fly through.mp4")[0].shape == (3, 56, 70, 3)


def test_enable_tqdm_shows_or_hides_the_progress_bar(splat_scene, tmp_path, capfd):
    for enable in (True, False):
        export(splat_scene[0], "gs_video", tmp_path / str(enable), gs_video={**QUIET, "enable_tqdm": enable})
        assert ("Rendering Gaussians" in capfd.readouterr().err) is enable


@pytest.mark.parametrize(
    "options, message",
    [
        ({"color_mode": "RGB"}, r"unknown color_mode 'RGB'; choose one of RGB\+ED, RGB\+D"),
        ({"extrinsics": np.eye(3)}, r"extrinsics must be finite \(M, 3\|4, 4\) world-to-camera matrices, got shape"),
        (
            {"intrinsics": np.zeros((2, 3, 4))},
            r"intrinsics must be finite \(M, 3, 3\) or \(3, 3\) matrices, got shape \(2",
        ),
        ({"extrinsics": np.full((2, 3, 4), np.nan)}, "extrinsics must be finite"),
        ({"extrinsics": "cameras.npy"}, "extrinsics must be a numeric array, got str"),
        (
            {"extrinsics": np.tile(np.eye(4), (3, 1, 1)), "intrinsics": np.tile(np.eye(3), (2, 1, 1))},
            "3 extrinsics but 2 intrinsics",
        ),
        ({"out_image_hw": (28,)}, "out_image_hw must be two positive integers"),
        ({"out_image_hw": (0, 36)}, "out_image_hw must be two positive integers"),
        ({"output_name": "../elsewhere"}, "output_name must be a plain file name"),
        ({"output_name": ""}, "output_name must be a plain file name"),
        ({"enable_tqdm": "yes"}, "enable_tqdm must be true or false"),
        ({"chunk_size": 0}, "chunk_size must be a positive integer"),
    ],
)
def test_bad_gs_video_options_fail_in_one_line_before_inference_and_before_writing(
    splat_scene, tmp_path, options, message
):
    with pytest.raises(ValueError, match=message) as info:
        FORMATS["gs_video"].check_options(options)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match=message):  # what inference callers run first
        check_formats("gs_video", has_conf=True, has_gaussians=True, has_features=False, options={"gs_video": options})
    with pytest.raises(ValueError, match=message):
        export(splat_scene[0], "gs_video", tmp_path / "out", gs_video=options)
    assert not (tmp_path / "out").exists()


def test_the_api_doc_option_names_are_all_accepted():
    FORMATS["gs_video"].check_options(
        dict(
            extrinsics=None,
            intrinsics=None,
            out_image_hw=None,
            chunk_size=4,
            trj_mode="extend",
            color_mode="RGB+ED",
            vis_depth="hcat",
            enable_tqdm=True,
            output_name=None,
            video_quality="high",
        )
    )
    with pytest.raises(TypeError, match=r"'gs_video' has no option\(s\) \['render_mode'\]"):
        check_formats(
            "gs_video",
            has_conf=True,
            has_gaussians=True,
            has_features=False,
            options={"gs_video": {"render_mode": "RGB+D"}},
        )


def test_extrinsics_without_matching_intrinsics_name_the_fix(splat_scene, tmp_path):
    prediction, capture = splat_scene  # three predicted intrinsics cannot serve two render cameras
    with pytest.raises(ValueError, match="renders 2 cameras but has 3 intrinsics; pass intrinsics for the given"):
        export(prediction, "gs_video", tmp_path, gs_video={**QUIET, "extrinsics": capture.extrinsics[:2]})
    assert not (tmp_path / "gs_video").exists()
