"""COLMAP in -> pose-conditioned inference (seeded random weights) -> colmap + nerfstudio out, read by pycolmap.

The input cameras are deliberately awkward: a different off-centre principal point with a fractional part and
fx != fy per image, and a source size (175x112) that the preprocessing shrinks non-uniformly (to 70x42).
"""

from __future__ import annotations

import json

import numpy as np
import pycolmap
import pytest

from da3core.api import DepthAnything3, write_random_model_dir
from da3core.export import export
from da3core.io.inputs import discover_scene
from da3core.synthetic import make_capture, write_colmap

N_VIEWS, SOURCE_W, SOURCE_H, PROCESS_RES = 3, 175, 112, 70


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("colmap_in")
    capture = make_capture(n_views=N_VIEWS, width=SOURCE_W, height=SOURCE_H, seed=0)
    # The exact K of the renders does not matter to random weights; the cameras are what must survive.
    capture.intrinsics = np.stack(
        [[[150.0 + 10 * i, 0, 86.0 - i], [0, 140.0, 55.75 + i], [0, 0, 1]] for i in range(N_VIEWS)]
    )
    write_colmap(capture, root)
    return root


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return DepthAnything3.from_pretrained(write_random_model_dir("da3-small", tmp_path_factory.mktemp("weights")))


@pytest.fixture(scope="module")
def aligned(dataset, model, tmp_path_factory):
    out = tmp_path_factory.mktemp("aligned")
    return reconstruct(dataset, model, out, align_to_input_ext_scale=True), out


def reconstruct(dataset, model, out, align_to_input_ext_scale):
    scene = discover_scene(dataset)
    prediction = model.inference(
        scene.paths,
        extrinsics=scene.extrinsics,
        intrinsics=scene.intrinsics,
        align_to_input_ext_scale=align_to_input_ext_scale,
        process_res=PROCESS_RES,
    )
    export(prediction, "colmap+nerfstudio", out)
    read = lambda folder: pycolmap.Reconstruction(str(folder / "sparse/0"))  # noqa: E731
    return prediction, read(dataset), read(out)


def by_name(rec: pycolmap.Reconstruction) -> dict:
    return {image.name: (image, rec.cameras[image.camera_id]) for image in rec.images.values()}


def test_colmap_in_colmap_out_keeps_every_camera_and_pose(aligned):
    (prediction, rec_in, rec_out), _ = aligned
    assert prediction.depth.shape[1:] == (42, 70)
    cams_in, cams_out = by_name(rec_in), by_name(rec_out)
    assert sorted(cams_out) == sorted(cams_in) and len(cams_in) == N_VIEWS
    for name, (image_in, cam_in) in cams_in.items():
        image_out, cam_out = cams_out[name]
        assert (cam_out.model.name, cam_out.width, cam_out.height) == ("PINHOLE", cam_in.width, cam_in.height)
        np.testing.assert_allclose(cam_out.params, cam_in.params, atol=1e-4)  # fx fy cx cy; float32 on the way
        np.testing.assert_allclose(image_out.cam_from_world().matrix(), image_in.cam_from_world().matrix(), atol=1e-5)
    assert sorted(c.params[2] for _, c in cams_in.values()) == [84.5, 85.5, 86.5]  # the awkward cameras were read


def test_unscaled_alignment_moves_all_cameras_by_one_similarity(dataset, model, tmp_path):
    _, rec_in, rec_out = reconstruct(dataset, model, tmp_path, align_to_input_ext_scale=False)
    cams_in, cams_out = by_name(rec_in), by_name(rec_out)
    names = sorted(cams_in)
    pose_in = [cams_in[n][0].cam_from_world().matrix() for n in names]
    pose_out = [cams_out[n][0].cam_from_world().matrix() for n in names]
    for n in names:
        np.testing.assert_allclose(cams_out[n][1].params, cams_in[n][1].params, atol=1e-4)
    # A similarity keeps relative rotations and scales every distance between camera centres by the same s.
    centre = lambda p: -p[:, :3].T @ p[:, 3]  # noqa: E731
    ratios = [
        np.linalg.norm(centre(pose_out[i]) - centre(pose_out[j]))
        / np.linalg.norm(centre(pose_in[i]) - centre(pose_in[j]))
        for i in range(N_VIEWS)
        for j in range(i + 1, N_VIEWS)
    ]
    np.testing.assert_allclose(ratios, ratios[0], rtol=1e-4)
    relative = lambda poses, i, j: poses[i][:, :3] @ poses[j][:, :3].T  # noqa: E731
    for i in range(N_VIEWS):
        for j in range(N_VIEWS):
            np.testing.assert_allclose(relative(pose_out, i, j), relative(pose_in, i, j), atol=1e-5)


def test_transforms_json_carries_the_same_cameras_in_nerfstudios_convention(aligned):
    (_, _, rec_out), out = aligned
    frames = {f["file_path"]: f for f in json.loads((out / "nerfstudio/transforms.json").read_text())["frames"]}
    sx, sy = 70 / SOURCE_W, 42 / SOURCE_H
    for name, (image, camera) in by_name(rec_out).items():
        frame = frames[f"images/{name.rsplit('.', 1)[0]}.png"]
        assert (frame["w"], frame["h"]) == (70, 42)
        fx, fy, cx, cy = camera.params
        # Both files use pixel centres at +0.5; between them lies the preprocessing's resize, which scales K
        # about this project's integer pixel centres (upstream's rule): c_processed = (c_source - 0.5) * s.
        np.testing.assert_allclose([frame["fl_x"], frame["fl_y"]], [fx * sx, fy * sy], rtol=1e-5)
        np.testing.assert_allclose(
            [frame["cx"], frame["cy"]], [(cx - 0.5) * sx + 0.5, (cy - 0.5) * sy + 0.5], atol=1e-4
        )
        w2c = np.vstack([image.cam_from_world().matrix(), [0, 0, 0, 1]])
        np.testing.assert_allclose(frame["transform_matrix"], np.linalg.inv(w2c) @ np.diag([1, -1, -1, 1]), atol=1e-5)
