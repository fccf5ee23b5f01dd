"""Frame selection and streaming decode for video depth: Annolid's integer stride, the max_res rule, and the
decord and PyAV paths of ``iter_frames`` agreeing with each other."""

from __future__ import annotations

import numpy as np
import pytest

from da3core.io import video as video_io
from da3core.synthetic import encode_frames, pattern_frames


def test_integer_stride_matches_annolid_positions():
    # Annolid: range(0, total, max(round(fps / target_fps), 1)), truncated to max_len.
    for n, fps, target, max_len in [(100, 30.0, 7.0, None), (50, 29.97, 10.0, 4), (10, 30.0, 60.0, None)]:
        stride = max(round(fps / target), 1)
        expected = list(range(0, n, stride))[:max_len]
        assert video_io.sample_frame_indices(n, fps, target, max_len, integer_stride=True).tolist() == expected
    assert video_io.sample_frame_indices(100, 30.0, 7.0)[:3].tolist() == [0, 4, 9]  # the time-based default differs


def test_fit_max_res_caps_the_long_side_with_even_sizes():
    assert video_io.fit_max_res(720, 1280, 1280) == (720, 1280)
    assert video_io.fit_max_res(1080, 1440, 1280) == (960, 1280)  # upstream issue #73's example
    assert video_io.fit_max_res(1081, 1921, 1280) == (720, 1280)
    assert video_io.fit_max_res(101, 333, 100) == (30, 100)  # round(30.3) = 30, already even
    assert video_io.fit_max_res(56, 70, -1) == (56, 70)
    assert video_io.fit_max_res(8, 1000, 64) == (2, 64)  # a thin side keeps 2 pixels, never 0


@pytest.fixture(scope="module")
def pattern_video(tmp_path_factory):
    return encode_frames(pattern_frames(30, 48, 64), tmp_path_factory.mktemp("v") / "p.mp4", fps=25.0)


def test_decord_and_pyav_paths_agree(pattern_video, monkeypatch):
    indices = np.array([0, 3, 4, 17, 29])
    with_decord = list(video_io.iter_frames(pattern_video.path, indices, chunk=2))
    monkeypatch.setattr(video_io, "decord", None)
    with_pyav = list(video_io.iter_frames(pattern_video.path, indices))
    assert [i for i, _, _ in with_decord] == [i for i, _, _ in with_pyav] == indices.tolist()
    np.testing.assert_allclose([t for _, t, _ in with_decord], indices / 25.0, atol=1e-6)
    np.testing.assert_allclose([t for _, t, _ in with_pyav], indices / 25.0, atol=1e-6)
    for (_, _, a), (_, _, b) in zip(with_decord, with_pyav):
        assert a.shape == b.shape == (48, 64, 3) and np.abs(a.astype(int) - b.astype(int)).mean() < 2
    resized = next(video_io.iter_frames(pattern_video.path, indices[:1], size=(24, 32)))[2]
    assert resized.shape == (24, 32, 3) and resized.dtype == np.uint8
    with pytest.raises(video_io.VideoError, match="ended before frame 40"):
        list(video_io.iter_frames(pattern_video.path, np.array([1, 40])))
