"""Every mistake a user can make ends the command with exactly one ``error:`` line, exit code 2, no traceback on the
terminal or in the flow run's log, and the outputs of an earlier run left as they were.

One table (:data:`CASES`): the entry point (``python -m flows.reconstruct | batch | video_depth`` or ``da3``), its
arguments, a fragment the error line must hold, and where the mistake is caught: ``before`` Prefect starts (the flow
is never entered), or inside the ``flow`` (then the run's log on the API is read back too). The terminal is what the
process writes to its file descriptors, Prefect's console handler included.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pytest
from bad_inputs import BUILDERS, CAPTURE
from paths import REPO_ROOT
from s3server import moto_server
from typer.testing import CliRunner
from user_error_checks import Terminal, check_one_error, file_tree, flow_runs_since

import flows.batch
import flows.cli
import flows.preflight
import flows.reconstruct
import flows.video_depth
from da3core.store import SceneStore
from da3core.synthetic import make_capture, write_image_folder, write_video
from flows.progress import progress_to

FAST = ["model=da3-small", "model.weights=random", "processing.process_res=56", "export=mini_npz", "model.device=cpu"]
VIDEO_FAST = ["weights=random", "input_size=56", "max_res=64", "device=cpu"]
DA3_FAST = [
    "--weights",
    "random",
    "--preset",
    "da3-small",
    "--process-res",
    "56",
    "--device",
    "cpu",
    "--export-format",
    "mini_npz",
]
ARGS: dict[str, Callable[[Where], list[str]]] = {  # a good command line of each flow
    "reconstruct": lambda w: [f"scene={w.good_images}", f"output_dir={w.out}", *FAST],
    "batch": lambda w: [f"dataset={w.tmp}", f"storage.root={w.out}", *FAST],
    "video_depth": lambda w: [f"video={w.good_video}", f"output_dir={w.out}", *VIDEO_FAST],
}
FLOWS = {"reconstruct": flows.reconstruct, "batch": flows.batch, "video_depth": flows.video_depth}
FLOW_FUNCTION = {"reconstruct": "reconstruct", "batch": "batch", "video_depth": "video_depth", "da3": "reconstruct"}


@dataclass
class Where:
    """The folders a case writes into: ``out`` holds a copy of an earlier complete result."""

    tmp: Path
    out: Path
    good_images: Path
    good_video: Path
    monkeypatch: pytest.MonkeyPatch


@dataclass
class Case:
    """One mistake: ``args(where)`` for ``entry``; ``expect`` must be in the error line."""

    name: str
    entry: str  # reconstruct | batch | video_depth | da3
    args: Callable[[Where], list[str]]
    expect: str
    stage: str = "before"  # before: refused before Prefect starts; flow: reported from inside the flow run
    prepare: Callable[[Where], None] | None = field(default=None, repr=False)


def _scene(builder: str, stage: str = "before", expect: str = "") -> Case:
    return Case(
        f"reconstruct: {builder}",
        "reconstruct",
        lambda w: [f"scene={BUILDERS[builder](w.tmp)}", f"output_dir={w.out}", *FAST],
        expect,
        stage,
    )


def _video(builder: str, expect: str) -> Case:
    return Case(
        f"video_depth: {builder}",
        "video_depth",
        lambda w: [f"video={BUILDERS[builder](w.tmp)}", f"output_dir={w.out}", *VIDEO_FAST],
        expect,
    )


def _batch(
    name: str, dataset: Callable[[Where], Path], expect: str, root: Callable[[Where], Path] | None = None
) -> Case:
    """``flows.batch`` on ``dataset(where)``, writing to ``root(where)`` (default: the earlier result's folder)."""
    return Case(
        f"batch: {name}",
        "batch",
        lambda w: [f"dataset={dataset(w)}", f"storage.root={(root or (lambda w: w.out))(w)}", *FAST],
        expect,
    )


def _cfg(entry: str, flag: list[str], override: str, expect: str) -> Case:
    return Case(f"{entry} {' '.join(flag)} {override}", entry, lambda w: [*flag, override], expect)


def _no_hub_cache(w: Where) -> None:
    """An empty Hugging Face cache, so 'offline' means the weights are nowhere."""
    import huggingface_hub.constants as hf

    w.monkeypatch.setattr(hf, "HF_HUB_CACHE", str(w.tmp / "hf-cache"))
    w.monkeypatch.chdir(w.tmp)  # no ./checkpoints folder either


def _no_aws_credentials(w: Where) -> None:
    """No AWS credentials anywhere botocore looks (environment, files, the EC2 metadata service)."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        w.monkeypatch.delenv(name, raising=False)
    w.monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(w.tmp / "no-credentials"))
    w.monkeypatch.setenv("AWS_CONFIG_FILE", str(w.tmp / "no-config"))
    w.monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


CASES: list[Case] = [
    _scene("missing path", expect="input not found"),
    _scene("empty folder", expect="no images in"),
    _scene("0-byte image", expect="empty (0 bytes)"),
    _scene("truncated image", stage="flow", expect="damaged or cut short"),
    _scene("non-image file", expect="not an image"),
    _scene("20000x20000 png", expect="too large to read safely"),
    _scene("0-byte mp4", expect="empty (0 bytes)"),
    _scene("truncated mp4", expect="clip.mp4"),
    _scene("audio-only mp4", expect="no video stream"),
    _scene("non-video mp4", expect="not a video file"),
    _scene("colmap without sparse/", expect="no COLMAP model"),
    _scene("colmap with empty sparse/0", expect="has no model in sparse/0"),
    _scene("colmap garbage cameras.bin", expect="damaged or incomplete"),
    _scene("colmap truncated cameras.bin", expect="damaged or incomplete"),
    _scene("colmap garbage images.bin", expect="damaged or incomplete"),
    _scene("colmap truncated images.bin", expect="damaged or incomplete"),
    _scene("colmap missing image", expect="missing from"),
    _video("missing path", "video not found"),
    _video("empty folder", "video is a folder, not a video file"),
    _video("0-byte mp4", "empty (0 bytes)"),
    _video("truncated mp4", "clip.mp4"),
    _video("audio-only mp4", "no video stream"),
    _video("non-video mp4", "not a video file"),
    _batch("missing dataset", lambda w: w.tmp / "nope", "dataset not found"),
    _batch("empty dataset", lambda w: BUILDERS["empty folder"](w.tmp), "no scenes in"),
    _batch("two scenes of one name", lambda w: BUILDERS["dataset with one name twice"](w.tmp), "written as 'walk'"),
    _batch("storage.root is the dataset", lambda w: w.tmp, "is the dataset folder", root=lambda w: w.tmp),
    Case(
        "reconstruct: output_dir inside the input",
        "reconstruct",
        lambda w: [f"scene={w.tmp / 'views'}", f"output_dir={w.tmp / 'views' / 'out'}", *FAST],
        "is the input or lies inside it",
        prepare=lambda w: write_image_folder(CAPTURE, w.tmp / "views"),
    ),
    Case(
        "reconstruct: image too thin for one patch",
        "reconstruct",
        lambda w: [f"scene={BUILDERS['thin images'](w.tmp)}", f"output_dir={w.out}", *FAST],
        "under one 14-px patch",
        stage="flow",
    ),
    *[
        Case(f"{entry}: {override}", entry, lambda w, e=entry, o=override: [*ARGS[e](w), o], "is not a number")
        for entry, override in (
            ("reconstruct", "storage.lock_timeout=nan"),
            ("reconstruct", "input.fps=nan"),
            ("video_depth", "focal_length_x=nan"),
            ("video_depth", "target_fps=nan"),
            ("batch", "streaming.loop_min_similarity=nan"),
        )
    ],
    # config ranges, as overrides and as da3 flags
    Case(
        "reconstruct: glb percentile 150",
        "reconstruct",
        lambda w: [
            f"scene={w.good_images}",
            f"output_dir={w.out}",
            *FAST,
            "export=glb",
            "+exporters.glb.conf_thresh_percentile=150",
        ],
        "conf_thresh_percentile=150 is out of range",
    ),
    Case(
        "reconstruct: glb percentile 150 without +",
        "reconstruct",
        lambda w: [
            f"scene={w.good_images}",
            f"output_dir={w.out}",
            *FAST,
            "export=glb",
            "exporters.glb.conf_thresh_percentile=150",
        ],
        "conf_thresh_percentile=150 is out of range",
    ),
    Case(
        "batch: concurrency 0",
        "batch",
        lambda w: [f"dataset={w.tmp}", f"storage.root={w.out}", *FAST, "concurrency=0"],
        "config error at concurrency",
    ),
    Case(
        "reconstruct: num_max_points -5",
        "reconstruct",
        lambda w: [
            f"scene={w.good_images}",
            f"output_dir={w.out}",
            *FAST,
            "export=ply",
            "+exporters.ply.num_max_points=-5",
        ],
        "num_max_points=-5 is out of range",
    ),
    Case(
        "batch: num_max_points -5",
        "batch",
        lambda w: [
            f"dataset={w.tmp}",
            f"storage.root={w.out}",
            *FAST,
            "export=glb",
            "+exporters.glb.num_max_points=-5",
        ],
        "num_max_points=-5 is out of range",
    ),
    Case(
        "da3: --conf-thresh-percentile 150",
        "da3",
        lambda w: [
            "images",
            str(w.good_images),
            *DA3_FAST,
            "--export-format",
            "glb",
            "--export-dir",
            str(w.out),
            "--auto-cleanup",
            "--conf-thresh-percentile",
            "150",
        ],
        "--conf-thresh-percentile 150.0",
    ),
    Case(
        "da3: --num-max-points -1",
        "da3",
        lambda w: [
            "images",
            str(w.good_images),
            *DA3_FAST,
            "--export-format",
            "glb",
            "--export-dir",
            str(w.out),
            "--auto-cleanup",
            "--num-max-points",
            "-1",
        ],
        "--num-max-points -1",
    ),
    Case(
        "da3: --feat-vis-fps 0",
        "da3",
        lambda w: [
            "images",
            str(w.good_images),
            *DA3_FAST,
            "--export-format",
            "feat_vis",
            "--export-feat",
            "5",
            "--export-dir",
            str(w.out),
            "--auto-cleanup",
            "--feat-vis-fps",
            "0",
        ],
        "--feat-vis-fps 0",
    ),
    Case(
        "da3: --export-dir under a file",
        "da3",
        lambda w: ["images", str(w.good_images), *DA3_FAST, "--export-dir", str(w.tmp / "notes.txt" / "out")],
        "notes.txt is a file; choose another --export-dir",
        prepare=lambda w: (w.tmp / "notes.txt").write_text("a file, not a folder\n"),
    ),
    *[
        Case(
            f"da3: --image-extensions {value}",
            "da3",
            lambda w, v=value: [
                "images",
                str(w.good_images),
                *DA3_FAST,
                "--export-dir",
                str(w.out),
                "--auto-cleanup",
                "--image-extensions",
                v,
            ],
            expect,
        )
        for value, expect in (
            ("png]", "'png]' is not a file extension; give extensions such as png,jpg"),
            ("${oc.env:HOME}", "'${oc.env:HOME}' is not a file extension"),
            (",", "no extension given; give extensions such as png,jpg"),
        )
    ],
    *[
        Case(
            f"{entry}: s3 input without credentials",
            entry,
            args,
            "no credentials for object storage",
            stage,
            _no_aws_credentials,
        )
        for entry, args, stage in (
            ("reconstruct", lambda w: ["scene=s3://da3-none/scene", f"output_dir={w.out}", *FAST], "flow"),
            ("video_depth", lambda w: ["video=s3://da3-none/clip.mp4", f"output_dir={w.out}", *VIDEO_FAST], "flow"),
            ("batch", lambda w: ["dataset=s3://da3-none/scenes", f"storage.root={w.out}", *FAST], "before"),
        )
    ],
    # devices, weights, model paths
    Case(
        "reconstruct: model.device=cuda",
        "reconstruct",
        lambda w: [f"scene={w.good_images}", f"output_dir={w.out}", *FAST, "model.device=cuda"],
        "CUDA is not available",
    ),
    Case(
        "batch: model.device=cuda",
        "batch",
        lambda w: [f"dataset={w.tmp}", f"storage.root={w.out}", *FAST, "model.device=cuda"],
        "CUDA is not available",
    ),
    Case(
        "video_depth: device=cuda",
        "video_depth",
        lambda w: [f"video={w.good_video}", f"output_dir={w.out}", *VIDEO_FAST, "device=cuda"],
        "CUDA is not available",
    ),
    Case(
        "da3: --device cuda",
        "da3",
        lambda w: [
            "images",
            str(w.good_images),
            *DA3_FAST,
            "--export-dir",
            str(w.out),
            "--auto-cleanup",
            "--device",
            "cuda",
        ],
        "--device cuda",
    ),
    Case(
        "reconstruct: weights offline",
        "reconstruct",
        lambda w: [f"scene={w.good_images}", f"output_dir={w.out}", *FAST, "model.weights=pretrained"],
        "Hugging Face Hub is unreachable",
        prepare=_no_hub_cache,
    ),
    Case(
        "video_depth: weights offline",
        "video_depth",
        lambda w: [f"video={w.good_video}", f"output_dir={w.out}", "input_size=56", "device=cpu"],
        "Hugging Face Hub is unreachable",
        prepare=_no_hub_cache,
    ),
    Case(
        "da3: weights offline",
        "da3",
        lambda w: [
            "images",
            str(w.good_images),
            "--preset",
            "da3-small",
            "--process-res",
            "56",
            "--export-dir",
            str(w.out),
            "--auto-cleanup",
        ],
        "Hugging Face Hub is unreachable",
        prepare=_no_hub_cache,
    ),
    Case(
        "reconstruct: model.path missing",
        "reconstruct",
        lambda w: [
            f"scene={w.good_images}",
            f"output_dir={w.out}",
            *FAST,
            "model.weights=pretrained",
            f"model.path={w.tmp / 'models' / 'DA3-SMALL'}",
        ],
        "model dir not found",
    ),
    Case(
        "video_depth: weights file missing",
        "video_depth",
        lambda w: [f"video={w.good_video}", f"output_dir={w.out}", "input_size=56", f"weights={w.tmp / 'vda.pth'}"],
        "checkpoint not found",
    ),
    Case(
        "da3: --model-dir missing",
        "da3",
        lambda w: [
            "images",
            str(w.good_images),
            "--model-dir",
            str(w.tmp / "models" / "DA3"),
            "--export-dir",
            str(w.out),
            "--auto-cleanup",
        ],
        "not found",
    ),
    *[
        Case(
            f"da3: --model-dir, {builder}",
            "da3",
            lambda w, b=builder: [
                "image",
                str(w.good_images / "frame_0000.png"),
                "--model-dir",
                str(BUILDERS[b](w.tmp)),
                *DA3_FAST[:2],  # --weights random: only config.json is read
                "--export-dir",
                str(w.out),
                "--auto-cleanup",
            ],
            expect,
        )
        for builder, expect in (
            ("model dir config.json [1,2]", "does not name its preset"),
            ("model dir model_name 5", "config.json has model_name 5"),
            ("model dir two presets", "'da3-small,da3-base', which is not a DA3 preset; fix the file or pass --preset"),
            ("model dir unknown preset", "'da3-nosuch', which is not a DA3 preset; fix the file or pass --preset"),
            ("model dir broken json", "config.json is not readable JSON"),
        )
    ],
    Case(
        "reconstruct: damaged weights file",
        "reconstruct",
        lambda w: [
            f"scene={w.good_images}",
            f"output_dir={w.out}",
            *FAST,
            "model.weights=pretrained",
            f"model.path={BUILDERS['damaged model dir'](w.tmp)}",
        ],
        "damaged or incomplete download",
        stage="flow",
    ),
    # --cfg with an unknown key or a bad value, on all three flows
    *[
        _cfg(entry, flag, override, expect)
        for entry, bad_value, expect_bad in (
            ("reconstruct", "model.device=gpu", "gpu"),
            ("batch", "concurrency=abc", "abc"),
            ("video_depth", "encoder=vitx", "vitx"),
        )
        for flag in (["--cfg"], ["--cfg", "job"])
        for override, expect in (("no_such_key=1", "no_such_key"), (bad_value, expect_bad))
    ],
    # presets that predict no cameras: exports that need them, and COLMAP cameras to condition on
    Case(
        "da3 image: a mono preset with the default glb export",
        "da3",
        lambda w: [
            "image",
            str(sorted(BUILDERS["good folder"](w.tmp).iterdir())[0]),
            "--preset",
            "da3mono-large",
            "--weights",
            "random",
            "--export-dir",
            str(w.out),
        ],
        "--export-format: export format 'glb' needs camera poses: mono and metric presets predict none",
    ),
    Case(
        "reconstruct: a metric preset with a ply export",
        "reconstruct",
        lambda w: [
            f"scene={BUILDERS['good folder'](w.tmp)}",
            f"output_dir={w.out}",
            *FAST,
            "model=da3metric-large",
            "export=ply",
        ],
        "export format 'ply' needs camera poses",
    ),
    Case(
        "reconstruct: a mono preset on a COLMAP dataset",
        "reconstruct",
        lambda w: [f"scene={BUILDERS['good colmap'](w.tmp)}", f"output_dir={w.out}", *FAST, "model=da3mono-large"],
        "is a COLMAP dataset, whose cameras condition the model, but da3mono-large takes no cameras",
        stage="flow",
    ),
    # a value of the wrong type names what to write
    _cfg("reconstruct", [], "processing.process_res=abc", "converted to Integer (write a whole number)"),
    _cfg("batch", [], "storage.lock_timeout=soon", "converted to Float (write a number)"),
    _cfg("video_depth", [], "fp32=maybe", "not a valid bool (type str) (write true or false)"),
    # services
    Case(
        "da3 backend: 0.0.0.0 without a token",
        "da3",
        lambda w: ["backend", "--host", "0.0.0.0", "--weights", "random", "--preset", "da3-small"],
        "without a token",
    ),
    Case(
        "da3 gallery: 0.0.0.0 without a token",
        "da3",
        lambda w: ["gallery", "--host", "0.0.0.0", "--gallery-dir", str(w.tmp)],
        "refusing to serve the gallery on 0.0.0.0 without a token",
    ),
    Case(
        "da3 gradio: 0.0.0.0 without a token",
        "da3",
        lambda w: ["gradio", "--host", "0.0.0.0", "--weights", "random", "--preset", "da3-small"],
        "refusing to serve the gradio app on 0.0.0.0 without a token",
    ),
    Case(
        "da3 gradio: a public link without a token",
        "da3",
        lambda w: ["gradio", "--share", "--weights", "random", "--preset", "da3-small"],
        "gradio.live link without a token",
    ),
    Case(
        "da3 backend: model dir missing",
        "da3",
        lambda w: ["backend", "--model-dir", str(w.tmp / "models" / "DA3")],
        "DA3 not found; give a local model dir",
    ),
    Case(
        "da3 backend: weights offline",
        "da3",
        lambda w: ["backend", "--preset", "da3-small", "--port", "1"],
        "Hugging Face Hub is unreachable",
        prepare=_no_hub_cache,
    ),
    Case(
        "da3 gradio: model dir missing",
        "da3",
        lambda w: ["gradio", "--model-dir", str(w.tmp / "models" / "DA3")],
        "DA3 not found; give a local model dir",
    ),
    Case(
        "da3 backend: damaged weights file",
        "da3",
        lambda w: ["backend", "--model-dir", str(BUILDERS["damaged model dir"](w.tmp)), "--port", "1"],
        "damaged or incomplete download",
    ),
    Case(
        "da3 gradio: damaged weights file",
        "da3",
        lambda w: ["gradio", "--model-dir", str(BUILDERS["damaged model dir"](w.tmp)), "--port", "1"],
        "damaged or incomplete download",
    ),
    Case(
        "da3 gradio: weights offline",
        "da3",
        lambda w: ["gradio", "--preset", "da3-small", "--port", "1"],
        "Hugging Face Hub is unreachable",
        prepare=_no_hub_cache,
    ),
]


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> dict[str, Path]:
    """Good inputs and the complete results of an earlier run on them (a scene and a video)."""
    root = tmp_path_factory.mktemp("good")
    images = root / "images"
    write_image_folder(CAPTURE, images)
    video = write_video(make_capture(n_views=8, width=64, height=48, seed=2), root / "walk.mp4", fps=8.0).path
    assert flows.reconstruct.main([f"scene={images}", f"output_dir={root / 'scene-result'}", *FAST]) == 0
    assert flows.video_depth.main([f"video={video}", f"output_dir={root / 'video-result'}", *VIDEO_FAST]) == 0
    return {"images": images, "video": video, "scene": root / "scene-result", "video_result": root / "video-result"}


@pytest.fixture()
def terminal(capfd):
    """A :class:`Terminal` over ``capfd``."""
    term = Terminal(capfd)
    term.readouterr()
    yield term
    term.restore()


def _invoke(entry: str, argv: list[str]) -> int:
    if entry != "da3":
        return FLOWS[entry].main(argv)
    result = CliRunner().invoke(flows.cli.app, argv)
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        import traceback

        traceback.print_exception(result.exception, file=sys.stderr)
    return result.exit_code


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_user_error(case: Case, good, tmp_path, terminal, monkeypatch):
    where = Where(tmp_path / "work", tmp_path / "out", good["images"], good["video"], monkeypatch)
    where.tmp.mkdir()
    shutil.copytree(
        good["video_result" if case.entry == "video_depth" else "scene"],
        where.out / "earlier" if case.entry == "batch" else where.out,
    )
    if case.prepare is not None:
        case.prepare(where)
    argv = case.args(where)
    before = file_tree(where.out)
    if case.stage == "before":  # the flow must not be entered
        module = flows.reconstruct if case.entry == "da3" else FLOWS[case.entry]
        monkeypatch.setattr(module, FLOW_FUNCTION[case.entry], _must_not_run)
    terminal.readouterr()
    started = datetime.now(timezone.utc)
    code = _invoke(case.entry, argv)
    captured = terminal.readouterr()
    check_one_error(code, captured.out, captured.err, case.expect)
    assert file_tree(where.out) == before, "an earlier result changed"
    if case.stage == "flow":
        runs, logs = flow_runs_since(started)
        assert runs and all(r.state.is_failed() for r in runs), [r.state for r in runs]
        assert logs and not any("Traceback" in message for message in logs), logs
        assert all(len(r.state.message.splitlines()) == 1 for r in runs), [r.state.message for r in runs]


def _must_not_run(*args, **kwargs):
    raise AssertionError("the flow started: this mistake should have been caught before Prefect")


@contextmanager
def _mounted(options: list[str], target: Path) -> Iterator[None]:
    """Mount ``options`` at ``target`` (root only); skip when mounting is not possible here."""
    target.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", *options, target], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount here ({proc.stderr.strip() or proc.returncode})")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", target], check=True)


def test_full_disk_before_and_during_the_run(good, tmp_path, terminal, monkeypatch):
    """A tmpfs with too little room: refused before Prefect when the least the result needs does not fit, and
    reported from inside the flow (ENOSPC) when the estimate fits but the result does not; the earlier result stays."""
    disk = tmp_path / "disk"
    with _mounted(["-t", "tmpfs", "-o", "size=4m", "tmpfs"], disk):
        out = disk / "out"
        shutil.copytree(good["scene"], out)
        before = file_tree(out)
        used = os.statvfs(disk).f_bsize * (os.statvfs(disk).f_blocks - os.statvfs(disk).f_bfree)
        # Room for the pre-check's lower bound, not for a second store beside the first.
        room = flows.preflight.store_bytes(len(CAPTURE), 56**2) + 2 * 4096
        for size, stage, expect in (
            (used + 4096, "before", "not enough free space"),
            (used + room, "flow", "no space left on the device"),
        ):
            subprocess.run(["mount", "-o", f"remount,size={size}", "tmpfs", disk], check=True)
            if stage == "before":
                monkeypatch.setattr(flows.reconstruct, "reconstruct", _must_not_run)
            else:
                monkeypatch.undo()
            terminal.readouterr()
            code = flows.reconstruct.main([f"scene={good['images']}", f"output_dir={out}", *FAST, "force=true"])
            captured = terminal.readouterr()
            check_one_error(code, captured.out, captured.err, expect)
            assert file_tree(out) == before, f"{stage}: the earlier result changed"
        assert SceneStore(str(out / "scene.zarr")).is_complete()


def test_read_only_scene_directory(good, tmp_path, terminal, monkeypatch):
    out = tmp_path / "ro"
    shutil.copytree(good["scene"], out)
    before = file_tree(out)
    with _mounted(["--bind", "-o", "ro", str(out)], out):
        subprocess.run(["mount", "-o", "remount,bind,ro", out], check=True)
        monkeypatch.setattr(flows.reconstruct, "reconstruct", _must_not_run)
        terminal.readouterr()
        code = flows.reconstruct.main([f"scene={good['images']}", f"output_dir={out}", *FAST, "force=true"])
        captured = terminal.readouterr()
        check_one_error(code, captured.out, captured.err, "Read-only file system")
    assert file_tree(out) == before


@pytest.mark.slow
def test_s3_endpoint_dies_mid_run(good, terminal):
    """The moto server is stopped when inference starts: one line, exit 2, the earlier store on S3 unharmed."""
    with moto_server() as (server, options):
        endpoint = options["client_kwargs"]["endpoint_url"]
        argv = [
            f"scene={good['images']}",
            "storage.root=s3://da3-test/dying",
            *FAST,
            f"+storage.options.key={options['key']}",
            f"+storage.options.secret={options['secret']}",
            f"+storage.options.client_kwargs.endpoint_url={endpoint}",
        ]
        assert flows.reconstruct.main(argv) == 0
        store = SceneStore(f"s3://da3-test/dying/{good['images'].name}/scene.zarr", options)
        earlier = store.attrs()["complete"]

        def stop_at_inference(fraction: float, message: str) -> None:
            if message.startswith("inference"):
                server.stop()

        terminal.readouterr()
        started = datetime.now(timezone.utc)
        with progress_to(stop_at_inference):
            code = flows.reconstruct.main([*argv, "force=true"])
        captured = terminal.readouterr()
        check_one_error(code, captured.out, captured.err, "storage endpoint unreachable")
        runs, logs = flow_runs_since(started)
        assert runs and all(r.state.is_failed() for r in runs) and not any("Traceback" in m for m in logs)
    with moto_server() as (_, options):  # the same in-memory backend, served again
        assert SceneStore(store.url, options).attrs()["complete"] == earlier


@pytest.mark.slow
def test_terminal_of_a_real_process(tmp_path):
    """Outside pytest: a mistake caught in the flow and one caught before it, as separate processes."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PREFECT_LOGGING_LEVEL": "INFO"}
    truncated = BUILDERS["truncated image"](tmp_path)
    for argv, expect in (
        ([f"scene={truncated}"], "damaged or cut short"),
        ([f"scene={tmp_path / 'nope'}"], "input not found"),
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "flows.reconstruct", *argv, f"storage.root={tmp_path / 'out'}", *FAST],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        check_one_error(proc.returncode, proc.stdout, proc.stderr, expect)


