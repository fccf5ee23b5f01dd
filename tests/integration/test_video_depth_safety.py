"""The video_depth flow's outputs and store are one result: killed (SIGKILL) right after any output or the store
is published, the folder holds the old complete result, or a store without its marker, never a marked store beside
another run's outputs; the next run repairs it, removes the staging files killed runs left, and a rerun whose
config writes fewer outputs removes the ones it does not write.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from live import kill_group
from paths import REPO_ROOT

from da3core.store import SceneStore
from da3core.synthetic import make_capture, write_video
from flows.config import load_config
from flows.video_depth import video_depth

TINY = ["weights=random", "input_size=56", "max_res=64", "device=cpu"]
ALL = ["save_npz=true", "save_depth_video=true", "save_depth_frames=true", "save_point_clouds=true"]
FEWER = ["max_frames=3", "save_npz=true", "save_depth_video=true", "save_depth_frames=true"]  # no point clouds
FRAMES = 6

# Runs the flow's command line, SIGKILLing itself right after the first rename/replace onto the name argv[1].
KILLER = """
import os, runpy, signal, sys
name = sys.argv[1]
def killing(real):
    def call(src, dst, *args, **kwargs):
        real(src, dst, *args, **kwargs)
        if os.path.basename(os.fspath(dst)) == name:
            os.kill(os.getpid(), signal.SIGKILL)
    return call
