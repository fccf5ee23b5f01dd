"""The synthetic scenes are exact: cross-view geometry, known room planes, COLMAP and video round trips."""

from __future__ import annotations

import numpy as np
import pycolmap
import pytest

from da3core.geometry import COLMAP_PIXEL_OFFSET, depth_to_world_points, intrinsics_from_colmap, project_points
from da3core.io import video as video_io
from da3core.synthetic import make_capture, write_colmap
from da3core.synthetic.scene import ROOM_HALF_SIZE, ROOM_HEIGHT


def _sample_inverse_depth(depth: np.ndarray, ids: np.ndarray, uv: np.ndarray, surface: np.ndarray):
    """Bilinear inverse depth at uv where all 4 neighbours lie on ``surface`` (exact for planes)."""
    h, w = depth.shape
    x0, y0 = np.floor(uv[:, 0]).astype(int), np.floor(uv[:, 1]).astype(int)
    inside = (x0 >= 0) & (y0 >= 0) & (x0 + 1 < w) & (y0 + 1 < h)
    x0, y0, uv, surface = x0[inside], y0[inside], uv[inside], surface[inside]
    same = np.ones(len(x0), bool)
    for dy in (0, 1):
        for dx in (0, 1):
            same &= ids[y0 + dy, x0 + dx] == surface
    fx, fy = uv[:, 0] - x0, uv[:, 1] - y0
    inv = 1.0 / depth.astype(np.float64)
    interp = (
        inv[y0, x0] * (1 - fx) * (1 - fy)
        + inv[y0, x0 + 1] * fx * (1 - fy)
        + inv[y0 + 1, x0] * (1 - fx) * fy
        + inv[y0 + 1, x0 + 1] * fx * fy
    )
    return inside, same, interp


def test_cross_view_depth_agrees(capture):
    n, h, w = capture.depth.shape
    for i in range(n):
        world = depth_to_world_points(capture.depth[i].astype(np.float64), capture.intrinsics[i], capture.extrinsics[i])
        for j in range(n):
            if i == j:
                continue
            uv, z = project_points(world.reshape(-1, 3), capture.intrinsics[j], capture.extrinsics[j])
            front = z > 0
            inside, same, inv_j = _sample_inverse_depth(
                capture.depth[j], capture.surface_ids[j], uv[front], capture.surface_ids[i].reshape(-1)[front]
            )
            z = z[front][inside][same]
            rel = np.abs(1.0 / inv_j[same] - z) / z
            # Views on the arc overlap by at least a few percent, neighbours by far more.
            assert same.sum() > (0.5 if abs(i - j) == 1 else 0.03) * h * w, f"few co-visible pixels in {i}->{j}"
            assert rel.max() < 1e-3, f"views {i}->{j}: max relative depth error {rel.max():.2e}"


def test_room_planes_unproject_to_their_known_coordinates(capture):
    # Surface ids 0..5 are floor, ceiling and the four walls at known coordinates.
    expected = {
        0: (2, 0.0),
        1: (2, ROOM_HEIGHT),
        2: (1, -ROOM_HALF_SIZE),
        3: (1, ROOM_HALF_SIZE),
        4: (0, -ROOM_HALF_SIZE),
        5: (0, ROOM_HALF_SIZE),
    }
    seen = set()
    for i in range(len(capture)):
        world = depth_to_world_points(capture.depth[i].astype(np.float64), capture.intrinsics[i], capture.extrinsics[i])
        for sid, (axis, value) in expected.items():
            mask = capture.surface_ids[i] == sid
            if mask.any():
                seen.add(sid)
                # float32 depth storage bounds the error at about 1e-7 relative
                assert np.abs(world[mask][:, axis] - value).max() < 1e-5 * max(1.0, abs(value)) + 1e-5
    assert {0, 4, 5} <= seen or len(seen) >= 3


def test_same_seed_same_scene_other_seed_other_scene():
    a, b = make_capture(3, 64, 48, seed=5), make_capture(3, 64, 48, seed=5)
    c = make_capture(3, 64, 48, seed=6)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.depth, b.depth)
    assert not np.array_equal(a.images, c.images)
    assert (a.depth > 0).all(), "the closed room must cover every pixel"


