"""The Python API as a researcher misuses it: inputs that would give a silently wrong result, or a traceback from
deep inside the model, are refused before any work with one line naming the problem and the fix."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from da3core import DepthAnything3
from da3core.api import write_random_model_dir
from da3core.export import export
from da3core.io.inputs import read_image
from da3core.prediction import Prediction
from da3core.preprocess import ImageLoadError, load_image

RNG = np.random.default_rng(0)
IMAGE = RNG.integers(0, 255, (48, 64, 3), dtype=np.uint8)
K = np.array([[60.0, 0, 31.5], [0, 60.0, 23.5], [0, 0, 1]])


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return DepthAnything3.from_pretrained(write_random_model_dir("da3-small", tmp_path_factory.mktemp("small")))


@pytest.fixture()
def no_forward(model, monkeypatch):
    """Any run of the network fails the test: every refusal must come first."""
    monkeypatch.setattr(model, "forward", lambda *a, **k: pytest.fail("the network ran"))
    return model


@pytest.mark.parametrize(
    "image, error, message",
    [
        (IMAGE, TypeError, "got an array of shape (48, 64, 3); pass one image as [image]"),
        (Image.fromarray(IMAGE), TypeError, "got a Image; pass one image as [image]"),
        ("photo.jpg", TypeError, "got a str"),
        ([], ValueError, "no images"),
        ([Image.fromarray(np.zeros((48, 64), np.float32), mode="F")], ImageLoadError, "float PIL image (mode F)"),
    ],
    ids=["one-array", "one-pil", "one-path", "empty", "float-pil"],
)
def test_images_that_are_not_a_list_of_views_are_refused(no_forward, image, error, message):
    with pytest.raises(error) as info:
        no_forward.inference(image, process_res=56)
    assert message in str(info.value) and "\n" not in str(info.value)


def _pose(change: dict | None = None) -> np.ndarray:
    E = np.tile(np.eye(4), (2, 1, 1))
    E[1, :3, 3] = [0.2, 0, 0]
    for (view, row, col), value in (change or {}).items():
        E[view, row, col] = value
    return E


@pytest.mark.parametrize(
    "extrinsics, intrinsics, message",
    [
        (_pose({(1, 3, 0): 0.5}), np.stack([K, K]), "extrinsics of view 1 are not a rigid world-to-camera motion"),
        (_pose({(0, 0, 3): np.nan}), np.stack([K, K]), "extrinsics of view 0 are not a rigid"),
        (_pose({(1, 0, 0): 2.0}), np.stack([K, K]), "rotation part orthonormal"),
        (_pose(), np.stack([K, K * [[-1], [1], [1]]]), "intrinsics of view 1 are not finite with positive focal"),
        (_pose(), K, "intrinsics must be (2, 3, 3), one pinhole matrix per image, got (3, 3)"),
        (_pose()[:1], np.stack([K, K]), "extrinsics must be (2, 3, 4) or (2, 4, 4)"),
    ],
    ids=["last-row", "nan", "scaled-rotation", "negative-focal", "one-K", "one-pose"],
)
def test_cameras_that_are_not_cameras_are_refused_before_the_network(no_forward, extrinsics, intrinsics, message):
    with pytest.raises(ValueError) as info:
        no_forward.inference([IMAGE, IMAGE], extrinsics=extrinsics, intrinsics=intrinsics, process_res=56)
    assert message in str(info.value)


def test_integer_intrinsics_work_like_float_ones(model):
    a = model.infer([IMAGE, IMAGE], _pose(), np.stack([K, K]).round().astype(np.int64), process_res=56)
    b = model.infer([IMAGE, IMAGE], _pose(), np.stack([K, K]).round(), process_res=56)
    np.testing.assert_array_equal(a.prediction.depth, b.prediction.depth)


def test_feature_layers_and_export_options_are_checked_before_the_network(no_forward, tmp_path):
    with pytest.raises(ValueError, match="export_feat_layers"):
        no_forward.inference([IMAGE], export_feat_layers=[99], process_res=56)
    with pytest.raises(ValueError, match="camera_size"):
        no_forward.inference(
            [IMAGE], export_dir=str(tmp_path), export_format="glb", export_kwargs={"glb": {"camera_size": "big"}}
        )


def test_16_bit_images_are_scaled_not_clipped_from_a_path_or_pil(tmp_path):
    wide = (np.arange(48 * 64, dtype=np.uint32).reshape(48, 64) * 21).astype(np.uint16)  # up to 64491
    Image.fromarray(wide).save(tmp_path / "deep.png")
    expected = np.repeat(((wide.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)[..., None], 3, 2)
    np.testing.assert_array_equal(load_image(tmp_path / "deep.png"), expected)
    np.testing.assert_array_equal(load_image(tmp_path / "deep.png"), read_image(tmp_path / "deep.png"))
    with Image.open(tmp_path / "deep.png") as im:
        np.testing.assert_array_equal(load_image(im), expected)


def test_a_list_mixing_paths_and_arrays_names_no_view_after_an_array(model, tmp_path):
    Image.fromarray(IMAGE).save(tmp_path / "a.png")
    prediction = model.infer([str(tmp_path / "a.png"), IMAGE], process_res=56).prediction
    assert prediction.source_names is None


def test_exports_refuse_no_folder_and_colmap_views_of_one_name(model, tmp_path):
    prediction = model.infer([IMAGE, IMAGE], process_res=56).prediction
    with pytest.raises(TypeError, match="export_dir must be a folder path or URL, got None"):
        export(prediction, "npz", None)  # type: ignore[arg-type]
    twice = Prediction(**{**prediction.__dict__, "source_names": ["x.jpg", "x.jpg"]})
    with pytest.raises(ValueError, match=r"COLMAP image names must be unique, but \['x.jpg'\]"):
        export(twice, "colmap", tmp_path / "out")
    assert not (tmp_path / "out" / "sparse").exists()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"process_res": "56"}, "process_res must be a whole number of pixels, at least 14, got '56'"),
        ({"process_res": -56}, "at least 14, got -56"),
        ({"ref_view_strategy": "middel"}, "unknown ref_view_strategy 'middel'; allowed: "),
    ],
    ids=["text", "negative", "strategy"],
)
def test_settings_are_checked_whatever_the_number_of_views(no_forward, kwargs, message):
    with pytest.raises(ValueError) as info:
        no_forward.inference([IMAGE], **kwargs)
    assert message in str(info.value)


def test_a_format_name_split_at_its_hyphen_suggests_the_name():
    from da3core.export import parse_formats

    with pytest.raises(ValueError, match=r"'mini' \('-' separates formats: did you mean mini_npz\?\)"):
        parse_formats("mini-npz")
