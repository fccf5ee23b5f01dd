"""DA3-BENCH readers on the synthetic miniatures: exact cameras and GT, the benchmark's frame rules, S3, errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from da3core.evaluation.datasets import (
    DATASETS,
    BenchmarkDataError,
    DatasetNotFoundError,
    GroundTruthMissingError,
    LayoutError,
    open_dataset,
)
from da3core.geometry import as_homogeneous, intrinsics_from_fov
from da3core.synthetic import make_scene, render_view
from da3core.synthetic.scene import orbit_extrinsics

# How each miniature was rendered: (n_views, width, height) per scene index -> the exact cameras to expect.
RENDERS = {"eth3d": (4, 96, 64), "scannetpp": (4, 64, 48), "hiroom": (4, 64, 48)}
DEPTH_STEP = {"eth3d": 1e-6, "7scenes": 0.0005, "scannetpp": 0.0005, "hiroom": 100 / 65535 / 2}  # storage rounding


def _expected_cameras(name: str, scene_index: int, n_extra: int = 0):
    n, width, height = RENDERS[name]
    K = intrinsics_from_fov(width, height, 65.0)
    return K, as_homogeneous(orbit_extrinsics(n + n_extra, make_scene(scene_index).target)), (height, width)


@pytest.mark.parametrize("name", ["eth3d", "scannetpp", "hiroom"])
def test_reader_yields_the_rendered_cameras_and_depth(bench_root, name):
    dataset = open_dataset(name, bench_root(name))
    for s, scene_name in enumerate(dataset.scenes()):
        scene = dataset.load(scene_name)
        # every scannetpp/hiroom scene and eth3d's electro have one more rendered view, which the reader skips
        extra = int(name != "eth3d" or scene_name == "electro")
        K, exts, (height, width) = _expected_cameras(name, s, n_extra=extra)
        assert len(scene) == 4 and scene.extrinsics.dtype == np.float32
        np.testing.assert_allclose(scene.intrinsics, np.repeat(K[None], 4, 0), rtol=1e-6)
        np.testing.assert_allclose(scene.extrinsics, exts[:4], atol=1e-6)
        for i in (0, 3):
            truth = render_view(make_scene(s), K, exts[i], height, width)[1]
            np.testing.assert_allclose(scene.gt_depth(i), truth, atol=DEPTH_STEP[name] + 1e-6 * truth.max())


def test_7scenes_fixed_intrinsics_pose_inversion_and_the_stairs_sequence(bench_root):
    dataset = open_dataset("7scenes", bench_root("7scenes"))
    assert dataset.scenes() == ["chess", "stairs"]
    stairs = dataset.load("stairs")
    assert all("/stairs/seq-02/" in f for f in stairs.image_files)
    exts = as_homogeneous(orbit_extrinsics(3, make_scene(1).target))
    np.testing.assert_allclose(stairs.extrinsics, exts, atol=1e-6)
    K = np.array([[585.0, 0, 320], [0, 585, 240], [0, 0, 1]])
    np.testing.assert_array_equal(stairs.intrinsics, np.repeat(K[None], 3, 0))
    truth = render_view(make_scene(1), K, exts[1], 480, 640)[1]
    np.testing.assert_allclose(stairs.gt_depth(1), truth, atol=DEPTH_STEP["7scenes"] + 1e-6)


def test_frame_rules_excluded_views_dslr_frames_missing_poses(bench_root):
    electro = open_dataset("eth3d", bench_root("eth3d")).load("electro")
    assert [Path(f).name for f in electro.image_files] == [f"DSC_{1000 + i}.JPG" for i in range(4)]  # DSC_9289 dropped
    scannet = open_dataset("scannetpp", bench_root("scannetpp")).load("09c1414f1b")
    assert all("/images/iphone/" in f for f in scannet.image_files)  # the DSLR frame in the model is skipped
    hiroom = open_dataset("hiroom", bench_root("hiroom"))
    assert hiroom.scenes() == ["synthetic/room_00/cam_00", "synthetic/room_01/cam_00"]
    assert len(hiroom.load("synthetic/room_00/cam_00")) == 4  # 00004.png has no pose


def test_dtu_feeds_view_33_first_and_dtu64_skips_views_without_cameras(bench_root):
    dtu = open_dataset("dtu", bench_root("dtu")).load("scan4")
    names = [Path(f).name for f in dtu.image_files]
    assert names[0] == "rect_034_3_r5000.png" and names[1:34] == [f"rect_{v:03d}_3_r5000.png" for v in range(1, 34)]
    assert dtu.aux["views"][0] == 33 and dtu.aux["obs_mask_file"].endswith("ObsMask4_10.mat")
    assert dtu.valid_mask(0).all()
    dtu64 = open_dataset("dtu64", bench_root("dtu64")).load("scan105")
    assert len(dtu64) == 35 and Path(dtu64.image_files[0]).name == "00000033.png"
    # millimetres: the camera centres lie 2.6 m (2600 mm) from the scene's target horizontally
    assert np.linalg.norm(dtu.extrinsics[:, :3, 3], axis=1).min() > 1000


def test_gt_masks_mark_occluded_and_aliased_pixels(bench_root):
    for name in ("eth3d", "hiroom"):
        dataset = open_dataset(name, bench_root(name))
        scene = dataset.load(dataset.scenes()[0])
        mask = scene.valid_mask(0)
        height, width = mask.shape
        assert not mask[: height // 4, : width // 4].any() and mask.sum() == mask.size - (height // 4) * (width // 4)
        assert scene.valid_mask(1).all()


def test_gt_points_lie_on_the_scene(bench_root):
    from da3core.evaluation import reconstruction_metrics
    from da3core.synthetic import surface_points

    surface = surface_points(make_scene(0), 0.02)
    for name in ("eth3d", "hiroom"):
        dataset = open_dataset(name, bench_root(name))
        points = dataset.load(dataset.scenes()[0]).gt_points(seed=0)
        got = reconstruction_metrics(points[::20], surface, threshold=0.03)
        assert got["precision"] == 1.0 and got["acc"] < 0.02


def test_missing_dataset_folder(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=f"eth3d dataset folder not found: {tmp_path}/nowhere$"):
        open_dataset("eth3d", tmp_path / "nowhere")
    with pytest.raises(ValueError, match="unknown benchmark dataset 'kitti'"):
        open_dataset("kitti", tmp_path)


def test_a_wrong_layout_names_the_expected_path(bench_root):
    with pytest.raises(
        LayoutError,
        match=r"no eth3d scene found under .*/7scenes \(expected e.g. .*/<scene>/dslr_calibration_jpg/images.txt\)",
    ):
        open_dataset("eth3d", bench_root("7scenes")).scenes()


def test_scene_errors_are_one_line_and_leave_other_scenes_readable(bench_root, tmp_path):
    root = shutil.copytree(bench_root("hiroom"), tmp_path / "hiroom")
    shutil.rmtree(root / "data/synthetic/room_00/cam_00/pose")
    (root / "fused_pcd/synthetic-room_01-cam_00.ply").unlink()
    dataset = open_dataset("hiroom", root)
    with pytest.raises(GroundTruthMissingError) as err:
        dataset.load("synthetic/room_00/cam_00")
    assert "\n" not in str(err.value) and str(root / "data/synthetic/room_00/cam_00") in str(err.value)
    other = dataset.load("synthetic/room_01/cam_00")
    assert len(other) == 4
    with pytest.raises(
        GroundTruthMissingError, match="reconstruction ground truth missing: .*synthetic-room_01-cam_00.ply"
    ):
        other.gt_points()
    with pytest.raises(GroundTruthMissingError, match="hiroom scene nowhere not found: no folder .*/data/nowhere"):
        dataset.load("nowhere")


def test_malformed_camera_files_are_layout_errors(bench_root, tmp_path):
    root = shutil.copytree(bench_root("eth3d"), tmp_path / "eth3d")
    (root / "courtyard/dslr_calibration_jpg/cameras.txt").write_text("#\n#\n#\n0 PINHOLE 96 64 fx fy cx cy\n")
    with pytest.raises(LayoutError, match="malformed camera line '0 PINHOLE 96 64 fx fy cx cy' in .*cameras.txt"):
        open_dataset("eth3d", root).load("courtyard")
    assert all(issubclass(e, BenchmarkDataError) for e in (LayoutError, GroundTruthMissingError, DatasetNotFoundError))


@pytest.mark.slow
def test_readers_on_s3_match_the_local_copy(bench_root):
    """The same miniatures uploaded to a moto S3 server read back identically (frames are s3:// URLs)."""
    import s3fs
    from s3server import moto_s3

    with moto_s3() as options:
        fs = s3fs.S3FileSystem(**options)
        for name in DATASETS:
            local = open_dataset(name, bench_root(name))
            fs.put(str(bench_root(name)), f"da3-test/bench/{name}", recursive=True)
            remote = open_dataset(name, f"s3://da3-test/bench/{name}", storage_options=options)
            assert remote.scenes() == local.scenes()
            scene_name = local.scenes()[0]
            a, b = local.load(scene_name), remote.load(scene_name)
            assert [
                f.replace(str(bench_root(name)), f"s3://da3-test/bench/{name}") for f in a.image_files
            ] == b.image_files
            np.testing.assert_array_equal(a.extrinsics, b.extrinsics)
            np.testing.assert_array_equal(a.intrinsics, b.intrinsics)
            mask_a, mask_b = a.valid_mask(0), b.valid_mask(0)
            assert (mask_a is None and mask_b is None) or np.array_equal(mask_a, mask_b)
        with pytest.raises(DatasetNotFoundError, match="s3://da3-test/bench/nothing"):
            open_dataset("eth3d", "s3://da3-test/bench/nothing", storage_options=options)


def test_empty_or_damaged_ground_truth_files_are_layout_errors_naming_the_file(bench_root, tmp_path):
    root = shutil.copytree(bench_root("hiroom"), tmp_path / "hiroom")
    folder = root / "data/synthetic/room_00/cam_00"
    (folder / "cam_K.npy").write_bytes(b"")
    with pytest.raises(LayoutError, match=f"cannot read {folder / 'cam_K.npy'} as a .npy array .*download that"):
        open_dataset("hiroom", root).load("synthetic/room_00/cam_00")
    (folder / "cam_K.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(LayoutError, match="as a .npy array") as err:
        open_dataset("hiroom", root).load("synthetic/room_00/cam_00")
    assert "allow_pickle" not in str(err.value)
    scene = open_dataset("hiroom", root).load("synthetic/room_01/cam_00")
    depth = sorted((root / "data/synthetic/room_01/cam_00/depth").iterdir())[0]
    depth.write_bytes(b"")
    with pytest.raises(LayoutError, match=f"image {depth} is empty \\(0 bytes\\)"):
        open_dataset("hiroom", root).gt_depth(scene, 0)