@pytest.mark.parametrize("text,subdir", [(False, "sparse/0"), (True, "sparse/0"), (False, "sparse"), (True, "sparse")])
def test_colmap_round_trip(capture, tmp_path, text, subdir):
    model_dir = write_colmap(capture, tmp_path, sparse_subdir=subdir, text=text)
    suffix = ".txt" if text else ".bin"
    assert (model_dir / f"cameras{suffix}").is_file() and (model_dir / f"images{suffix}").is_file()
    rec = pycolmap.Reconstruction(str(model_dir))
    assert rec.num_images() == len(capture)
    names = sorted(p.name for p in (tmp_path / "images").iterdir())
    for image in rec.images.values():
        i = image.image_id - 1
        assert image.name == names[i]
        K = intrinsics_from_colmap(rec.cameras[image.camera_id].calibration_matrix())
        assert np.abs(K - capture.intrinsics[i]).max() < 1e-6
        pose = image.cam_from_world().matrix()
        assert np.abs(pose - capture.extrinsics[i]).max() < 1e-6
    assert rec.num_points3D() > 100
    for point in list(rec.points3D.values())[:200]:
        assert point.track.length() >= 2
        for el in point.track.elements:
            image = rec.images[el.image_id]
            uv, _ = project_points(
                point.xyz, capture.intrinsics[image.image_id - 1], capture.extrinsics[image.image_id - 1]
            )
            assert np.abs(image.points2D[el.point2D_idx].xy - COLMAP_PIXEL_OFFSET - uv).max() < 1e-6


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_video_sampling_yields_expected_frames(video_capture, video_file, backend, monkeypatch):
    if backend == "pyav":
        monkeypatch.setattr(video_io, "decord", None)
    elif video_io.decord is None:
        pytest.skip("decord has no wheel for this platform")
    meta = video_io.probe_video(video_file)
    assert (meta.n_frames, meta.fps, meta.width, meta.height) == (60, 30.0, 160, 120)
    indices = video_io.sample_frame_indices(meta.n_frames, meta.fps, 7.0)
    assert indices.tolist() == [0, 4, 9, 13, 17, 21, 26, 30, 34, 39, 43, 47, 51, 56]
    frames, stamps = video_io.read_frames(video_file, indices)
    np.testing.assert_allclose(stamps, indices / 30.0, atol=1e-6)
    # Identify each decoded frame by its nearest rendered frame (H.264 is lossy).
    err = ((frames[:, None].astype(np.float32) - video_capture.images[None].astype(np.float32)) ** 2).mean((2, 3, 4))
    assert err.argmin(1).tolist() == indices.tolist()


def test_frame_index_sampling_rules():
    assert video_io.sample_frame_indices(10, 30.0, None).tolist() == list(range(10))
    assert video_io.sample_frame_indices(10, 30.0, 60.0).tolist() == list(range(10))
    assert video_io.sample_frame_indices(100, 29.97, 10.0, max_frames=4).tolist() == [0, 3, 6, 9]
    assert video_io.sample_frame_indices(0, 30.0, 1.0).tolist() == []


def test_missing_and_corrupt_video_fail_clearly(tmp_path):
    with pytest.raises(video_io.VideoError, match="not found"):
        video_io.probe_video(tmp_path / "absent.mp4")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 1000)
    with pytest.raises(video_io.VideoError, match="cannot open video"):
        video_io.probe_video(bad)


def test_bundled_sample_is_small_and_reproducible(tmp_path):
    import importlib.util

    from paths import REPO_ROOT

    sample = REPO_ROOT / "samples" / "room"
    size = sum(p.stat().st_size for p in sample.rglob("*") if p.is_file())
    assert size < 2 * 1024 * 1024, f"bundled sample is {size} bytes"
    spec = importlib.util.spec_from_file_location("make_sample", REPO_ROOT / "scripts" / "make_sample.py")
    make_sample = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_sample)
    make_sample.main(tmp_path)
    bundled, fresh = (
        pycolmap.Reconstruction(str(sample / "sparse/0")),
        pycolmap.Reconstruction(str(tmp_path / "sparse/0")),
    )
    assert bundled.num_images() == fresh.num_images() == make_sample.SAMPLE_VIEWS
    for image_id, image in bundled.images.items():
        other = fresh.images[image_id]
        assert image.name == other.name
        assert np.abs(image.cam_from_world().matrix() - other.cam_from_world().matrix()).max() < 1e-9
