"""colmap: the binary model read back with pycolmap at the source resolution, and against the reference.

COLMAP puts the centre of the top-left pixel at (0.5, 0.5), this project at (0, 0): principal points and
observations must come out half a pixel larger than the prediction's (upstream omits the shift).
"""

from __future__ import annotations

import numpy as np
import pycolmap
import pytest
from export_scenes import oracle_arrays, synthetic_prediction, world_points
from oracle import run_oracle

from da3core.export import export

SOURCE_HW = (112, 175)  # processed 56x70 -> x2 rows, x2.5 cols: a non-uniform resize


@pytest.fixture(scope="module")
def scene():
    prediction, capture = synthetic_prediction(n_views=3, width=70, height=56)
    prediction.source_sizes = np.tile(SOURCE_HW, (3, 1))
    return prediction, capture


@pytest.fixture(scope="module")
def model(scene, tmp_path_factory):
    root = tmp_path_factory.mktemp("colmap")
    paths = export(scene[0], "colmap", root)
    return root, paths, pycolmap.Reconstruction(str(root / "sparse/0"))


def test_cameras_poses_and_points_match_the_scene(scene, model):
    prediction, capture = scene
    root, paths, rec = model
    assert sorted(p.rsplit("/", 1)[1] for p in paths["colmap"]) == [
        "cameras.bin",
        "frames.bin",
        "images.bin",
        "points3D.bin",
        "rigs.bin",
    ]
    scale = np.diag([SOURCE_HW[1] / 70, SOURCE_HW[0] / 56, 1.0])
    assert sorted(rec.images) == [1, 2, 3]
    for i in range(3):
        image = rec.images[i + 1]
        camera = rec.cameras[image.camera_id]
        assert image.name == f"frame_{i:04d}.jpg"
        assert (camera.model.name, camera.height, camera.width) == ("PINHOLE", *SOURCE_HW)
        expected = scale @ capture.intrinsics[i] + np.array([[0, 0, 0.5], [0, 0, 0.5], [0, 0, 0]])
        np.testing.assert_allclose(camera.calibration_matrix(), expected, rtol=1e-6)
        np.testing.assert_allclose(image.cam_from_world().matrix(), capture.extrinsics[i], atol=1e-5)

    conf = prediction.conf
    keep = conf >= np.percentile(conf, 40)
    assert len(rec.points3D) == keep.sum()
    truth = world_points(capture)[keep]
    xyz = np.stack([rec.points3D[p].xyz for p in sorted(rec.points3D)])
    np.testing.assert_allclose(xyz, truth, atol=1e-4)
    np.testing.assert_array_equal(np.stack([rec.points3D[p].color for p in sorted(rec.points3D)]), capture.images[keep])


def test_every_point_reprojects_onto_its_observation_at_the_source_resolution(scene, model):
    prediction, capture = scene
    _, _, rec = model
    scale = np.array([SOURCE_HW[1] / 70, SOURCE_HW[0] / 56])
    errors, off_grid = [], []
    for image in rec.images.values():
        camera = rec.cameras[image.camera_id]
        for p2d in image.points2D:
            assert p2d.has_point3D()
            cam = image.cam_from_world() * rec.points3D[p2d.point3D_id].xyz
            errors.append(np.linalg.norm(camera.img_from_cam(cam) - p2d.xy))
            # Each observation is a processed pixel centre scaled to the source, in COLMAP's convention (+0.5).
            pixel = (p2d.xy - 0.5) / scale
            off_grid.append(np.abs(pixel - np.round(pixel)).max())
    assert len(errors) == len(rec.points3D) and max(errors) < 1e-3
    assert max(off_grid) < 1e-6


