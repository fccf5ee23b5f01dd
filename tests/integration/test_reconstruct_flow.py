"""The reconstruct flow end to end through Prefect: image folder, video and COLMAP scenes into zarr stores,
locally and on S3 (moto), re-exports without inference, and one-line errors for bad input.
"""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from da3core.store import SceneStore
from da3core.synthetic import make_capture, write_colmap, write_image_folder
from flows.config import load_config
from flows.reconstruct import main, reconstruct

FAST = ["model=da3-small", "model.weights=random", "processing.process_res=112"]


def _run(tmp_path, scene, *extra):
    return reconstruct(
        load_config("reconstruct", [f"scene={scene}", f"storage.root={tmp_path / 'out'}", *FAST, *extra])
    )


def _group(result):
    return zarr.open_group(result.store_url, mode="r")


def test_image_folder_scene(tmp_path, image_folder, capture):
    result = _run(tmp_path, image_folder, "export=mini_npz+glb")
    g = _group(result)
    n = len(capture)
    assert g["images"].shape == (n, 84, 112, 3) and g["images"].dtype == np.uint8
    assert g["depth"].shape == (n, 84, 112) and g["depth"].dtype == np.float32 and g["conf"].shape == (n, 84, 112)
    assert g["extrinsics"].shape == (n, 3, 4) and g["intrinsics"].shape == (n, 3, 3)
    attrs = g.attrs.asdict()
    assert attrs["complete"]["config_hash"] == attrs["config_hash"]
    assert attrs["model"]["weights"] == "random" and "untrained" in attrs["model"]["note"]
    assert len(attrs["model"]["weights_sha256"]) == 64
    assert attrs["config"]["model"]["preset"] == "da3-small" and attrs["inputs"]["kind"] == "images"
    assert all(len(f["sha256"]) == 64 for f in attrs["inputs"]["files"])
    assert {"inference", "align", "export_glb", "export_mini_npz"} <= set(attrs["timings"])
    assert "extrinsics" in attrs["conventions"] and attrs["ref_view_idx"] is not None
    out = tmp_path / "out" / image_folder.name
    assert (out / "scene.glb").is_file() and (out / "exports" / "mini_npz" / "results.npz").is_file()


def test_video_scene_keeps_frame_indices(tmp_path, video_file):
    result = _run(tmp_path, video_file, "input.fps=5", "export=mini_npz")
    g = _group(result)
    assert list(g["frame"][...]) == [0, 6, 12, 18, 24, 30, 36, 42, 48, 54]
    np.testing.assert_allclose(g["timestamp"][...], np.arange(0, 60, 6) / 30.0)
    assert g.attrs["inputs"]["kind"] == "video"


@pytest.mark.parametrize("scale", [True, False])
def test_colmap_scene_aligns_to_input_poses(tmp_path, scale):
    capture = make_capture(5, 160, 120, seed=4)
    write_colmap(capture, tmp_path / "colmap_scene")
    result = _run(tmp_path, tmp_path / "colmap_scene", "export=mini_npz", f"pose.align_to_input_ext_scale={scale}")
    g = _group(result)
    if scale:
        np.testing.assert_allclose(g["extrinsics"][...], capture.extrinsics, atol=1e-5)
    else:  # input poses expressed in the prediction's frame: same relative rotations
        rel = g["extrinsics"][:, :, :3] @ g["extrinsics"][0, :, :3].T
        np.testing.assert_allclose(rel, capture.extrinsics[:, :, :3] @ capture.extrinsics[0, :, :3].T, atol=1e-4)
    np.testing.assert_allclose(g["input_extrinsics"][...], capture.extrinsics, atol=1e-6)
    assert g.attrs["stages"]["align"]["aligned"] is True


def test_s3_storage_and_s3_scene(tmp_path, image_folder, s3_options):
    import s3fs

    fs = s3fs.S3FileSystem(**s3_options)
    fs.put(str(image_folder) + "/", "da3-test/scenes/room/", recursive=True)
    options = [
        f"+storage.options.key={s3_options['key']}",
        f"+storage.options.secret={s3_options['secret']}",
        f"+storage.options.client_kwargs.endpoint_url={s3_options['client_kwargs']['endpoint_url']}",
    ]
    result = reconstruct(
        load_config(
            "reconstruct",
            ["scene=s3://da3-test/scenes/room", "storage.root=s3://da3-test/out", *FAST, "export=mini_npz", *options],
        )
    )
    store = SceneStore(result.store_url, s3_options)
    assert result.store_url == "s3://da3-test/out/room/scene.zarr" and store.is_complete()
    assert store.read_prediction().depth.shape == (8, 84, 112)
    assert fs.exists("da3-test/out/room/exports/mini_npz/results.npz")