@pytest.mark.slow
def test_ctrl_c_mid_inference(good, tmp_path):
    """SIGINT while the model runs: one ``error: interrupted`` line, exit 130, no traceback, the earlier result kept."""
    out = tmp_path / "out"
    shutil.copytree(good["scene"], out)
    before, log = file_tree(out), tmp_path / "terminal.txt"
    argv = [f"scene={good['images']}", f"output_dir={out}", *FAST, "processing.process_res=448", "force=true"]
    with log.open("w") as terminal:  # a file, not a pipe: nothing blocks while the test waits
        proc = subprocess.Popen(
            [sys.executable, "-m", "flows.reconstruct", *argv],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "PREFECT_LOGGING_LEVEL": "INFO"},
            stdout=terminal,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 300
        # The model is built (its warning about random weights) and runs for seconds at 448 px on a CPU. Not
        # earlier: a SIGINT while torch is being imported aborts the process inside torch's C++ start-up.
        while "UNTRAINED" not in log.read_text() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=120)
    text = log.read_text()
    lines = [ln for ln in text.splitlines() if ln.startswith("error:")]
    assert code == 130 and "Traceback" not in text, text[-4000:]
    assert len(lines) == 1 and lines[0].startswith("error: interrupted; run the command again"), text[-4000:]
    assert file_tree(out) == before and SceneStore(str(out / "scene.zarr")).is_complete()


