"""Video Depth Anything inference against upstream-generated outputs (tests/data/vda/expected.npz), plus
the streaming contract: frames are pulled lazily and depths come out as soon as they are final.

The expected arrays come from upstream's own ``infer_video_depth`` / ``infer_video_depth_one`` (fp32, CPU)
on weights from our seeded factory; see scripts/make_vda_expected.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from paths import REPO_ROOT

from da3core.video_depth import infer_streaming, infer_windows, load_model, write_random_checkpoint
from da3core.video_depth.preprocess import network_size
from da3core.video_depth.windowed import crossfade_weights, fit_scale_shift

RTOL = 1e-4  # of the clip's largest depth


@pytest.fixture(scope="module")
def expected():
    with np.load(REPO_ROOT / "tests" / "data" / "vda" / "expected.npz") as data:
        return dict(data)


@pytest.fixture(scope="module")
def relative(tmp_path_factory):
    return load_model(str(write_random_checkpoint(tmp_path_factory.mktemp("rel") / "r.pth", "vits", seed=0)))


@pytest.fixture(scope="module")
def metric(tmp_path_factory):
    path = tmp_path_factory.mktemp("met") / "m.pth"
    return load_model(str(write_random_checkpoint(path, "vits", metric=True, seed=1)))


def _close(ours: np.ndarray, truth: np.ndarray) -> None:
    assert ours.shape == truth.shape and ours.dtype == np.float32
    err = np.abs(ours - truth).max() / np.abs(truth).max()
    assert err < RTOL, f"max relative error {err:.2e}"


class Counting:
    """A frame iterator that records how many frames were pulled."""

    def __init__(self, frames: np.ndarray) -> None:
        self.frames, self.pulled = frames, 0

    def __iter__(self) -> Iterator[np.ndarray]:
        for frame in self.frames:
            self.pulled += 1
            yield frame


@pytest.mark.slow
@pytest.mark.parity
def test_windowed_relative_matches_upstream_reading_lazily(expected, relative):
    n = len(expected["windows_relative"])
    frames = Counting(expected["frames"][:n])
    depths = []
    for i, depth in enumerate(infer_windows(relative, frames, input_size=int(expected["input_size"]))):
        # Depths come out as soon as final: at most one window (32 frames) is read ahead of the yielded one.
        assert frames.pulled - i <= 32 and (i > 0 or frames.pulled == 32)
        depths.append(depth)
    _close(np.stack(depths), expected["windows_relative"])


@pytest.mark.slow
@pytest.mark.parity
def test_batched_windows_match_upstream(expected, relative):
    n = len(expected["windows_relative"])
    out = infer_windows(relative, expected["frames"][:n], input_size=int(expected["input_size"]), windows_per_batch=3)
    _close(np.stack(list(out)), expected["windows_relative"])


@pytest.mark.slow
@pytest.mark.parity
def test_windowed_metric_matches_upstream_without_fit(expected, metric):
    n = len(expected["windows_metric"])
    out = infer_windows(metric, expected["frames"][:n], input_size=int(expected["input_size"]))
    _close(np.stack(list(out)), expected["windows_metric"])


@pytest.mark.slow
@pytest.mark.parity
def test_streaming_matches_upstream(expected, relative):
    n = len(expected["streaming_relative"])
    out = infer_streaming(relative, expected["frames"][:n], input_size=int(expected["input_size"]))
    _close(np.stack(list(out)), expected["streaming_relative"])


def test_network_size_of_a_very_thin_frame_keeps_one_patch():
    """Past a 130:1 aspect upstream's shrunken input size rounds to 0 and resizing fails; here it stays 14."""
    height, width = network_size(8, 1000, 518)
    assert height == 14 and width % 14 == 0 and width >= 14 * 1000 // 8


@pytest.mark.parity
def test_network_size_matches_upstream_resize(expected):
    for h, w, size, net_h, net_w in expected["input_sizes"]:
        assert network_size(int(h), int(w), int(size)) == (net_h, net_w), (h, w, size)


@pytest.mark.slow
def test_streaming_yields_each_depth_before_reading_the_next_frame(expected, relative):
    frames = Counting(expected["frames"][:5])
    for i, depth in enumerate(infer_streaming(relative, frames, input_size=int(expected["input_size"]))):
        assert frames.pulled == i + 1 and depth.shape == expected["frames"].shape[1:3]


def test_short_empty_and_inconsistent_inputs(expected, relative):
    size = int(expected["input_size"])
    assert list(infer_windows(relative, iter([]), input_size=size)) == []
    assert len(list(infer_windows(relative, expected["frames"][:3], input_size=size))) == 3
    mixed = [expected["frames"][0], np.zeros((8, 8, 3), np.uint8)]
    with pytest.raises(ValueError, match="started at"):
        list(infer_windows(relative, mixed, input_size=size))
    with pytest.raises(ValueError, match="uint8 RGB"):
        list(infer_streaming(relative, [expected["frames"][0].astype(np.float32)], input_size=size))
    for infer in (infer_windows, infer_streaming):  # a lost frame is not the end of the video
        with pytest.raises(ValueError, match="frame 1 is None"):
            list(infer(relative, [expected["frames"][0], None, expected["frames"][2]], input_size=size))


def test_fp16_request_runs_fp32_off_cuda(expected, relative):
    frames, size = expected["frames"][:4], int(expected["input_size"])
    a = np.stack(list(infer_streaming(relative, frames, input_size=size, fp32=False)))
    b = np.stack(list(infer_streaming(relative, frames, input_size=size, fp32=True)))
    assert np.array_equal(a, b)


def test_scale_shift_fit_recovers_an_affine_map():
    rng = np.random.default_rng(0)
    pred = rng.random((2 * 20, 24)).astype(np.float32)
    scale, shift = fit_scale_shift(pred, 2.5 * pred + 0.75)
    assert (scale, shift) == (pytest.approx(2.5, rel=1e-4), pytest.approx(0.75, rel=1e-4))
    assert fit_scale_shift(np.ones((4, 4), np.float32), np.ones((4, 4), np.float32)) == (1.0, 0.0)  # singular
    assert crossfade_weights() == pytest.approx([i / 7 for i in range(8)])