def test_rerun_skips_and_export_change_reuses_inference(tmp_path, image_folder):
    first = _run(tmp_path, image_folder, "export=mini_npz")
    again = _run(tmp_path, image_folder, "export=mini_npz")
    assert (first.status, again.status) == ("done", "skipped")
    before = _group(first).attrs["stages"]["inference"]["finished_at"]
    more = _run(tmp_path, image_folder, "export=mini_npz+depth_vis")
    assert more.status == "exported" and _group(more).attrs["stages"]["inference"]["finished_at"] == before
    assert (tmp_path / "out" / image_folder.name / "depth_vis").is_dir()


def _error_line(capsys, argv) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and err, argv
    return err[-1]


def test_bad_inputs_fail_with_one_line(tmp_path, capsys, image_folder, video_file):
    out = [f"storage.root={tmp_path / 'out'}", *FAST, "export=mini_npz"]
    (tmp_path / "empty").mkdir()
    corrupt = tmp_path / "corrupt"
    write_image_folder(make_capture(3, 64, 48), corrupt)
    (corrupt / "frame_0001.png").write_bytes(b"\x89PNG broken")
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(video_file.read_bytes()[:2000])
    no_sparse = tmp_path / "colmap_without_model"
    (no_sparse / "images").mkdir(parents=True)
    (no_sparse / "sparse").mkdir()
    cases = {
        "missing path": ([f"scene={tmp_path / 'nope'}", *out], "input not found"),
        "empty folder": ([f"scene={tmp_path / 'empty'}", *out], "no images in"),
        "corrupt image": ([f"scene={corrupt}", *out], "frame_0001.png"),
        "truncated video": ([f"scene={truncated}", *out], "truncated.mp4"),
        "colmap without sparse": ([f"scene={no_sparse}", *out], "has no model"),
        "unknown export": ([f"scene={image_folder}", *out, "export=glb+obj"], "obj"),
        "unknown preset": ([f"scene={image_folder}", *out, "model=da3-tiny"], "da3-small"),
        "unreachable s3": (
            [
                f"scene={image_folder}",
                *FAST,
                "storage.root=s3://bucket/x",
                "+storage.options.client_kwargs.endpoint_url=http://127.0.0.1:9",
            ],
            "cannot write to storage",
        ),
    }
    for name, (argv, expected) in cases.items():
        line = _error_line(capsys, argv)
        assert expected in line and line.startswith("error:"), f"{name}: {line}"
    for folder in (tmp_path / "out").glob("*") if (tmp_path / "out").exists() else []:
        store = SceneStore(str(folder / "scene.zarr"))
        assert not store.exists() or not store.is_complete(), folder


def test_paths_holding_dollar_braces_and_tilde_are_taken_literally(tmp_path, monkeypatch):
    """A folder named ``q${y}`` is a name, not an interpolation (it used to fail after inference); ``~`` in
    output_dir is the home folder (it used to make a folder named ``~`` in the working directory)."""
    scene = tmp_path / "in" / "a${y}"
    write_image_folder(make_capture(2, 64, 48, seed=9), scene)
    out = tmp_path / "out" / "q${oc.env:HOME}"
    quoted = lambda p: "'" + str(p).replace("$", "\\$") + "'"  # noqa: E731  (Hydra's escape for a literal ${)
    assert main([f"scene={quoted(scene)}", f"output_dir={quoted(out)}", *FAST, "processing.process_res=28"]) == 0
    attrs = SceneStore(str(out / "scene.zarr")).attrs()
    assert attrs["source"] == str(scene) and attrs["config"]["output_dir"] == str(out)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    assert main([f"scene={quoted(scene)}", "output_dir='~/results'", *FAST, "processing.process_res=28"]) == 0
    assert SceneStore(str(tmp_path / "home" / "results" / "scene.zarr")).is_complete()
    assert not (tmp_path / "~").exists()


def test_new_weights_under_the_same_model_dir_are_a_new_result(tmp_path, image_folder):
    """A checkpoint replaced in place (a newer download into the same folder): the rerun recomputes, and the store
    names the weights that computed it; the same weights again are skipped."""
    import shutil

    from da3core.api import write_random_model_dir
    from da3core.io.inputs import sha256_file

    model = tmp_path / "model"
    write_random_model_dir("da3-small", model, seed=0)
    args = [f"scene={image_folder}", f"storage.root={tmp_path / 'out'}", "model=da3-small", f"model.path={model}"]
    args += ["processing.process_res=56", "export=mini_npz", "model.device=cpu"]
    first = reconstruct(load_config("reconstruct", args))
    depth = _group(first)["depth"][...]
    write_random_model_dir("da3-small", tmp_path / "other", seed=1)
    shutil.copy(tmp_path / "other" / "model.safetensors", model / "model.safetensors")
    second = reconstruct(load_config("reconstruct", args))
    assert second.status == "done", second.status
    g = _group(second)
    assert not np.array_equal(g["depth"][...], depth)
    assert g.attrs["model"]["weights_sha256"] == sha256_file(model / "model.safetensors")
    assert reconstruct(load_config("reconstruct", args)).status == "skipped"
