"""Preprocessing equals the reference InputProcessor (tensor, uint8 images, intrinsics) and rejects bad input."""

from __future__ import annotations

import numpy as np
import pytest
from oracle import run_oracle
from PIL import Image

from da3core.choices import RESIZE_METHODS
from da3core.preprocess import ImageLoadError, load_image, preprocess_images

SIZES = {
    "landscape": [(480, 640)],
    "portrait": [(640, 480)],
    "square": [(300, 300)],
    "tiny_upscale": [(37, 101)],
    "hd": [(1080, 1920)],
    "mixed": [(361, 523), (200, 700), (480, 640)],
}


def _K(h: int, w: int) -> np.ndarray:
    return np.array([[500.0, 0, w / 2], [0, 510.0, h / 2], [0, 0, 1]])


@pytest.mark.parity
def test_matches_reference_input_processor():
    rng = np.random.default_rng(0)
    inputs, cases, ours = {}, [], {}
    for size_name, sizes in SIZES.items():
        images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in sizes]
        K = np.stack([_K(h, w) for h, w in sizes])
        for method in RESIZE_METHODS:
            for res in (504, 140):
                name = f"{size_name}-{method}-{res}"
                inputs.update({f"{name}/img_{i}": im for i, im in enumerate(images)})
                inputs[f"{name}/K"] = K
                cases.append({"name": name, "n": len(images), "process_res": res, "method": method})
                ours[name] = preprocess_images(images, res, method, K)
    ref = run_oracle("preprocess.py", inputs, cases=cases)
    for name, batch in ours.items():  # bitwise (both venvs use OpenCV < 4.12, whose cubic resize agrees)
        np.testing.assert_array_equal(batch.intrinsics, ref[f"{name}/intrinsics"], err_msg=name)
        np.testing.assert_array_equal(batch.processed_images, ref[f"{name}/processed"], err_msg=name)
        np.testing.assert_array_equal(batch.images.numpy(), ref[f"{name}/images"], err_msg=name)


def test_inputs_as_paths_arrays_and_pil_agree(tmp_path):
    arr = np.random.default_rng(1).integers(0, 256, (50, 80, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "a.png")
    batches = [preprocess_images([x], 56) for x in (str(tmp_path / "a.png"), arr, Image.fromarray(arr))]
    for b in batches[1:]:
        np.testing.assert_array_equal(b.images.numpy(), batches[0].images.numpy())
    assert batches[0].images.shape == (
        1,
        3,
        42,
        56,
    )  # 80x50 -> 56x35 -> 35 ties to the upper multiple 42 and batches[0].source_sizes.tolist() == [[50, 80]]


def test_pixel_mapping_back_to_the_original():
    batch = preprocess_images([np.zeros((300, 500, 3), np.uint8)], 140, "lower_bound_crop")
    # 300x500 -> 140x233 -> crop to 140x224: processed pixel (u, v) comes from (u*s + ox, v*s + oy).
    scale, offset = batch.scale[0], batch.offset[0]
    assert scale == pytest.approx([300 / 140, 300 / 140], rel=1e-2)
    assert offset[0] == pytest.approx(4 * 500 / 233, rel=1e-6) and offset[1] == 0


def test_bad_inputs(tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(ImageLoadError, match="bad.jpg"):
        load_image(tmp_path / "bad.jpg")
    with pytest.raises(ImageLoadError, match="not found"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(ImageLoadError, match="uint8"):
        load_image(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="no images"):
        preprocess_images([])
    with pytest.raises(ValueError, match="allowed"):
        preprocess_images([np.zeros((8, 8, 3), np.uint8)], method="stretch")


@pytest.mark.parametrize("method", RESIZE_METHODS)
def test_processed_size_is_the_size_a_view_gets(method):
    """``processed_size`` (from a header's size, before decoding) agrees with preprocessing the pixels."""
    from da3core.preprocess import processed_size

    for height, width in ((48, 64), (30, 200), (333, 101), (504, 378), (100, 1000)):
        batch = preprocess_images([np.zeros((height, width, 3), np.uint8)], process_res=140, method=method)
        assert processed_size(height, width, 140, method) == tuple(batch.images.shape[2:]), (height, width)