@pytest.mark.parity
def test_equals_the_reference_exporter(scene, model):
    prediction = scene[0]
    ref = run_oracle(
        "export_reference.py",
        oracle_arrays(prediction, source_hw=prediction.source_sizes),
        formats=["colmap"],
    )
    _, _, rec = model
    ids = sorted(rec.images)
    # Upstream writes this project's principal point unshifted; ours is COLMAP's, half a pixel further.
    shift = np.array([[0, 0, 0.5], [0, 0, 0.5], [0, 0, 0]])
    np.testing.assert_allclose(
        np.stack([rec.cameras[rec.images[i].camera_id].calibration_matrix() for i in ids]),
        ref["colmap_K"] + shift,
        rtol=1e-6,
    )
    np.testing.assert_array_equal([[rec.cameras[i].height, rec.cameras[i].width] for i in ids], ref["colmap_size"])
    np.testing.assert_allclose(
        np.stack([rec.images[i].cam_from_world().matrix() for i in ids]), ref["colmap_w2c"], atol=1e-6
    )
    xyz = np.stack([rec.points3D[p].xyz for p in sorted(rec.points3D)])
    np.testing.assert_allclose(xyz, ref["colmap_xyz"], atol=1e-5)
    np.testing.assert_array_equal(np.stack([rec.points3D[p].color for p in sorted(rec.points3D)]), ref["colmap_rgb"])


def test_source_names_and_point_cap(tmp_path):
    prediction = synthetic_prediction(n_views=2, width=70, height=56)[0]
    prediction.source_names = ["a.png", "b.png"]
    export(prediction, "colmap", tmp_path, num_max_points=300)
    rec = pycolmap.Reconstruction(str(tmp_path / "sparse/0"))
    assert [rec.images[i].name for i in sorted(rec.images)] == ["a.png", "b.png"]
    assert len(rec.points3D) == 300


def test_crop_preprocessing_is_refused_before_writing(tmp_path):
    prediction = synthetic_prediction(n_views=2, width=70, height=56)[0]
    with pytest.raises(ValueError, match="resize preprocessing.*upper_bound_crop"):
        export(prediction, "colmap", tmp_path, colmap={"process_res_method": "upper_bound_crop"})
    assert not (tmp_path / "sparse").exists()


def test_views_cropped_to_stack_with_other_shapes_get_their_source_cameras_back(tmp_path):
    """A landscape and a portrait view: preprocessing resizes each, then centre-crops both to the common size.
    Given the source cameras, the export must give back exactly those cameras, and each observation must be the
    source pixel the processed pixel came from."""
    from da3core.prediction import Prediction
    from da3core.preprocess import preprocess_images

    rng = np.random.default_rng(3)
    sizes = [(90, 160), (160, 90)]  # (H, W): landscape, portrait
    images = [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for h, w in sizes]
    K = np.array([[[150.0, 0, 79.5], [0, 150.0, 44.5], [0, 0, 1]], [[140.0, 0, 44.5], [0, 141.0, 79.5], [0, 0, 1]]])
    batch = preprocess_images(images, process_res=140, intrinsics=K)
    n, _, h, w = batch.images.shape
    assert (h, w) == (84, 84) and batch.offset.any()  # both were cropped to stack
    prediction = Prediction(
        depth=np.full((n, h, w), 2.0, np.float32),
        conf=np.full((n, h, w), 2.0, np.float32),
        extrinsics=np.tile(np.eye(4)[:3], (n, 1, 1)).astype(np.float32),
        intrinsics=batch.intrinsics,
        processed_images=batch.processed_images,
        source_sizes=batch.source_sizes,
        source_scale=batch.scale,
        source_offset=batch.offset,
    )
    export(prediction, "colmap", tmp_path, conf_thresh_percentile=0)
    rec = pycolmap.Reconstruction(str(tmp_path / "sparse/0"))
    for i in range(n):
        image = rec.images[i + 1]
        camera = rec.cameras[image.camera_id]
        assert (camera.height, camera.width) == sizes[i]
        np.testing.assert_allclose(camera.calibration_matrix(), K[i] + [[0, 0, 0.5], [0, 0, 0.5], [0, 0, 0]], atol=1e-4)
        # Every observation is where the processed pixel's ray meets the source image: K_source @ ray.
        for p2d in image.points2D[:50]:
            ray = image.cam_from_world() * rec.points3D[p2d.point3D_id].xyz
            np.testing.assert_allclose((K[i] @ (ray / ray[2]))[:2] + 0.5, p2d.xy, atol=1e-3)
