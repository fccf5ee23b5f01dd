"""Video Depth Anything checkpoints: the key/shape contract of all six, seeded random weights, strict loading."""

from __future__ import annotations

import json
import time

import pytest
import torch
from paths import REPO_ROOT
from safetensors.torch import load_file

from da3core.video_depth import CHECKPOINTS, ENCODERS, VideoDepthAnything, load_model, write_random_checkpoint
from da3core.weights import WeightsError

KEYS_DIR = REPO_ROOT / "tests" / "data" / "vda" / "keys"


def _upstream_keys(encoder: str) -> dict[str, tuple[int, ...]]:
    keys = {}
    for line in (KEYS_DIR / f"{encoder}.keys.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, shape = line.split("\t")
            keys[name] = tuple(json.loads(shape))
    return keys


def test_zoo_lists_the_six_official_checkpoints():
    assert ENCODERS == ("vits", "vitb", "vitl")
    assert sorted(CHECKPOINTS) == sorted(f"{m}video_depth_anything_{e}" for m in ("", "metric_") for e in ENCODERS)
    small = CHECKPOINTS["metric_video_depth_anything_vits"]
    assert (small.repo_id, small.filename, small.encoder, small.metric) == (
        "depth-anything/Metric-Video-Depth-Anything-Small",
        "metric_video_depth_anything_vits.pth",
        "vits",
        True,
    )
    assert CHECKPOINTS["video_depth_anything_vitl"].repo_id == "depth-anything/Video-Depth-Anything-Large"
    assert CHECKPOINTS["video_depth_anything_vitb"].licence == "CC-BY-NC-4.0"


@pytest.mark.parametrize("name", sorted(CHECKPOINTS))
def test_state_dict_matches_upstream(name):
    info = CHECKPOINTS[name]
    with torch.device("meta"):
        model = VideoDepthAnything(info.encoder, info.metric)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == _upstream_keys(info.encoder)


@pytest.fixture(scope="module")
def vits_pth(tmp_path_factory):
    return write_random_checkpoint(tmp_path_factory.mktemp("vda") / "video_depth_anything_vits.pth", "vits", seed=0)


def test_random_checkpoint_is_official_layout_deterministic_and_stamped(vits_pth, tmp_path):
    state = torch.load(vits_pth, weights_only=True)
    assert {k: tuple(v.shape) for k, v in state.items()} == _upstream_keys("vits")
    again = torch.load(write_random_checkpoint(tmp_path / "a.pth", "vits", seed=0), weights_only=True)
    other = torch.load(write_random_checkpoint(tmp_path / "b.pth", "vits", seed=1), weights_only=True)
    assert all(torch.equal(state[k], again[k]) for k in state)
    assert not torch.equal(state["head.projects.0.weight"], other["head.projects.0.weight"])
    safetensors = load_file(write_random_checkpoint(tmp_path / "c.safetensors", "vits", seed=0))
    assert all(torch.equal(state[k], safetensors[k]) for k in state) and safetensors.keys() == state.keys()
    # The temporal position tables are the fixed sinusoids, not noise.
    pe = state["head.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.0.pos_encoder.pe"]
    assert pe[0, 3, 0] == pytest.approx(torch.sin(torch.tensor(3.0)).item(), abs=1e-6)
    assert pe[0, 3, 1] == pytest.approx(torch.cos(torch.tensor(3.0)).item(), abs=1e-6)
    assert json.loads((tmp_path / "a.pth.json").read_text())["da3pipe_weights"] == "random"


def test_load_reports_random_weights_and_infers_encoder_and_metric(vits_pth, tmp_path):
    model = load_model(str(vits_pth))
    assert (model.encoder, model.metric, model.random_weights, model.weights_file) == ("vits", False, True, vits_pth)
    assert not model.training and model.head.projects[0].weight.device.type == "cpu"
    assert torch.equal(
        model.state_dict()["pretrained.cls_token"], torch.load(vits_pth, weights_only=True)["pretrained.cls_token"]
    )
    # An official-looking file (no stamp) is not reported as random; "metric_" in its name makes it metric.
    plain = tmp_path / "metric_video_depth_anything_vits.pth"
    torch.save(torch.load(vits_pth, weights_only=True), plain)
    model = load_model(str(plain))
    assert (model.metric, model.random_weights) == (True, False)
    assert load_model(str(plain), metric=False).metric is False
    # A sidecar stamp counts only while it matches its file's size (else the file was replaced since).
    stamp = json.loads((vits_pth.parent / "video_depth_anything_vits.pth.json").read_text())
    for size_delta, is_random in ((1, False), (0, True)):
        stamp["bytes"] = plain.stat().st_size + size_delta
        (tmp_path / "metric_video_depth_anything_vits.pth.json").write_text(json.dumps(stamp))
        assert load_model(str(plain)).random_weights is is_random
    st = load_model(str(write_random_checkpoint(tmp_path / "w.safetensors", "vits", metric=True)))
    assert (st.metric, st.random_weights) == (True, True)
    # metric= may not contradict a file's stamp: relative disparity would be labelled metres
    with pytest.raises(WeightsError, match="holds a relative disparity model .*not metric=True"):
        load_model(str(vits_pth), metric=True)


def test_load_resolves_dir_and_name(vits_pth):
    folder = vits_pth.parent
    assert load_model(str(folder), encoder="vits").weights_file == vits_pth
    assert load_model(str(folder / "video_depth_anything_vits")).weights_file == vits_pth


def test_strict_loading_names_missing_unexpected_and_misshaped_tensors(vits_pth, tmp_path):
    state = torch.load(vits_pth, weights_only=True)
    del state["head.scratch.refinenet4.resConfUnit1.conv1.bias"]
    state["head.extra.weight"] = torch.zeros(1)
    state["head.projects.1.bias"] = torch.zeros(3)
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(WeightsError) as err:
        load_model(str(tmp_path / "broken.pth"))
    message = str(err.value)
    assert "missing 1 tensors: head.scratch.refinenet4.resConfUnit1.conv1.bias" in message
    assert "unexpected 1 tensors: head.extra.weight" in message
    assert "wrongly shaped 1 tensors: head.projects.1.bias" in message
    with pytest.raises(WeightsError, match="holds a vits model, not vitl"):
        load_model(str(vits_pth), encoder="vitl")


def test_missing_weights_fail_fast_offline_with_guidance(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.chdir(tmp_path)
    start = time.perf_counter()
    with pytest.raises(WeightsError) as err:
        load_model("video_depth_anything_vits")
    assert time.perf_counter() - start < 2.0
    assert "video_depth_anything_vits.pth" in str(err.value) and "checkpoints" in str(err.value)
    assert "https://huggingface.co/depth-anything/Video-Depth-Anything-Small/resolve/main/" in str(err.value)
    with pytest.raises(WeightsError, match="checkpoint not found"):
        load_model(str(tmp_path / "nowhere.pth"))
