"""Scene discovery: every input kind, COLMAP cameras read back exactly, and one-line errors for bad input."""

from __future__ import annotations

import numpy as np
import pytest

from da3core.io.inputs import InputError, discover_scene, load_views
from da3core.synthetic import write_colmap


def test_image_folder(image_folder, capture):
    scene = discover_scene(image_folder)
    assert scene.kind == "images" and len(scene) == len(capture)
    assert scene.names == sorted(scene.names) and all(len(f["sha256"]) == 64 for f in scene.files)
    views = load_views(scene)
    assert np.array_equal(np.stack(views), capture.images)  # PNG is lossless


def test_single_image(image_folder):
    first = sorted(image_folder.iterdir())[0]
    scene = discover_scene(first)
    assert scene.kind == "image" and scene.names == [first.name]


def test_video_sampling(video_file):
    scene = discover_scene(video_file, fps=7.0)
    assert scene.kind == "video"
    assert scene.frame_indices == [0, 4, 9, 13, 17, 21, 26, 30, 34, 39, 43, 47, 51, 56]
    np.testing.assert_allclose(scene.timestamps, np.array(scene.frame_indices) / 30.0)
    assert len(load_views(scene)) == 14
    assert discover_scene(video_file, fps=0).frame_indices == list(range(60))


@pytest.mark.parametrize("subdir", ["sparse/0", "sparse"])
def test_colmap_poses_and_intrinsics(capture, tmp_path, subdir):
    write_colmap(capture, tmp_path, sparse_subdir=subdir, text=subdir == "sparse")
    scene = discover_scene(tmp_path)
    assert scene.kind == "colmap" and len(scene) == len(capture)
    np.testing.assert_allclose(scene.extrinsics, capture.extrinsics, atol=1e-9)
    np.testing.assert_allclose(scene.intrinsics, capture.intrinsics, atol=1e-9)


def test_colmap_sparse_subdir_as_upstream_and_max_frames(capture, tmp_path):
    write_colmap(capture, tmp_path, sparse_subdir="sparse/1")
    names = sorted(p.name for p in (tmp_path / "images").iterdir())
    for subdir in ("sparse/1", "1"):  # upstream's CLI documents --sparse-subdir 0 for sparse/0
        assert len(discover_scene(tmp_path, sparse_subdir=subdir)) == len(capture)
    with pytest.raises(InputError, match="has no model"):
        discover_scene(tmp_path, sparse_subdir="2")
    first = discover_scene(tmp_path, sparse_subdir="1", max_frames=3)
    assert first.names == names[:3] and len(first.extrinsics) == 3 and len(first.intrinsics) == 3
    np.testing.assert_allclose(first.extrinsics, capture.extrinsics[:3], atol=1e-9)
    for everything in (0, -1, None):
        assert len(discover_scene(tmp_path, sparse_subdir="1", max_frames=everything)) == len(capture)


def test_bad_inputs_fail_with_one_line(tmp_path, capture):
    cases = {
        "missing": (tmp_path / "nope", "input not found"),
        "empty": (tmp_path / "empty", "no images in"),
        "colmap_without_model": (tmp_path / "colmap", "has no model"),
        "text": (tmp_path / "notes.txt", "unsupported file type"),
    }
    (tmp_path / "empty").mkdir()
    (tmp_path / "colmap" / "images").mkdir(parents=True)
    (tmp_path / "colmap" / "sparse").mkdir()
    (tmp_path / "notes.txt").write_text("hello")
    for name, (path, message) in cases.items():
        with pytest.raises(InputError, match=message) as info:
            discover_scene(path)
        assert "\n" not in str(info.value), name


def test_corrupt_image_is_named(tmp_path, image_folder):
    import shutil

    folder = tmp_path / "imgs"
    shutil.copytree(image_folder, folder)
    bad = sorted(folder.iterdir())[2]
    bad.write_bytes(bad.read_bytes()[:200])  # truncated PNG
    scene = discover_scene(folder)
    with pytest.raises(InputError, match=bad.name):
        load_views(scene)


