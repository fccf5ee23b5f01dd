"""The reconstruction modes on the miniatures: exact depth under a moved, scaled world fuses onto the GT surface."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from da3core.evaluation.datasets import open_dataset
from da3core.evaluation.recon_mode import evaluate_reconstruction, fusion_inputs, reconstruct
from da3core.pose_align import apply_sim3_to_extrinsics

SIM3 = (0.5, Rotation.from_euler("xyz", [10, 20, 30], degrees=True).as_matrix(), np.array([0.3, -0.2, 1.0]))


@pytest.fixture(scope="module")
def eth3d_scene(bench_root):
    return open_dataset("eth3d", bench_root("eth3d")).load("courtyard")


def _prediction(scene):
    """GT depth and cameras as seen in a world moved by SIM3 (the model's arbitrary frame and scale)."""
    depth = np.stack([scene.gt_depth(i) for i in range(len(scene))]) * SIM3[0]
    return depth, scene.intrinsics, apply_sim3_to_extrinsics(scene.extrinsics, *SIM3)


def test_unposed_inputs_undo_the_similarity_and_apply_the_gt_mask(eth3d_scene):
    depth, K, ext = _prediction(eth3d_scene)
    inputs = fusion_inputs(eth3d_scene, depth, K, ext, posed=False)
    np.testing.assert_allclose(inputs.extrinsics[:, :3], eth3d_scene.extrinsics[:, :3], atol=1e-5)
    truth = np.stack([eth3d_scene.gt_depth(i) for i in range(len(eth3d_scene))])
    mask = np.stack([eth3d_scene.valid_mask(i) for i in range(len(eth3d_scene))])
    np.testing.assert_allclose(inputs.depths[mask], truth[mask], rtol=1e-5)
    assert (inputs.depths[~mask] == 0).all() and (~mask).sum() > 0  # the occluded block of view 0
    np.testing.assert_allclose(inputs.intrinsics, K)
    posed = fusion_inputs(eth3d_scene, depth, K, ext, posed=True)
    np.testing.assert_array_equal(posed.extrinsics, eth3d_scene.extrinsics)


def test_exact_prediction_fuses_onto_the_gt_surface(eth3d_scene):
    depth, K, ext = _prediction(eth3d_scene)
    metrics = evaluate_reconstruction(eth3d_scene, reconstruct(eth3d_scene, depth, K, ext, posed=False))
    voxel = eth3d_scene.reader.fusion.voxel_length
    # Every fused point lies on the GT mesh (precision 1, mean error under half a voxel); recall stays below 1 because
    # four views of the room do not see all of it.
    assert metrics["precision"] == 1.0 and metrics["acc"] < voxel / 2 and 0.2 < metrics["recall"] < 1


def test_recon_modes_reject_dtu_and_mismatched_predictions(bench_root, eth3d_scene):
    dtu = open_dataset("dtu", bench_root("dtu")).load("scan1")
    with pytest.raises(ValueError, match="dtu has no TSDF reconstruction mode"):
        fusion_inputs(dtu, np.ones((len(dtu), 4, 4)), dtu.intrinsics, dtu.extrinsics, posed=True)
    depth, K, ext = _prediction(eth3d_scene)
    with pytest.raises(ValueError, match="courtyard has 4 frames but the prediction has 3 depths"):
        fusion_inputs(eth3d_scene, depth[:3], K, ext, posed=False)


@pytest.mark.slow
def test_dtu_exact_depth_fuses_onto_the_scan(bench_root):
    from da3core.evaluation import dtu_evaluate, dtu_reconstruct
    from da3core.synthetic import make_scene, render_view
    from da3core.synthetic.bench_layouts import GT_CLOUD_SPACING

    scene = open_dataset("dtu", bench_root("dtu")).load("scan4")
    metres = scene.extrinsics.astype(np.float64)
    metres[:, :3, 3] /= 1000
    depth = (
        np.stack(
            [
                render_view(make_scene(1), scene.intrinsics[i].astype(np.float64), metres[i], 36, 48)[1]
                for i in range(len(scene))
            ]
        )
        * 1000
    )  # millimetres, at the mask resolution
    spacing_mm = GT_CLOUD_SPACING * 1000
    for posed in (True, False):
        points = dtu_reconstruct(scene, depth.astype(np.float32), scene.intrinsics, scene.extrinsics, posed)
        metrics = dtu_evaluate(scene, points)
        # Exact depth lies on the scan's planes; what remains is the scan's own grid (a point on a plane is on average
        # 0.38 grid steps from the nearest grid point), so both directions stay under half a step.
        assert len(points) > 10000 and metrics["acc"] < spacing_mm / 2 and metrics["comp"] < spacing_mm / 2, posed


def _fuse_with_open3d(capture, intrinsics, voxel, trunc):
    """Blocks that hold observed voxels after Open3D integrates ``capture`` (independent of tsdf_blocks)."""
    import open3d as o3d

    from da3core.geometry import as_homogeneous

    volume = o3d.pipelines.integration.ScalableTSDFVolume(
        voxel_length=voxel, sdf_trunc=trunc, color_type=o3d.pipelines.integration.TSDFVolumeColorType.RGB8
    )
    for depth, K, ext in zip(capture.depth, intrinsics, as_homogeneous(capture.extrinsics)):
        h, w = depth.shape
        rgbd = o3d.geometry.RGBDImage.create_from_color_and_depth(
            o3d.geometry.Image(np.zeros((h, w, 3), np.uint8)),
            o3d.geometry.Image(np.ascontiguousarray(depth, np.float32)),
            depth_scale=1.0,
            depth_trunc=100.0,
            convert_rgb_to_intensity=False,
        )
        volume.integrate(rgbd, o3d.camera.PinholeCameraIntrinsic(w, h, K[0, 0], K[1, 1], K[0, 2], K[1, 2]), ext)
    voxels = np.asarray(volume.extract_voxel_point_cloud().points)
    return len(np.unique(np.floor(voxels / (16 * voxel)), axis=0))


@pytest.mark.parametrize("focal_scale", [1.0, 1 / 8])
def test_block_count_predicts_open3d_allocation(focal_scale):
    from da3core.evaluation.fusion import tsdf_blocks
    from da3core.synthetic import make_capture

    capture = make_capture(4, 160, 120)
    intrinsics = capture.intrinsics * np.array([focal_scale, focal_scale, 1.0])[:, None]
    predicted = tsdf_blocks(capture.depth, intrinsics, capture.extrinsics, 0.02, 0.06, 100.0)
    observed = _fuse_with_open3d(capture, intrinsics, 0.02, 0.06)
    # A touched block may end up without an observed voxel (it lies behind the surface), never the reverse.
    assert observed <= predicted <= 1.05 * observed, (predicted, observed)


def test_fusion_refuses_a_volume_beyond_the_available_memory(monkeypatch):
    from types import SimpleNamespace

    from da3core.evaluation import fusion
    from da3core.synthetic import make_capture

    capture = make_capture(4, 160, 120)
    spread = capture.intrinsics * np.array([1 / 8, 1 / 8, 1.0])[:, None]  # a tiny focal: depth spread far and thin
    blocks = fusion.tsdf_blocks(capture.depth, spread, capture.extrinsics, 0.02, 0.06, 100.0)
    monkeypatch.setattr(fusion.psutil, "virtual_memory", lambda: SimpleNamespace(available=blocks * fusion.BLOCK_BYTES))
    with pytest.raises(MemoryError, match=rf"{blocks:,} voxel blocks .* check the predicted depth and cameras"):
        fusion.tsdf_fuse(capture.depth, spread, capture.extrinsics, 0.02, 0.06, 100.0)
    mesh = fusion.tsdf_fuse(capture.depth, capture.intrinsics, capture.extrinsics, 0.02, 0.06, 100.0)
    assert len(mesh.triangles) > 0  # the true focal needs 1/8 of the blocks or fewer: fused as before
