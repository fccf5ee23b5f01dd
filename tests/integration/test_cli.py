"""The ``da3`` command line end to end: every inference command on synthetic inputs (in-process, sharing one
model through the process cache, plus one console-script subprocess), equality with ``python -m
flows.reconstruct``, --auto-cleanup (old contents replaced only after success, never home/cwd/input/roots), one-line
errors, and the service commands' argument passing.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import zarr
from PIL import Image
from typer.testing import CliRunner

import flows.cli as cli
from flows.backend.limits import JobLimits
from flows.reconstruct import main as reconstruct_main

REPO = Path(__file__).resolve().parents[2]
FAST = ["--weights", "random", "--preset", "da3-small", "--process-res", "56", "--device", "cpu"]
runner = CliRunner()


def da3(*args: str | Path, input: str | None = None):
    """Run ``da3 ARGS`` in this process."""
    return runner.invoke(cli.app, [str(a) for a in args], input=input)


def _ok(result) -> None:
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"


def _error(result) -> str:
    """The one error line of a failed command (no traceback)."""
    assert result.exit_code != 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("error: ") and "Traceback" not in result.output, result.output
    assert sum(ln.startswith("error:") for ln in lines) == 1, result.output
    return lines[-1]


def _arrays(store: Path) -> dict[str, np.ndarray]:
    group = zarr.open_group(str(store), mode="r")
    return {name: arr[...] for name, arr in group.arrays()}


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def single_image(capture, tmp_path_factory) -> Path:
    """One PNG view."""
    path = tmp_path_factory.mktemp("single") / "view.png"
    Image.fromarray(capture.images[0]).save(path)
    return path


def test_images_writes_what_the_flow_writes(tmp_path, image_folder, capture):
    out = tmp_path / "cli"
    result = da3("images", image_folder, *FAST, "--export-dir", out, "--export-format", "mini_npz-glb")
    _ok(result)
    assert (out / "scene.zarr").is_dir() and (out / "scene.glb").is_file()
    assert (out / "exports" / "mini_npz" / "results.npz").is_file()
    # The printed reproduction line is the flow's own command line: run it into another folder.
    line = next(ln for ln in result.stderr.splitlines() if "same as: python -m flows.reconstruct" in ln)
    argv = shlex.split(line.split("python -m flows.reconstruct", 1)[1])
    flow_out = tmp_path / "flow"
    argv = [a for a in argv if not a.startswith(("output_dir=", "storage.root="))]
    assert reconstruct_main([*argv, f"output_dir={flow_out}", f"storage.root={flow_out}"]) == 0
    cli_arrays, flow_arrays = _arrays(out / "scene.zarr"), _arrays(flow_out / "scene.zarr")
    assert cli_arrays.keys() == flow_arrays.keys() and {"depth", "conf", "extrinsics", "images"} <= cli_arrays.keys()
    for name in cli_arrays:
        np.testing.assert_array_equal(cli_arrays[name], flow_arrays[name], err_msg=name)
    assert cli_arrays["depth"].shape == (len(capture), 42, 56)
    assert _files(out) == _files(flow_out)
    with np.load(out / "exports/mini_npz/results.npz") as a, np.load(flow_out / "exports/mini_npz/results.npz") as b:
        assert a.files == b.files and all(np.array_equal(a[k], b[k]) for k in a.files)
    attrs = zarr.open_group(str(out / "scene.zarr"), mode="r").attrs.asdict()
    assert attrs["model"]["weights"] == "random" and attrs["config"]["model"]["preset"] == "da3-small"
    assert attrs["config"]["exporters"]["glb"] == {
        "conf_thresh_percentile": 40.0,
        "num_max_points": 1_000_000,
        "show_cameras": True,
    }


def test_video_samples_at_fps(tmp_path, video_file):
    out = tmp_path / "out"
    _ok(da3("video", video_file, *FAST, "--fps", "5", "--export-dir", out, "--export-format", "mini_npz"))
    group = zarr.open_group(str(out / "scene.zarr"), mode="r")
    assert list(group["frame"][...]) == list(range(0, 60, 6)) and group.attrs["inputs"]["kind"] == "video"


@pytest.mark.parametrize("command, scale", [("colmap", True), ("auto", False)])
def test_colmap_poses_reach_the_flow(tmp_path, colmap_dataset, capture, command, scale):
    out = tmp_path / "out"
    flag = "--align-to-input-ext-scale" if scale else "--no-align-to-input-ext-scale"
    _ok(da3(command, colmap_dataset, *FAST, flag, "--export-dir", out, "--export-format", "mini_npz"))
    group = zarr.open_group(str(out / "scene.zarr"), mode="r")
    assert group.attrs["inputs"]["kind"] == "colmap" and group.attrs["stages"]["align"]["aligned"] is True
    assert group.attrs["config"]["pose"]["align_to_input_ext_scale"] is scale
    if scale:
        np.testing.assert_allclose(group["extrinsics"][...], capture.extrinsics, atol=1e-5)


@pytest.mark.slow
def test_image_through_the_console_script(tmp_path, single_image):
    """A real subprocess of the installed ``da3`` script (this checkout first on the path)."""
    script = Path(sys.executable).parent / "da3"
    cmd = [str(script)] if script.is_file() else [sys.executable, "-m", "flows.cli"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "120"}
    out = tmp_path / "out"
    proc = subprocess.run(
        [*cmd, "image", str(single_image), *FAST, "--export-dir", str(out), "--export-format", "glb+depth_vis"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "scene.glb").is_file() and (out / "depth_vis" / "0000.jpg").is_file()
    assert zarr.open_group(str(out / "scene.zarr"), mode="r")["depth"].shape[0] == 1
    assert "da3 image: 1 view (image)" in proc.stderr
    again = subprocess.run(
        [*cmd, "image", str(single_image), *FAST, "--export-dir", str(out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert again.returncode == 2 and again.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "--auto-cleanup" in again.stderr and "Traceback" not in again.stderr


@pytest.mark.parametrize(
    "argv, expect",
    [
        (["image", "--no-such-flag", "x.jpg"], "No such option: --no-such-flag (see `da3 image --help`)"),
        (["imag", "x.jpg"], "No such command 'imag'. Did you mean 'image', 'images'? (see `da3 --help`)"),
        (["image"], "Missing argument 'PATH'. (see `da3 image --help`)"),
        (["image", "x.jpg", "--process-res", "abc"], "Invalid value for '--process-res'"),
        (["video", "x.mp4", "--device", "tpu"], "'tpu' is not one of 'auto', 'cpu', 'cuda', 'mps'"),
    ],
    ids=["option", "command", "argument", "number", "choice"],
)
def test_usage_mistakes_of_the_console_script_are_one_line(tmp_path, argv, expect):
    script = Path(sys.executable).parent / "da3"
    cmd = [str(script)] if script.is_file() else [sys.executable, "-m", "flows.cli"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "80"}
    proc = subprocess.run([*cmd, *argv], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == [proc.stderr.strip()] and proc.stderr.startswith("error: "), proc.stderr
    assert expect in proc.stderr


def _old_export(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "old.txt").write_text("keep me")
    return root


def test_non_interactive_refuses_to_delete(tmp_path, image_folder):
    old = _old_export(tmp_path / "out")
    line = _error(da3("images", image_folder, *FAST, "--export-dir", old))
    assert "--auto-cleanup" in line and str(old) in line
    assert (old / "sub" / "old.txt").read_text() == "keep me"


def test_auto_cleanup_replaces_the_old_dir(tmp_path, image_folder):
    old = _old_export(tmp_path / "out")
    _ok(da3("images", image_folder, *FAST, "--export-dir", old, "--auto-cleanup", "--export-format", "mini_npz"))
    assert not (old / "sub").exists() and (old / "scene.zarr").is_dir()
    assert (old / "exports" / "mini_npz" / "results.npz").is_file()


def test_auto_cleanup_waits_for_valid_config_and_input(tmp_path, image_folder):
    old = _old_export(tmp_path / "out")
    for args in (["--export-format", "glb-obj"], ["--process-res", "7"], ["--preset", "da3-tiny"]):
        line = _error(da3("images", image_folder, *FAST, *args, "--export-dir", old, "--auto-cleanup"))
        assert "--auto-cleanup" not in line, line
    _error(da3("images", tmp_path / "nope", *FAST, "--export-dir", old, "--auto-cleanup"))
    assert (old / "sub" / "old.txt").read_text() == "keep me"


def test_auto_cleanup_never_deletes_the_input(tmp_path, capture):
    from da3core.synthetic import write_image_folder

    write_image_folder(capture, tmp_path / "work" / "images")
    work = tmp_path / "work"
    line = _error(da3("images", work / "images", *FAST, "--export-dir", work, "--auto-cleanup"))
    assert "holds the input" in line and len(list((tmp_path / "work" / "images").iterdir())) == len(capture)


def test_auto_cleanup_keeps_the_old_result_when_a_view_cannot_be_decoded(tmp_path, capture):
    """A truncated JPEG passes the listing but not the decoding: the run fails, the old result is untouched."""
    old = tmp_path / "out"
    _ok(da3("images", _jpegs(capture, tmp_path / "good"), *FAST, "--export-dir", old, "--export-format", "mini_npz"))
    (old / "notes.txt").write_text("keep me")
    before = {p: p.read_bytes() for p in old.rglob("*") if p.is_file()}
    bad = _jpegs(capture, tmp_path / "bad")
    view = sorted(bad.iterdir())[3]
    view.write_bytes(view.read_bytes()[:600])
    line = _error(da3("images", bad, *FAST, "--export-dir", old, "--auto-cleanup", "--export-format", "mini_npz"))
    assert view.name in line
    assert {p: p.read_bytes() for p in old.rglob("*") if p.is_file()} == before
    assert zarr.open_group(str(old / "scene.zarr"), mode="r").attrs["complete"] is not None


def _jpegs(capture, folder: Path) -> Path:
    folder.mkdir(parents=True)
    for i, image in enumerate(capture.images[:4]):
        Image.fromarray(image).save(folder / f"view_{i}.jpg", quality=90)
    return folder


def test_auto_cleanup_refuses_home_cwd_input_and_roots(tmp_path, image_folder, monkeypatch):
    from flows.cli_run import CliError, check_replaceable

    home = tmp_path / "users" / "me"
    (home / "work").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(home / "work")
    (tmp_path / "link").symlink_to(tmp_path / "users")
    data = tmp_path / "data"
    shutil.copytree(image_folder, data / "room")
    (data / "room" / "out").mkdir()
    cases = {
        "contains home": (tmp_path / "users", "your home folder"),
        "is home": (home, "your home folder"),
        "home through a link": (tmp_path / "link", "your home folder"),
        "is cwd": (home / "work", "the current folder"),
        "holds the input": (data, "holds the input or lies inside it"),
        "inside the input": (data / "room" / "out", "holds the input or lies inside it"),
    }
    for name, (folder, words) in cases.items():
        (folder / "old.txt").write_text("keep me")
        line = _error(da3("images", data / "room", *FAST, "--export-dir", folder, "--auto-cleanup"))
        assert words in line, f"{name}: {line}"
        assert (folder / "old.txt").read_text() == "keep me"
    for root in (Path("/"), Path("/proc")):  # a filesystem root and a mount point: checked, never run
        with pytest.raises(CliError, match="filesystem root"):
            check_replaceable(root, data / "room")


def test_backend_result_replaces_the_old_contents_after_download(tmp_path, image_folder, monkeypatch):
    """With --use-backend the result is downloaded beside the old contents and swapped in only once complete."""
    from store_scripts.replace_store import main as write_store

    from da3core.store import SceneStore

    old = _old_export(tmp_path / "out")
    write_store([str(old / "scene.zarr"), "8", "0"])

    def result(url, overrides, scene, dest, **kwargs):
        write_store([str(Path(dest) / "scene.zarr"), "3", "1"])
        (Path(dest) / "scene.glb").write_bytes(b"glTF new")
        return {}

    _fake_module(monkeypatch, "flows.backend", __path__=[])
    _fake_module(monkeypatch, "flows.backend.client", run_on_backend=result)
    _ok(da3("images", image_folder, *FAST, "--export-dir", old, "--use-backend", "--auto-cleanup"))
    assert sorted(p.name for p in old.iterdir()) == ["scene.glb", "scene.zarr"]
    assert SceneStore(str(old / "scene.zarr")).marker()["config_hash"] == "n3-seed1"

    def refuse(*_a, **_k):
        raise ConnectionError("connection refused")

    (old / "notes.txt").write_text("keep me")
    _fake_module(monkeypatch, "flows.backend.client", run_on_backend=refuse)
    _error(da3("images", image_folder, *FAST, "--export-dir", old, "--use-backend", "--auto-cleanup"))
    assert sorted(p.name for p in old.iterdir()) == ["notes.txt", "scene.glb", "scene.zarr"]


def test_interactive_confirm(tmp_path, image_folder, monkeypatch):
    monkeypatch.setattr(cli, "_interactive", lambda: True)
    old = _old_export(tmp_path / "out")
    declined = da3("images", image_folder, *FAST, "--export-dir", old, input="n\n")
    assert declined.exit_code != 0 and "cancelled" in declined.stderr and (old / "sub" / "old.txt").is_file()
    _ok(da3("images", image_folder, *FAST, "--export-dir", old, "--export-format", "mini_npz", input="y\n"))
    assert not (old / "sub").exists() and (old / "scene.zarr").is_dir()


def test_bad_input_is_one_line(tmp_path, image_folder, single_image, video_file):
    (tmp_path / "empty").mkdir()
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text('{"model_name": "da3-small"}')
    out = ["--export-dir", tmp_path / "out"]
    cases = {
        "missing path": (["auto", tmp_path / "nope", *FAST], "input not found"),
        "empty folder": (["images", tmp_path / "empty", *FAST], "no images in"),
        "unknown format": (["images", image_folder, *FAST, "--export-format", "glb-obj"], "'obj'"),
        "unknown preset": (["image", single_image, "--weights", "random", "--preset", "da3-tiny"], "da3-small"),
        "no weights": (["image", single_image, "--model-dir", tmp_path / "model"], "no model.safetensors"),
        "preset mismatch": (
            ["image", single_image, "--model-dir", tmp_path / "model", "--preset", "da3-large"],
            "does not match",
        ),
        "wrong command": (["image", image_folder, *FAST], "use `da3 images`"),
        "video as images": (["images", video_file, *FAST], "use `da3 video`"),
        "bad layers": (["images", image_folder, *FAST, "--export-feat", "a,b"], "--export-feat"),
        "gaussians on small": (["images", image_folder, *FAST, "--infer-gs"], "use --preset da3-giant"),
        "gs_video without gaussians": (
            ["images", image_folder, *FAST, "--export-format", "glb-gs_video"],
            "with --infer-gs",
        ),
        "feat_vis without layers": (["images", image_folder, *FAST, "--export-format", "feat_vis"], "--export-feat"),
    }
    for name, (args, expected) in cases.items():
        line = _error(da3(*args, *out))
        assert expected in line, f"{name}: {line}"
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="CUDA is present")
def test_unavailable_device(single_image, tmp_path):
    line = _error(
        da3(
            "image",
            single_image,
            "--weights",
            "random",
            "--preset",
            "da3-small",
            "--device",
            "cuda",
            "--export-dir",
            tmp_path / "out",
        )
    )
    assert "--device cuda" in line and "CUDA is not available" in line


def _fake_module(monkeypatch, name: str, **attrs) -> None:
    """Stand-in for a module of another branch (or an uninstalled package): only its entry point."""
    module = types.ModuleType(name)
    module.__spec__ = importlib.util.spec_from_loader(name, loader=None)
    module.__dict__.update(attrs)
    monkeypatch.setitem(sys.modules, name, module)


def test_use_backend_hands_over_the_work(tmp_path, image_folder, monkeypatch):
    calls = []
    _fake_module(monkeypatch, "flows.backend", __path__=[])
    _fake_module(monkeypatch, "flows.backend.client", run_on_backend=lambda *a, **k: calls.append((a, k)) or {})
    monkeypatch.setenv("DA3_BACKEND_TOKEN", "from-env")
    out = tmp_path / "out"
    _ok(da3("images", image_folder, *FAST, "--export-dir", out, "--use-backend", "--backend-url", "http://gpu:9000"))
    (url, overrides, scene, dest), kwargs = calls[0]
    assert (url, scene, dest) == ("http://gpu:9000", str(image_folder), str(out.absolute()))
    assert kwargs == {"token": "from-env", "progress": True}
    keys = {o.lstrip("+").split("=")[0] for o in overrides}
    assert not keys & {"scene", "output_dir", "storage.root", "model.path", "model.device"}
    assert {"model=da3-small", "model.weights=random", "processing.process_res=56", "export=glb"} <= set(overrides)
    _ok(da3("images", image_folder, "--export-dir", out, "--use-backend", "--backend-token", "flag"))
    (_, overrides, _, _), kwargs = calls[1]
    assert kwargs["token"] == "flag" and not any(o.startswith(("model=", "model.weights")) for o in overrides)

    def refuse(*_a, **_k):
        raise ConnectionError("connection refused\nmore detail")

    _fake_module(monkeypatch, "flows.backend.client", run_on_backend=refuse)
    assert "backend http://localhost:8008: connection refused" in _error(da3("images", image_folder, "--use-backend"))


def test_backend_command_passes_its_flags(monkeypatch):
    calls = []
    _fake_module(monkeypatch, "flows.backend", __path__=[])
    _fake_module(monkeypatch, "flows.backend.server", serve=lambda **k: calls.append(k))
    _ok(
        da3(
            "backend",
            "--preset",
            "da3-small",
            "--weights",
            "random",
            "--port",
            "9001",
            "--allowed-root",
            "/a",
            "--allowed-root",
            "/b",
            "--token",
            "t",
            "--max-files",
            "99",
            "--max-pixels",
            "1000",
        )
    )
    assert calls == [
        {
            "model_dir": None,
            "preset": "da3-small",
            "weights": "random",
            "device": "auto",
            "host": "127.0.0.1",
            "port": 9001,
            "gallery_dir": "workspace/gallery",
            "token": "t",
            "max_queue": 8,
            "max_upload_mb": 512,
            "allowed_roots": ["/a", "/b"],
            "limits": JobLimits(max_files=99, max_pixels=1000),
        }
    ]


def test_gradio_command(monkeypatch):
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "gradio", None)  # as if not installed
        assert "pip install -e .[app]" in _error(da3("gradio"))
    if importlib.util.find_spec("gradio") is None:
        _fake_module(monkeypatch, "gradio")
    calls = []
    _fake_module(monkeypatch, "flows.gradio_app", launch=lambda **k: calls.append(k))
    _ok(da3("gradio", "--model-dir", "/m", "--port", "7000", "--share", "--cache-gs-tag", "dl3dv", "--token", "t0k"))
    assert calls == [
        {
            "model_dir": "/m",
            "preset": None,
            "weights": "pretrained",
            "workspace_dir": "workspace/gradio",
            "gallery_dir": "workspace/gallery",
            "host": "127.0.0.1",
            "port": 7000,
            "share": True,
            "debug": False,
            "cache_examples": False,
            "cache_gs_tag": "dl3dv",
            "token": "t0k",
        }
    ]


def test_ctrl_c_stops_a_service_and_interrupts_a_command(monkeypatch, single_image, tmp_path):
    """Ctrl-C is how a service ends (exit 0, no error line); an inference command reports it in one line (130)."""

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    if importlib.util.find_spec("gradio") is None:
        _fake_module(monkeypatch, "gradio")
    _fake_module(monkeypatch, "flows.gradio_app", launch=interrupt)
    stopped = da3("gradio", "--port", "7000")
    assert stopped.exit_code == 0 and "error" not in stopped.output, stopped.output
    monkeypatch.setattr(cli, "execute", interrupt)
    result = da3("image", single_image, *FAST, "--export-dir", tmp_path / "out")
    assert result.exit_code == 130 and _error(result).startswith("error: interrupted; run the command again")


def test_gallery_serves_the_gallery_app(tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    (tmp_path / "g" / "room").mkdir(parents=True)
    (tmp_path / "g" / "room" / "scene.glb").write_bytes(b"glTF")
    served = {}
    monkeypatch.setattr("uvicorn.run", lambda app, **kw: served.update(app=app, **kw))
    _ok(da3("gallery", "--gallery-dir", tmp_path / "g", "--port", "8123"))
    assert (served["host"], served["port"]) == ("127.0.0.1", 8123)
    manifest = TestClient(served["app"]).get("/manifest.json").json()
    assert [s["id"] for s in manifest["scenes"]] == ["room"]
    assert "does not exist" in _error(da3("gallery", "--gallery-dir", tmp_path / "nope"))


@pytest.mark.parametrize(
    "command, options",
    [
        ("auto", ["--fps", "--sparse-subdir", "--align-to-input-ext-scale"]),
        ("image", []),
        ("images", ["--image-extensions"]),
        ("video", ["--fps"]),
        ("colmap", ["--sparse-subdir", "--align-to-input-ext-scale"]),
        (
            "backend",
            [
                "--host",
                "--port",
                "--gallery-dir",
                "--max-queue",
                "--max-upload-mb",
                "--allowed-root",
                "--token",
                "--max-files",
                "--max-process-res",
                "--max-pixels",
                "--max-input-pixels",
            ],
        ),
        ("gradio", ["--workspace-dir", "--share", "--debug", "--cache-examples", "--cache-gs-tag"]),
        ("gallery", ["--gallery-dir", "--open-browser"]),
    ],
)
def test_help(command, options, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    result = da3(command, "--help")
    _ok(result)
    shared = (
        [
            "--model-dir",
            "--preset",
            "--weights",
            "--device",
            "--export-dir",
            "--export-format",
            "--use-backend",
            "--backend-url",
            "--process-res",
            "--process-res-method",
            "--export-feat",
            "--auto-cleanup",
            "--use-ray-pose",
            "--ref-view-strategy",
            "--conf-thresh-percentile",
            "--num-max-points",
            "--show-cameras",
            "--feat-vis-fps",
            "--infer-gs",
        ]
        if command in ("auto", "image", "images", "video", "colmap")
        else []
    )
    for option in options + shared:
        assert option in result.output, f"{command}: {option}"