def _png(path, samples: np.ndarray, color_type: int) -> None:
    """A minimal PNG written byte by byte (filter 0 rows, zlib), independent of the readers under test."""
    import struct
    import zlib

    h, w = samples.shape[:2]
    depth = 16 if samples.dtype == np.uint16 else 8
    rows = samples.reshape(h, -1).astype(">u2" if depth == 16 else "u1")
    raw = b"".join(b"\0" + row.tobytes() for row in rows)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )


def _to8(v: np.ndarray) -> np.ndarray:
    return np.floor(v.astype(np.float64) / 257.0 + 0.5).astype(np.uint8)  # round(v * 255 / 65535)


def test_image_modes_read_as_rgb8(tmp_path):
    """16-bit samples are scaled (not clipped), gray and palette become RGB, alpha is dropped; each case is compared
    with the value computed here from the samples that were written."""
    import cv2
    from PIL import Image

    from da3core.io.inputs import read_image

    rng = np.random.default_rng(7)
    g16 = rng.integers(0, 65536, (5, 6), dtype=np.uint16)
    c16 = rng.integers(0, 65536, (5, 6, 4), dtype=np.uint16)
    g8 = rng.integers(0, 256, (5, 6), dtype=np.uint8)
    c8 = rng.integers(0, 256, (5, 6, 4), dtype=np.uint8)
    palette = rng.integers(0, 256, (256, 3), dtype=np.uint8)
    gray = lambda a: np.repeat(a[..., None], 3, axis=2)  # noqa: E731
    cases = {
        "gray16.png": (lambda p: _png(p, g16, 0), gray(_to8(g16))),
        "rgb16.png": (lambda p: _png(p, c16[..., :3], 2), _to8(c16[..., :3])),
        "rgba16.png": (lambda p: _png(p, c16, 6), _to8(c16[..., :3])),
        "gray_alpha16.png": (lambda p: _png(p, c16[..., :2], 4), gray(_to8(c16[..., 0]))),
        "gray8.png": (lambda p: _png(p, g8, 0), gray(g8)),
        "gray_alpha8.png": (lambda p: _png(p, c8[..., :2], 4), gray(c8[..., 0])),
        "rgba8.png": (lambda p: _png(p, c8, 6), c8[..., :3]),
        "palette.png": (lambda p: _indexed(p, g8, palette), palette[g8]),
        "rgb16.tif": (lambda p: cv2.imwrite(str(p), c16[..., 2::-1]), _to8(c16[..., :3])),
        "gray16.tif": (lambda p: cv2.imwrite(str(p), g16), gray(_to8(g16))),
    }
    for name, (write, expected) in cases.items():
        write(tmp_path / name)
        got = read_image(tmp_path / name)
        assert got.dtype == np.uint8 and got.shape == (5, 6, 3), name
        np.testing.assert_array_equal(got, expected, err_msg=name)
    assert Image.open(tmp_path / "palette.png").mode == "P"
    assert _to8(np.array([0, 128, 129, 65535])).tolist() == [0, 0, 1, 255]  # the rule itself: v / 257, rounded


def _indexed(path, indices: np.ndarray, palette: np.ndarray) -> None:
    from PIL import Image

    im = Image.frombytes("P", indices.shape[::-1], indices.tobytes())
    im.putpalette(palette.ravel().tolist())
    im.save(path)


def test_max_frames_zero_or_negative_means_all(image_folder, video_file, capture):
    from da3core.io.video import sample_frame_indices

    for limit in (None, 0, -1):
        assert len(discover_scene(image_folder, max_frames=limit)) == len(capture), limit
        assert discover_scene(video_file, fps=0, max_frames=limit).frame_indices == list(range(60)), limit
        assert sample_frame_indices(10, 30.0, None, limit).tolist() == list(range(10)), limit
    assert discover_scene(image_folder, max_frames=3).names == sorted(p.name for p in image_folder.iterdir())[:3]
    assert discover_scene(video_file, fps=0, max_frames=4).frame_indices == [0, 1, 2, 3]


def test_file_records_name_the_file_within_the_scene(image_folder, colmap_dataset):
    scene = discover_scene(image_folder)
    assert [f["name"] for f in scene.files] == scene.names
    colmap = discover_scene(colmap_dataset)
    names = {f["name"] for f in colmap.files}
    assert {f"images/{n}" for n in colmap.names} <= names and any(n.startswith("sparse/0/") for n in names)


