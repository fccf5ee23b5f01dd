"""Format names, pre-inference checks, option validation, and what a failed export leaves behind."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh
from export_scenes import synthetic_prediction

from da3core.api import build_net
from da3core.export import FORMATS, check_feature_layers, check_formats, export, parse_formats
from da3core.export import glb as glb_module
from da3core.io.storage import StorageError
from da3core.model.presets import PRESETS


@pytest.fixture(scope="module")
def prediction():
    return synthetic_prediction(n_views=2, width=70, height=56)[0]


def test_parse_formats_accepts_upstream_hydra_and_list_styles():
    assert parse_formats("mini_npz-glb-depth_vis") == ["mini_npz", "glb", "depth_vis"]
    assert parse_formats("glb+gs_ply+glb") == ["glb", "gs_ply"]
    assert parse_formats(["npz", "colmap+ply", "npz"]) == ["npz", "colmap", "ply"]
    assert set(FORMATS) == {
        "mini_npz",
        "npz",
        "glb",
        "depth_vis",
        "feat_vis",
        "gs_ply",
        "gs_video",
        "colmap",
        "nerfstudio",
        "ply",
    }


def test_unknown_format_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown export format\(s\) 'gbl'; valid: mini_npz, npz, glb, depth_vis"):
        parse_formats("npz-gbl")


def test_check_formats_names_the_missing_model_output():
    check_formats(["glb", "colmap", "npz"], has_conf=False, has_gaussians=False, has_features=False)
    with pytest.raises(ValueError, match="'gs_video' needs 3D Gaussians: run a giant or nested preset with infer_gs"):
        check_formats("glb+gs_video", has_conf=True, has_gaussians=False, has_features=False)
    with pytest.raises(ValueError, match="'feat_vis' needs intermediate features: pass export_feat_layers"):
        check_formats(["feat_vis"], has_conf=True, has_gaussians=True, has_features=False)
    with pytest.raises(ValueError, match="resize preprocessing"):
        check_formats(
            "colmap", has_conf=True, has_gaussians=False, has_features=False, process_res_method="lower_bound_crop"
        )


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_feature_layers_are_checked_against_the_real_backbone_depth(preset):
    with torch.device("meta"):
        net = build_net(preset)
    depth = len((net.da3 if hasattr(net, "da3") else net).backbone.pretrained.blocks)  # from the any-view net
    check_feature_layers([0, depth - 1], preset)
    for layers in ([depth], [3, depth + 5], [-1]):
        with pytest.raises(
            ValueError,
            match=rf"export_feat_layers \[.*\] are not blocks of {preset}'s backbone; "
            rf"choose layers from 0 to {depth - 1}$",
        ):
            check_feature_layers(layers, preset)


def test_the_backbone_really_drops_layers_beyond_its_depth(tmp_path):
    """Why the check exists: the network returns no feature, and no error, for a layer it does not have."""
    from da3core.api import DepthAnything3, write_random_model_dir
    from da3core.preprocess import preprocess_images

    model = DepthAnything3.from_pretrained(write_random_model_dir("da3-small", tmp_path / "m"))
    batch = preprocess_images([np.zeros((28, 28, 3), np.uint8)], 28)
    assert sorted(model.forward(batch.images[None], export_feat_layers=[11, 12])["aux"]) == [11]
    with pytest.raises(ValueError, match=r"\[12\] are not blocks of da3-small's backbone"):
        check_feature_layers([11, 12], "da3-small")
    with pytest.raises(ValueError, match=r"\[12\] are not blocks"):  # so the API asks before the network runs
        model.infer([np.zeros((28, 28, 3), np.uint8)], process_res=28, export_feat_layers=[11, 12])


def test_options_are_checked_before_inference_with_check_formats():
    check_formats(
        "glb+gs_video",
        has_conf=True,
        has_gaussians=True,
        has_features=False,
        options={"conf_thresh_percentile": 20.0, "render_hw": (28, 36), "gs_video": {"trj_mode": "smooth"}},
    )
    with pytest.raises(TypeError, match=r"unknown export option\(s\) \['num_points'\]"):
        check_formats("glb", has_conf=True, has_gaussians=False, has_features=False, options={"num_points": 5})
    with pytest.raises(TypeError, match=r"'glb' has no option\(s\) \['conf_treshold'\]"):
        check_formats(
            "glb", has_conf=True, has_gaussians=False, has_features=False, options={"glb": {"conf_treshold": 2.0}}
        )


def test_missing_prediction_field_fails_before_anything_is_written(prediction, tmp_path):
    with pytest.raises(ValueError, match=r"'gs_ply' needs prediction.gaussians, which this prediction lacks; run"):
        export(prediction, "npz+gs_ply", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_unknown_options_are_rejected_with_the_valid_ones(prediction, tmp_path):
    with pytest.raises(TypeError, match=r"'glb' has no option\(s\) \['conf_treshold'\]; valid: .*'camera_size'"):
        export(prediction, "glb", tmp_path, glb={"conf_treshold": 2.0})
    with pytest.raises(TypeError, match=r"unknown export option\(s\) \['num_points'\]"):
        export(prediction, "glb", tmp_path, num_points=5)
    with pytest.raises(ValueError, match="unknown trj_mode 'orbit'; choose one of original, smooth"):
        FORMATS["gs_video"].check_options({"trj_mode": "orbit"})
    assert not any(tmp_path.iterdir())


def test_unwritable_export_dir_is_one_clear_line(prediction, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(StorageError) as info:
        export(prediction, "npz", blocker / "exports")
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"cannot write to export_dir={blocker / 'exports'}")
    assert "choose a writable export_dir" in message


def test_a_failing_writer_leaves_no_partial_file_and_keeps_earlier_ones(prediction, tmp_path, monkeypatch):
    def broken_save(scene, path):
        with open(path, "wb") as f:
            f.write(b"glTF half")
        raise OSError("disk full")

    export(prediction, "glb", tmp_path, glb={"export_depth_vis": False})
    good = (tmp_path / "scene.glb").read_bytes()
    monkeypatch.setattr(glb_module, "save_glb", broken_save)
    with pytest.raises(OSError, match="disk full"):
        export(prediction, "npz+glb", tmp_path, glb={"export_depth_vis": False})
    assert (tmp_path / "scene.glb").read_bytes() == good  # the old file survives, untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exports", "scene.glb"]  # no temp files
    with np.load(tmp_path / "exports/npz/results.npz") as npz:
        np.testing.assert_array_equal(npz["image"], prediction.processed_images)


def test_per_format_options_win_over_shared_ones(prediction, tmp_path):
    export(prediction, "glb+ply", tmp_path, num_max_points=100, glb={"num_max_points": 50, "export_depth_vis": False})
    assert len(trimesh.load(tmp_path / "scene.glb").geometry["points"].vertices) == 50
    assert len(trimesh.load(tmp_path / "points.ply").vertices) == 100
