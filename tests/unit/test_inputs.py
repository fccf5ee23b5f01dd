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
