"""The DA3 model family: checkpoint key/shape contract, strict loading, seeded weights, API behaviour."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from da3core import DepthAnything3
from da3core.api import build_net, write_random_model_dir
from da3core.model.presets import PRESETS
from da3core.weights import WeightsError, read_stamp


def _reference_keys(preset: str) -> dict[str, tuple[int, ...]]:
    from paths import REPO_ROOT

    path = REPO_ROOT / "tests" / "data" / "da3_keys" / f"{preset}.keys.txt"
    keys = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, shape = line.split("\t")
            keys[name] = tuple(json.loads(shape))
    return keys


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_state_dict_matches_official_checkpoint(preset):
    with torch.device("meta"):
        net = build_net(preset)
    ours = {f"model.{k}": tuple(v.shape) for k, v in net.state_dict().items()}
    assert ours == _reference_keys(preset)


@pytest.fixture(scope="module")
def small_dir(tmp_path_factory):
    return write_random_model_dir("da3-small", tmp_path_factory.mktemp("small"), seed=0)


def test_seeded_weights_are_deterministic_per_name(small_dir, tmp_path):
    again = write_random_model_dir("da3-small", tmp_path / "again", seed=0)
    other = write_random_model_dir("da3-small", tmp_path / "other", seed=1)
    a, b, c = (load_file(str(d / "model.safetensors")) for d in (small_dir, again, other))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["model.head.projects.0.weight"], c["model.head.projects.0.weight"])
    # Values depend on the name only: the base model's same-shaped tensors equal the small model's.
    base = write_random_model_dir("da3-base", tmp_path / "base", seed=0)
    d = load_file(str(base / "model.safetensors"))
    assert torch.equal(a["model.cam_dec.fc_fov.0.bias"], d["model.cam_dec.fc_fov.0.bias"])
    assert read_stamp(small_dir / "model.safetensors")["da3pipe_weights"] == "random"
    assert json.loads((small_dir / "config.json").read_text()) == {"model_name": "da3-small"}  # official shape


def test_strict_loading_names_missing_and_unexpected_tensors(small_dir, tmp_path):
    state = load_file(str(small_dir / "model.safetensors"))
    for case, mutate in {
        "missing": lambda s: s.pop("model.head.norm.weight"),
        "unexpected": lambda s: s.__setitem__("model.head.extra", torch.zeros(1)),
    }.items():
        broken = dict(state)
        mutate(broken)
        d = tmp_path / case
        d.mkdir()
        save_file(broken, str(d / "model.safetensors"))
        (d / "config.json").write_text((small_dir / "config.json").read_text())
        with pytest.raises(WeightsError, match="model.head.norm.weight" if case == "missing" else "model.head.extra"):
            DepthAnything3.from_pretrained(d)


def test_model_dir_without_weights_and_offline_hub_id(tmp_path, monkeypatch):
    (tmp_path / "config.json").write_text('{"model_name": "da3-small"}')
    with pytest.raises(WeightsError, match="has no model.safetensors"):
        DepthAnything3.from_pretrained(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(WeightsError, match="unreachable"):
        DepthAnything3.from_pretrained("depth-anything/DA3-SMALL")
    assert time.perf_counter() - start < 2.0


def test_inference_outputs_and_input_kinds(small_dir, capture, image_folder):
    model = DepthAnything3.from_pretrained(small_dir)
    assert model.random_weights and model.preset == "da3-small"
    paths = sorted(str(p) for p in image_folder.iterdir())[:4]
    arrays = list(capture.images[:4])
    pils = [Image.fromarray(a) for a in arrays]
    preds = [model.inference(x, process_res=112) for x in (paths, arrays, pils)]
    p = preds[0]
    assert p.depth.shape == (4, 84, 112) and p.depth.dtype == np.float32 and (p.depth > 0).all()
    assert p.conf.shape == p.depth.shape and (p.conf >= 1).all()
    assert p.extrinsics.shape == (4, 3, 4) and p.intrinsics.shape == (4, 3, 3)
    assert p.processed_images.shape == (4, 84, 112, 3) and p.processed_images.dtype == np.uint8
    assert p.source_names == [n.split("/")[-1] for n in paths] and p.source_sizes.tolist() == [[120, 160]] * 4
    for other in preds[1:]:
        np.testing.assert_array_equal(other.depth, p.depth)
    with pytest.raises(ValueError, match="allowed"):
        model.set_precision("fp8")


def test_pose_conditioning_keeps_input_poses(small_dir, capture):
    model = DepthAnything3.from_pretrained(small_dir)
    pred = model.inference(
        list(capture.images[:4]), extrinsics=capture.extrinsics[:4], intrinsics=capture.intrinsics[:4], process_res=112
    )
    np.testing.assert_allclose(pred.extrinsics, capture.extrinsics[:4], atol=1e-6)
    scale = 112 / 160
    np.testing.assert_allclose(pred.intrinsics[:, 0, 0], capture.intrinsics[:4, 0, 0] * scale, rtol=1e-5)


def test_checkpoints_written_at_once_to_one_path_land_whole(tmp_path, monkeypatch):
    """Two writers of one checkpoint at once (Dask workers making the same random weights): both finish, the file
    holds one writer's tensors exactly, and no temporary file is left. With a shared temporary name the second
    writer's rename found the file gone."""
    import threading

    import safetensors.torch

    from da3core.weights import write_checkpoint

    both_written = threading.Barrier(2, timeout=30)
    save = safetensors.torch.save_file

    def save_then_wait(*args, **kwargs):
        save(*args, **kwargs)
        both_written.wait()

    monkeypatch.setattr(safetensors.torch, "save_file", save_then_wait)
    path = tmp_path / "model.safetensors"
    states = [{"w": torch.full((64, 64), float(i))} for i in range(2)]
    errors: list[BaseException] = []

    def write(state) -> None:
        try:
            write_checkpoint(state, path, {"writer": "test"})
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    writers = [threading.Thread(target=write, args=(state,)) for state in states]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(60)
    assert errors == []
    written = load_file(path)["w"]
    assert any(torch.equal(written, state["w"]) for state in states)
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]


def test_a_full_disk_is_one_line_naming_the_checkpoint(tmp_path, monkeypatch):
    """Writing weights where they do not fit is a user error naming the file, before anything is written; a disk
    that fills during the write (safetensors reports the OS error only as text) is the OS error, one line too.
    Either way no temporary file is left."""
    import shutil
    from collections import namedtuple

    import safetensors.torch
    from safetensors import SafetensorError

    from da3core import weights
    from da3core.errors import is_user_error, user_message

    state = {"w": torch.zeros(1024, 1024)}  # 4 MiB
    path = tmp_path / "model.safetensors"
    usage, disk_usage = namedtuple("usage", "total used free"), shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage(2**30, 2**30 - 2**20, 2**20))
    with pytest.raises(WeightsError) as refused:
        weights.write_checkpoint(state, path, {})
    assert str(path) in str(refused.value) and "1 MiB free" in str(refused.value)
    assert list(tmp_path.iterdir()) == []

    monkeypatch.setattr(shutil, "disk_usage", disk_usage)

    def fill_up(tensors, filename, metadata=None):
        open(filename, "wb").write(b"half")
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(safetensors.torch, "save_file", fill_up)
    with pytest.raises(OSError) as full:
        weights.write_checkpoint(state, path, {})
    assert is_user_error(full.value)
    assert user_message(full.value) == f"no space left on the device: {path}; free space there or write elsewhere"
    assert list(tmp_path.iterdir()) == []