def test_a_device_or_fifo_is_not_a_scene(tmp_path):
    """Neither a file nor a folder: one InputError (it used to be a NotADirectoryError from listing it)."""
    import os

    fifo = tmp_path / "clip.mp4"
    os.mkfifo(fifo)
    for path in (fifo, "/dev/null"):
        with pytest.raises(InputError, match="is not a regular file or folder"):
            discover_scene(path)


def test_colmap_images_resized_after_colmap_scale_their_cameras(capture, tmp_path):
    """Images downscaled 2x after COLMAP ran (as in datasets' images_2/ folders) get intrinsics scaled about the
    image corner; a crop (another aspect ratio) is refused."""
    from PIL import Image

    write_colmap(capture, tmp_path)
    for path in (tmp_path / "images").iterdir():
        with Image.open(path) as image:
            image.resize((image.width // 2, image.height // 2)).save(path)
    scene = discover_scene(tmp_path)
    expected = capture.intrinsics.astype(np.float64).copy()
    expected[:, :2, 2] += 0.5  # to COLMAP's corner-origin pixels, scale, and back
    expected[:, :2] *= 0.5
    expected[:, :2, 2] -= 0.5
    np.testing.assert_allclose(scene.intrinsics, expected, atol=1e-9)
    first = sorted((tmp_path / "images").iterdir())[0]
    with Image.open(first) as image:
        image.crop((0, 0, image.width // 2, image.height)).save(first)
    with pytest.raises(InputError, match="another aspect ratio"):
        discover_scene(tmp_path)


def test_an_input_rewritten_after_hashing_is_refused_not_recorded(image_folder, video_file, tmp_path, monkeypatch):
    import shutil
    import time

    from PIL import Image

    import da3core.io.inputs as inputs

    folder = tmp_path / "images"
    shutil.copytree(image_folder, folder)
    scene = discover_scene(folder)
    first = sorted(folder.iterdir())[0]
    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(first)  # a writer replaces a view after the listing
    with pytest.raises(InputError, match=f"input file {first} changed while this run read it"):
        load_views(scene)
    assert len(load_views(scene, [1, 2])) == 2  # the untouched views still decode

    video = tmp_path / video_file.name
    shutil.copy(video_file, video)
    scene = discover_scene(video, fps=7.0)
    time.sleep(0.05)  # past the file system's timestamp tick
    with open(video, "r+b") as f:  # same size, new bytes
        f.seek(-1, 2)
        last = f.read(1)[0]
        f.seek(-1, 2)
        f.write(bytes([last ^ 0xFF]))
    with pytest.raises(InputError, match="changed while this run read it"):
        load_views(scene)

    real = inputs.sha256_file

    def written_while_hashed(path, chunk=1 << 20):
        digest = real(path, chunk)
        with open(path, "ab") as f:
            f.write(b"\x00")
        return digest

    monkeypatch.setattr(inputs, "sha256_file", written_while_hashed)
    with pytest.raises(InputError, match="changed while this run read it"):
        discover_scene(video, fps=7.0)


def test_lens_distortion_of_colmap_cameras_is_named_not_silently_dropped(capture, tmp_path, caplog):
    import pycolmap

    write_colmap(capture, tmp_path)
    discover_scene(tmp_path)
    assert "distortion" not in caplog.text  # pinhole cameras: nothing to say
    rec = pycolmap.Reconstruction(str(tmp_path / "sparse" / "0"))
    for camera_id, camera in list(rec.cameras.items()):
        fx, fy, cx, cy = camera.params
        distorted = pycolmap.Camera.create_from_model_name(camera_id, "OPENCV", fx, camera.width, camera.height)
        distorted.params = [fx, fy, cx, cy, -0.08, 0.01, 0.001, -0.001]
        rec.cameras[camera_id] = distorted
    rec.write(str(tmp_path / "sparse" / "0"))
    scene = discover_scene(tmp_path)
    assert len(scene) == len(capture)
    assert f"{len(rec.cameras)} COLMAP camera(s) (OPENCV) have lens distortion" in caplog.text
    assert "colmap image_undistorter" in caplog.text