@pytest.mark.slow
def test_prefect_api_url_mistakes(tmp_path):
    """A malformed or dead PREFECT_API_URL is the user's setting: one line naming it and the fix, also in a sweep."""
    out = tmp_path / "out"
    write_image_folder(CAPTURE, tmp_path / "views")
    for url, multirun, expect in (
        ("not-a-url", [], "PREFECT_API_URL=not-a-url is not an http(s) URL; unset it"),
        ("not-a-url", ["-m"], "PREFECT_API_URL=not-a-url is not an http(s) URL; unset it"),
        ("http://127.0.0.1:9/api", [], "cannot reach the Prefect API at PREFECT_API_URL=http://127.0.0.1:9/api"),
        ("http://127.0.0.1:9/api", ["-m"], "start that server (prefect server start) or unset PREFECT_API_URL"),
    ):
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "flows.reconstruct",
                *multirun,
                f"scene={tmp_path / 'views'}",
                f"output_dir={out}",
                *FAST,
            ],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "PREFECT_API_URL": url},
            capture_output=True,
            text=True,
            timeout=300,
            input="",
        )
        check_one_error(proc.returncode, proc.stdout, proc.stderr, expect)
        assert not out.exists() or not any(out.iterdir()), "no result may be written"


def test_batch_exit_code_says_whose_fault(tmp_path, good, terminal):
    """A batch whose only failures are user errors exits 2 (1 is for bugs), naming the failed scene."""
    data = tmp_path / "data"
    shutil.copytree(good["images"], data / "fine")
    BUILDERS["truncated image"](data)  # data/views: one view cut short
    code = flows.batch.main([f"dataset={data}", f"storage.root={tmp_path / 'out'}", *FAST])
    captured = terminal.readouterr()
    lines = [ln for ln in (captured.out + captured.err).splitlines() if ln.startswith("error:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in captured.out + captured.err
    assert "views: FAILED: cannot read image" in captured.out and "fine: done" in captured.out
