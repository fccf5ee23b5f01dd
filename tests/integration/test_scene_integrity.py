"""The reconstruct flow never serves a wrong result as complete: the issue-16 kill during a rerun, two runs on one
scene at once (real processes), the skip decision against source and content, and force with fewer views.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from live import kill_group
from paths import REPO_ROOT
from PIL import Image

from da3core.store import SceneStore
from da3core.synthetic import make_capture, write_image_folder
from flows.config import load_config
from flows.reconstruct import main, reconstruct

FAST = ["model=da3-small", "model.weights=random", "export=mini_npz"]


def _argv(scene: Path, out: Path, res: int, *extra: str) -> list[str]:
    return [f"scene={scene}", f"storage.root={out}", *FAST, f"processing.process_res={res}", *extra]


def _depth(store: Path) -> np.ndarray:
    return zarr.open_group(str(store), mode="r")["depth"][...]


def _arrays(store: Path) -> dict[str, np.ndarray]:
    return {name: array[...] for name, array in zarr.open_group(str(store), mode="r").arrays()}


def _flow_process(argv: list[str], log: Path, prefix: tuple[str, ...] = ()) -> subprocess.Popen:
    """``python -m flows.reconstruct ARGV`` in its own session, output to ``log`` (a pipe would be held open by the
    Prefect server that a killed flow leaves behind)."""
    with open(log, "w") as out:
        return subprocess.Popen(
            [*prefix, sys.executable, "-m", "flows.reconstruct", *argv],
            cwd=REPO_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _end_of_traced_flow(proc: subprocess.Popen, strace_log: Path, timeout: float = 600) -> str:
    """How the flow traced by ``proc`` (strace) ended, as strace logged it: "killed by SIGKILL" or "exited with N".
    Then its whole session is ended: a killed flow leaves its Prefect server running, traced by strace."""
    deadline = time.time() + timeout
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    try:
        while not (pids := children.read_text().split()) and time.time() < deadline:
            time.sleep(0.05)
        while time.time() < deadline:
            ends = [
                line.split("+++")[1].strip()
                for line in strace_log.read_text().splitlines()
                if line.split()[:2] == [pids[0], "+++"]
            ]
            if ends:
                return ends[0]
            time.sleep(0.2)
        raise AssertionError(f"the flow under strace did not end within {timeout}s")
    finally:
        kill_group(proc.pid)
        proc.wait()


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("strace") is None, reason="strace not installed (scripts/test.sh installs it)")
def test_issue_kill_in_depth_delete_during_rerun_then_rerun_first_command(room, tmp_path):
    """Kill at the first unlink inside scene.zarr/depth during a rerun with another process_res, then rerun the
    first command: it must not be skipped with a broken store (it was: marker kept, depth gone)."""
    out = tmp_path / "out"
    first = _argv(room, out, 56)
    assert reconstruct(load_config("reconstruct", first)).status == "done"
    store = out / "room" / "scene.zarr"
    arrays = _arrays(store)
    strace_log = tmp_path / "strace.log"
    strace = (
        "strace",
        "-f",
        "-q",
        "-o",
        str(strace_log),
        "-e",
        "trace=unlink,unlinkat,rmdir",
        "-e",
        "inject=unlink,unlinkat,rmdir:signal=KILL:when=1",
        "-P",
        str(store / "depth"),
    )
    rerun = _end_of_traced_flow(_flow_process(_argv(room, out, 112), tmp_path / "rerun.log", strace), strace_log)
    assert rerun in ("killed by SIGKILL", "exited with 0"), (tmp_path / "rerun.log").read_text()[-3000:]
    again = reconstruct(load_config("reconstruct", first))
    if again.status == "skipped":  # allowed only if the first result is whole
        assert rerun == "killed by SIGKILL"
    complete = SceneStore(str(store)).marker()
    assert complete is not None and complete["config_hash"] == SceneStore(str(store)).attrs()["config_hash"]
    again_arrays = _arrays(store)
    assert again_arrays.keys() == arrays.keys() and {"images", "depth", "conf", "extrinsics"} <= arrays.keys()
    for name, values in arrays.items():
        np.testing.assert_array_equal(again_arrays[name], values, err_msg=name)
    assert sorted(p.name for p in store.parent.iterdir()) == ["exports", "scene.zarr"]


def _lock_holder(lock: Path, deadline: float) -> int:
    """The pid written into ``lock`` once its holder has it."""
    while time.time() < deadline:
        try:
            return int(json.loads(lock.read_text())["pid"])
        except (OSError, ValueError, KeyError):
            time.sleep(0.05)
    raise AssertionError(f"no holder wrote {lock}")


@pytest.mark.slow
def test_two_runs_on_one_scene(room, tmp_path, capsys):
    """A second run (another real process) on a scene being written fails at once naming the holder, whatever its
    config; with storage.lock_timeout it waits, then skips (same config and input) or replaces the finished result."""
    out = tmp_path / "out"
    store = out / "room" / "scene.zarr"
    first = _flow_process(_argv(room, out, 56), tmp_path / "first.log")
    holder = None
    try:
        holder = _lock_holder(Path(f"{store}.lock"), time.time() + 300)
        assert holder == first.pid
        os.kill(holder, signal.SIGSTOP)  # holds the lock, mid-run, for as long as this test wants
        for res in (112, 56):  # another config, then the same one
            assert main(_argv(room, out, res)) == 2
            line = capsys.readouterr().err.strip().splitlines()[-1]
            assert line.startswith(f"error: {store} is being written by") and f"pid {holder} on " in line, line
            assert "flows/reconstruct.py" in line and "storage.lock_timeout" in line, line
        threading.Timer(2.0, os.kill, (holder, signal.SIGCONT)).start()
        started = time.time()
        waited = reconstruct(load_config("reconstruct", _argv(room, out, 56, "storage.lock_timeout=600")))
        assert time.time() - started > 1.5 and waited.status == "skipped"
        assert first.wait(600) == 0, (tmp_path / "first.log").read_text()[-3000:]
    finally:
        if first.poll() is None:
            kill_group(first.pid)
            first.wait()
    reference = reconstruct(
        load_config(
            "reconstruct", [f"scene={room}", f"output_dir={tmp_path / 'ref56'}", *FAST, "processing.process_res=56"]
        )
    )
    np.testing.assert_array_equal(_depth(store), _depth(Path(reference.store_url)))
    other = reconstruct(load_config("reconstruct", _argv(room, out, 112, "storage.lock_timeout=5")))
    reference = reconstruct(
        load_config(
            "reconstruct", [f"scene={room}", f"output_dir={tmp_path / 'ref112'}", *FAST, "processing.process_res=112"]
        )
    )
    assert other.status == "done"
    np.testing.assert_array_equal(_depth(store), _depth(Path(reference.store_url)))


def test_skip_needs_the_same_source_and_content(room, tmp_path):
    out = tmp_path / "out"
    assert reconstruct(load_config("reconstruct", _argv(room, out, 56))).status == "done"
    elsewhere = tmp_path / "other" / "room"  # same scene name, another folder, other pictures
    write_image_folder(make_capture(4, 64, 48, seed=6), elsewhere)
    moved = reconstruct(load_config("reconstruct", _argv(elsewhere, out, 56)))
    store = SceneStore(moved.store_url)
    assert moved.status == "done" and store.attrs()["inputs"]["source"] == str(elsewhere.resolve())
    assert reconstruct(load_config("reconstruct", _argv(elsewhere, out, 56))).status == "skipped"
    view = sorted(elsewhere.iterdir())[1]
    Image.fromarray(np.full((48, 64, 3), 200, np.uint8)).save(view)  # replaced in place, same name
    changed = reconstruct(load_config("reconstruct", _argv(elsewhere, out, 56)))
    assert changed.status == "done"  # not skipped
    assert np.asarray(zarr.open_group(changed.store_url, mode="r")["images"][1]).std() < 1  # the new, flat view
    record = next(f for f in store.attrs()["inputs"]["files"] if f["name"] == view.name)
    assert record["sha256"] == __import__("hashlib").sha256(view.read_bytes()).hexdigest()


def test_force_with_fewer_views_replaces_the_export_set(room, tmp_path, monkeypatch):
    """Every export is written while the store carries no marker; force with fewer views leaves no stale files."""
    import da3core.export

    out = tmp_path / "out"
    export_calls = []
    real_export = da3core.export.export

    def unmarked_export(prediction, formats, export_dir, **kwargs):
        export_calls.append(SceneStore(str(Path(export_dir) / "scene.zarr")).marker())
        return real_export(prediction, formats, export_dir, **kwargs)

    monkeypatch.setattr(da3core.export, "export", unmarked_export)
    folder = out / "room"
    assert reconstruct(load_config("reconstruct", _argv(room, out, 56, "export=mini_npz+depth_vis"))).status == "done"
    assert sorted(p.name for p in (folder / "depth_vis").iterdir()) == [f"{i:04d}.jpg" for i in range(4)]
    assert (
        reconstruct(load_config("reconstruct", _argv(room, out, 56, "export=mini_npz+depth_vis+npz"))).status
        == "exported"
    )
    for view in sorted(room.iterdir())[2:]:
        view.unlink()
    result = reconstruct(load_config("reconstruct", _argv(room, out, 56, "export=mini_npz+depth_vis", "force=true")))
    assert result.status == "done" and len(export_calls) == 7 and all(m is None for m in export_calls)
    assert sorted(p.name for p in (folder / "depth_vis").iterdir()) == ["0000.jpg", "0001.jpg"]
    on_disk = {
        p.relative_to(folder).as_posix() for p in folder.rglob("*") if "scene.zarr" not in p.parts and p.is_file()
    }
    attrs = SceneStore(result.store_url).attrs()
    assert on_disk == set(attrs["export_files"]) and attrs["stale_exports"] == []
    assert not (folder / "exports" / "npz").exists()  # from the replaced inference: gone with it
    with np.load(folder / "exports" / "mini_npz" / "results.npz") as npz:
        assert npz["depth"].shape[0] == 2