os.replace, os.rename = killing(os.replace), killing(os.rename)
sys.argv = ["flows.video_depth", *sys.argv[2:]]
runpy.run_module("flows.video_depth", run_name="__main__", alter_sys=True)
"""


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """6 frames of 64x48 at 10 fps."""
    capture = make_capture(n_views=FRAMES, width=64, height=48, arc_deg=20.0, seed=5)
    return write_video(capture, tmp_path_factory.mktemp("videos") / "clip.mp4", fps=10).path


@pytest.fixture(scope="module")
def pristine(clip, tmp_path_factory) -> Path:
    """A complete result of every output, to copy before each run that is killed."""
    out = tmp_path_factory.mktemp("pristine") / "out"
    assert run(clip, out, ALL).status == "done"
    return out


def run(clip: Path, out: Path, extra: list[str]):
    """The flow in this process."""
    return video_depth(load_config("video_depth", [f"video={clip}", f"output_dir={out}", *TINY, *extra]))


def video_frames(path: Path) -> int:
    import av

    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def check_folder(out: Path) -> int | None:
    """A marked store stands only beside exactly the outputs its config writes, each of its frames; returns its
    frame count (None: no marked store, which a rerun redoes)."""
    store = SceneStore(str(out / "depth.zarr"))
    if not store.is_complete():
        return None
    attrs = store.attrs()
    n, cfg = attrs["n_frames"], attrs["config"]
    frames = store.read_array("frame").tolist()
    records = [json.loads(line)["frame_index"] for line in (out / "depth.ndjson").read_text().splitlines()]
    assert records == frames, f"depth.ndjson holds frames {records} beside a marked store of frames {frames}"
    expected = {"depth.zarr", "depth.ndjson"}
    if cfg["save_npz"]:
        expected.add("clip_depths.npz")
        with np.load(out / "clip_depths.npz") as npz:
            np.testing.assert_array_equal(npz["depths"], store.read_array("depth"))
    if cfg["save_depth_video"]:
        expected.add("clip_vis.mp4")
        assert video_frames(out / "clip_vis.mp4") == n
    if cfg["save_depth_frames"]:
        expected.add("depth_frames")
        assert sorted(os.listdir(out / "depth_frames")) == [f"depth_{i:05d}.png" for i in range(n)]
    if cfg["save_point_clouds"]:
        expected.add("point_clouds")
        names = [f"point_{i:04d}.csv" for i in range(n)] + ["point_cloud_info.json"]
        assert sorted(os.listdir(out / "point_clouds")) == sorted(names)
    visible = {p.name for p in out.iterdir() if not p.name.startswith(".") and p.name != "depth.zarr.lock"}
    assert visible == expected, "outputs of another run beside the marked store"
    return n


def hidden(out: Path) -> list[str]:
    """Staging files and folders anywhere in the output folder."""
    return sorted(str(p.relative_to(out)) for p in out.rglob(".*"))


@pytest.mark.slow
@pytest.mark.parametrize("kill_on", ["depth.ndjson", "depth.zarr", "clip_vis.mp4", "depth_00000.png"])
def test_killed_rerun_leaves_one_result_and_the_next_run_repairs_it(tmp_path, clip, pristine, kill_on):
    out = tmp_path / "out"
    subprocess.run(["cp", "-r", str(pristine), str(out)], check=True)
    argv = [f"video={clip}", f"output_dir={out}", *TINY, *FEWER]
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLER, kill_on, *argv],
        cwd=REPO_ROOT,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    try:
        assert proc.wait(timeout=300) == -9, "the run was not killed at " + kill_on
    finally:
        kill_group(proc.pid)
    assert check_folder(out) in (FRAMES, None)  # the old complete result, or an unmarked store

    again = run(clip, out, ALL)  # the old config again: never skipped beside the killed run's outputs
    assert check_folder(out) == FRAMES and hidden(out) == [], (again.status, hidden(out))
    assert run(clip, out, FEWER).status == "done" and check_folder(out) == 3 and hidden(out) == []


def test_rerun_with_fewer_outputs_removes_the_previous_ones(tmp_path, clip):
    out = tmp_path / "out"
    assert run(clip, out, ALL).status == "done" and check_folder(out) == FRAMES
    (out / "notes.txt").write_text("mine")  # not an output: stays
    assert run(clip, out, ["max_frames=3"]).status == "done"
    assert sorted(p.name for p in out.iterdir() if p.name != "depth.zarr.lock") == [
        "depth.ndjson",
        "depth.zarr",
        "notes.txt",
    ]
    (out / "notes.txt").unlink()
    assert check_folder(out) == 3
    assert SceneStore(str(out / "depth.zarr")).attrs()["output_files"] == ["depth.ndjson"]
    assert run(clip, out, ALL).status == "done" and check_folder(out) == FRAMES


def test_rerun_removes_staging_left_by_killed_runs(tmp_path, clip):
    out = tmp_path / "out"
    assert run(clip, out, ALL).status == "done"
    planted = [
        ".depth.tmp-0123abcd.ndjson",
        ".clip_vis.tmp-89abcdef.mp4",
        ".clip_depths.tmp-00ff00ff.npz",
        "depth_frames/.da3-export-k1ll3d/depth_00003.png",
        "point_clouds/.da3-export-x/point_0001.csv",
        "clip_depths_exr/.da3-export-y/frame_00000.exr",  # a folder left with nothing but staging
    ]
    for rel in planted:
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(b"half")
    (out / ".keep").write_text("not ours")
    assert run(clip, out, ALL).status == "skipped"  # a complete result: reused, and the staging still goes
    assert hidden(out) == [".keep"] and not (out / "clip_depths_exr").exists()
    assert check_folder(out) == FRAMES


def test_rerun_over_a_result_without_an_output_list_removes_what_its_config_wrote(tmp_path, clip):
    import zarr

    out = tmp_path / "out"
    assert run(clip, out, ALL).status == "done"
    group = zarr.open_group(str(out / "depth.zarr"), mode="r+", use_consolidated=False)
    del group.attrs["output_files"]  # as a store written before the list existed
    assert run(clip, out, FEWER).status == "done" and check_folder(out) == 3


def test_a_video_rewritten_while_decoded_replaces_nothing(tmp_path, clip, pristine, monkeypatch):
    import shutil
    import time

    from da3core.io import video as video_io
    from da3core.io.inputs import InputError

    video, out = tmp_path / "clip.mp4", tmp_path / "out"
    shutil.copy(clip, video)
    shutil.copytree(pristine, out)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    real = video_io.iter_frames

    def rewritten_after_the_first_frame(*args, **kwargs):
        frames = real(*args, **kwargs)
        yield next(frames)
        time.sleep(0.05)  # past the file system's timestamp tick
        with open(video, "r+b") as f:  # another program rewrites the video in place: same size, new bytes
            f.seek(-8, 2)
            tail = f.read(8)
            f.seek(-8, 2)
            f.write(bytes(b ^ 0xFF for b in tail))
        yield from frames

    monkeypatch.setattr(video_io, "iter_frames", rewritten_after_the_first_frame)
    with pytest.raises(InputError, match="changed while this run read it"):
        run(video, out, [*ALL, "force=true"])
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before and hidden(out) == []  # the earlier result stands, byte for byte
