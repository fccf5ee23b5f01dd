"""The CLI's pure parts: flags → Hydra overrides (read back through the real config), preset resolution, quoting."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from flows.cli_flags import InferenceOptions, hydra_value
from flows.cli_run import CliError, overrides_for, resolve_model
from flows.config import ConfigError, load_config, resolved

BASE = InferenceOptions(preset="da3-small", export_dir="/data/out")


def _cfg(overrides: list[str]) -> dict:
    return resolved(load_config("reconstruct", overrides))


def test_seed_defaults_map_to_the_config(tmp_path):
    over = overrides_for("images", tmp_path / "in", replace(BASE, image_extensions="png,JPG,.jpeg"))
    cfg = _cfg(over)
    assert cfg["scene"] == str(tmp_path / "in") and cfg["output_dir"] == "/data/out" == cfg["storage"]["root"]
    assert cfg["export"] == "glb" and cfg["model"]["preset"] == "da3-small" and cfg["model"]["path"] is None
    assert cfg["model"]["weights"] == "pretrained" and cfg["model"]["device"] == "auto"
    assert cfg["processing"] == {"process_res": 504, "method": "upper_bound_resize"}
    assert cfg["ref_view_strategy"] == "saddle_balanced" and cfg["pose"]["use_ray_pose"] is False
    assert cfg["infer_gs"] is False and cfg["export_feat_layers"] == []
    assert cfg["input"]["image_extensions"] == ["png", "jpg", "jpeg"]
    glb = {"conf_thresh_percentile": 40.0, "num_max_points": 1_000_000, "show_cameras": True}
    assert cfg["exporters"] == {"glb": glb}


def test_every_flag_reaches_its_key(tmp_path):
    opts = replace(
        BASE,
        model_dir="depth-anything/DA3-SMALL",
        weights="pretrained",
        device="cpu",
        export_format="glb-feat_vis+ply",
        process_res=280,
        process_res_method="upper_bound_crop",
        export_feat="3, 7",
        use_ray_pose=True,
        ref_view_strategy="middle",
        conf_thresh_percentile=10,
        num_max_points=5000,
        show_cameras=False,
        feat_vis_fps=4,
        fps=2.5,
        sparse_subdir="sparse/1",
        align_to_input_ext_scale=False,
    )
    cfg = _cfg(overrides_for("auto", tmp_path / "video.mp4", opts))
    assert cfg["export"] == "glb+feat_vis+ply" and cfg["model"]["path"] == "depth-anything/DA3-SMALL"
    assert cfg["model"]["device"] == "cpu" and cfg["processing"] == {"process_res": 280, "method": "upper_bound_crop"}
    assert cfg["export_feat_layers"] == [3, 7]
    assert cfg["pose"] == {"use_ray_pose": True, "align_to_input_ext_scale": False}
    assert cfg["ref_view_strategy"] == "middle"
    assert cfg["input"]["fps"] == 2.5 and cfg["input"]["sparse_subdir"] == "sparse/1"
    assert cfg["exporters"] == {
        "glb": {"conf_thresh_percentile": 10.0, "num_max_points": 5000, "show_cameras": False},
        "feat_vis": {"fps": 4},
        "ply": {"conf_thresh_percentile": 10.0, "num_max_points": 5000},
    }


def test_command_specific_flags_only_where_they_exist(tmp_path):
    image = overrides_for("image", tmp_path / "a.png", BASE)
    assert not any(o.startswith(("input.", "pose.align")) for o in image)
    video = overrides_for("video", tmp_path / "a.mp4", replace(BASE, fps=1.0))
    assert "input.fps=1.0" in video
    with pytest.raises(ValueError):
        overrides_for("gallery", tmp_path, BASE)


def test_random_weights_ignore_the_model_path(tmp_path):
    over = overrides_for("image", tmp_path / "a.png", replace(BASE, weights="random", model_dir="/models/small"))
    cfg = _cfg(over)
    assert cfg["model"]["weights"] == "random" and cfg["model"]["path"] is None


def test_backend_overrides_describe_only_the_work(tmp_path):
    opts = replace(BASE, model_dir="/models/small", device="cuda", weights="pretrained")
    over = overrides_for("images", tmp_path / "in", opts, backend=True)
    local_keys = ("scene", "output_dir", "storage.root", "model.path", "model.device")
    assert not [o for o in over if o.split("=")[0] in local_keys]
    assert "model=da3-small" in over and not any(o.startswith("model.weights") for o in over)
    unnamed = overrides_for("images", tmp_path / "in", replace(opts, preset=None, weights="random"), backend=True)
    assert not any(o.startswith("model=") for o in unnamed) and "model.weights=random" in unnamed


@pytest.mark.parametrize(
    "path", ["/tmp/a b/c", "/tmp/x,y=z", "/tmp/it's", "/tmp/${HOME}", "C:\\dir\\", "1e5", "true", ""]
)
def test_paths_read_back_verbatim(path):
    assert load_config("reconstruct", ["model=da3-small", f"output_dir={hydra_value(path)}"]).output_dir == path


def test_plain_paths_stay_bare():
    assert hydra_value("/data/scene_1/images") == "/data/scene_1/images"


def test_export_feat_layers_and_formats_are_checked_as_flags(tmp_path):
    for text, layers in (("", []), ("5, 11", [5, 11])):
        assert _cfg(overrides_for("images", tmp_path, replace(BASE, export_feat=text)))["export_feat_layers"] == layers
    with pytest.raises(CliError, match="--export-feat"):
        overrides_for("images", tmp_path, replace(BASE, export_feat="5;11"))
    with pytest.raises(CliError, match="--export-format glb-nope: unknown export format"):
        overrides_for("images", tmp_path, replace(BASE, export_format="glb-nope"))


def _model_dir(root: Path, preset: str, weights: bool = True) -> Path:
    root.mkdir(parents=True)
    (root / "config.json").write_text(json.dumps({"model_name": preset}))
    if weights:
        (root / "model.safetensors").write_bytes(b"")
    return root


def test_resolve_model(tmp_path):
    nested = ("da3nested-giant-large", "depth-anything/DA3NESTED-GIANT-LARGE-1.1")
    assert resolve_model(None, None, "pretrained") == nested
    assert resolve_model(None, "da3-small", "pretrained") == ("da3-small", None)
    assert resolve_model("depth-anything/DA3-LARGE", None, "pretrained") == ("da3-large", "depth-anything/DA3-LARGE")
    small = _model_dir(tmp_path / "small", "da3-small")
    assert resolve_model(str(small), None, "pretrained") == ("da3-small", str(small))
    assert resolve_model(str(small), None, "random") == ("da3-small", None)
    assert resolve_model(None, "da3-base", "random") == ("da3-base", None)


@pytest.mark.parametrize(
    "model_dir, preset, weights, message",
    [
        (None, "da3-tiny", "pretrained", "unknown preset 'da3-tiny'"),
        ("small", "da3-large", "pretrained", "does not match"),
        ("noweights", None, "pretrained", "no model.safetensors"),
        ("noconfig", None, "pretrained", "no config.json"),
        ("missing/dir/x", None, "pretrained", "not found"),
        ("someone/custom-model", None, "pretrained", "pass --preset"),
    ],
)
def test_resolve_model_errors(tmp_path, model_dir, preset, weights, message):
    _model_dir(tmp_path / "small", "da3-small")
    _model_dir(tmp_path / "noweights", "da3-small", weights=False)
    (tmp_path / "noconfig").mkdir()
    source = model_dir if model_dir is None or "/" in model_dir else str(tmp_path / model_dir)
    with pytest.raises(CliError, match=message):
        resolve_model(source, preset, weights)


def test_feature_layers_beyond_the_backbone_are_refused_before_inference():
    from flows.config import ConfigError

    assert _cfg(["model=da3-small", "export_feat_layers=[0,11]"])["export_feat_layers"] == [0, 11]
    for layers in ("[12]", "[-1]"):
        with pytest.raises(ConfigError, match=r"export_feat_layers.*0 to 11"):
            load_config("reconstruct", ["model=da3-small", f"export_feat_layers={layers}"])
    assert _cfg(["model=da3-large", "export_feat_layers=[23]"])["export_feat_layers"] == [23]


def test_exporter_options_need_no_plus():
    plain = load_config("reconstruct", ["exporters.glb.conf_thresh_percentile=20"])
    assert plain.exporters == {"glb": {"conf_thresh_percentile": 20}}
    assert load_config("reconstruct", ["+exporters.glb.conf_thresh_percentile=20"]).exporters == plain.exporters
    with pytest.raises(ConfigError, match="exporters: options for"):
        load_config("reconstruct", ["export=mini_npz", "exporters.glb.conf_thresh_percentile=20"])


def test_storage_options_need_no_plus():
    url = "http://127.0.0.1:9000"
    plain = load_config("reconstruct", [f"storage.options.client_kwargs.endpoint_url={url}"])
    assert plain.storage.options == {"client_kwargs": {"endpoint_url": url}}
    assert load_config("reconstruct", [f"+storage.options.client_kwargs.endpoint_url={url}"]).storage == plain.storage
    with pytest.raises(ConfigError, match="storage.typo"):
        load_config("reconstruct", ["storage.typo=1"])


def test_download_folders_of_killed_backend_runs_are_discarded(tmp_path):
    import os
    import socket
    import subprocess
    import sys

    from flows.cli_run import DOWNLOAD_PREFIX, discard_dead_downloads

    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True).stdout)
    host = socket.gethostname()
    names = {
        "killed": f"{DOWNLOAD_PREFIX}{host}-{dead}-0123abcd",
        "running": f"{DOWNLOAD_PREFIX}{host}-{os.getpid()}-0123abcd",  # this process: alive
        "elsewhere": f"{DOWNLOAD_PREFIX}another-machine-{dead}-0123abcd",  # its pid means nothing here
        "user": "downloads",
    }
    for name in names.values():
        (tmp_path / name / "scene.zarr").mkdir(parents=True)
    discard_dead_downloads(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(v for k, v in names.items() if k != "killed")
    discard_dead_downloads(tmp_path / "missing")  # no export dir yet: nothing to do


def test_hydra_flags_stand_anywhere_and_unknown_ones_are_named():
    from flows.errors import split_flags

    assert split_flags(["scene=x", "--cfg", "job"]) == ({"cfg": ["job"]}, ["scene=x"])
    assert split_flags(["--cfg", "scene=x"]) == ({"cfg": []}, ["scene=x"])
    assert split_flags(["a=1,2", "-m", "b=job"]) == ({"multirun": True}, ["a=1,2", "b=job"])
    assert split_flags(["scene=x", "--frob", "-h"]) == ({"unknown": "--frob", "help": True}, ["scene=x"])
    assert split_flags(["processing.process_res=-5"]) == ({}, ["processing.process_res=-5"])


def test_a_tilde_is_the_home_folder_as_a_shell_would_expand_it(tmp_path, monkeypatch):
    home = tmp_path / "my home é"  # a space and a non-ASCII letter: the expansion must be quoted for Hydra
    (home / ".labelmerc").parent.mkdir(parents=True)
    (home / ".labelmerc").write_text("video_depth_anything:\n  max_len: 7\n")
    monkeypatch.setenv("HOME", str(home))
    assert load_config("reconstruct", ["output_dir=~/out"]).output_dir == str(home / "out")
    assert load_config("reconstruct", ["output_dir=~"]).output_dir == str(home)
    cfg = load_config("video_depth", ["video=clip.mp4", "defaults_file=~/.labelmerc"])
    assert cfg.max_frames == 7 and cfg.defaults_file == str(home / ".labelmerc")


@pytest.mark.parametrize(
    "override, hint",
    [
        ("scene=/data/my clip é.mp4", "quote its value, key='...'"),
        ("scene=a'b", 'or key="..." if it holds a \''),
        ("export=glb,ply", "a comma makes a sweep: add -m for one job per value"),
        ("export=[glb,ply]", "join several formats with +, e.g. export=glb+ply"),
        ("processing.process_res=abc", "(write a whole number)"),
        ("force=maybe", "(write true or false)"),
    ],
)
def test_overrides_hydra_cannot_read_say_how_to_write_them(override, hint):
    with pytest.raises(ConfigError) as info:
        load_config("reconstruct", [override])
    assert hint in str(info.value) and "\n" not in str(info.value)


def test_cfg_prints_a_config_still_missing_values(capsys):
    from flows.config import print_config

    print_config("batch", [])
    assert "dataset: ???" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="set storage.root=/x instead of output_dir"):
        print_config("batch", ["output_dir=/x"])
