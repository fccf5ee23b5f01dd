"""The batch flow: every kind of scene in a dataset, failure isolation, resumption after SIGKILL, Dask workers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from live import kill_when
from paths import REPO_ROOT

from da3core.store import SceneStore
from da3core.synthetic import make_capture, write_colmap, write_image_folder, write_video
from flows.batch import batch, main
from flows.config import load_config

FAST = ["model=da3-small", "model.weights=random", "processing.process_res=56", "export=mini_npz"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dataset")
    write_image_folder(make_capture(3, 64, 48, seed=1), root / "kitchen")
    write_colmap(make_capture(4, 64, 48, seed=2), root / "garden")
    write_video(make_capture(12, 64, 48, seed=3), root / "walk.mp4", fps=6)
    (root / "notes.txt").write_text("not a scene")
    (root / ".hidden").mkdir()
    return root


@pytest.fixture()
def broken_dataset(dataset, tmp_path) -> Path:
    root = tmp_path / "with_broken"
    root.mkdir()
    os.symlink(dataset / "kitchen", root / "kitchen")
    os.symlink(dataset / "walk.mp4", root / "walk.mp4")
    (root / "broken").mkdir()
    (root / "broken" / "frame.png").write_bytes(b"not a png")
    return root


def test_all_scene_kinds_and_skip_on_rerun(dataset, tmp_path):
    argv = [f"dataset={dataset}", f"storage.root={tmp_path / 'out'}", "concurrency=2", *FAST]
    report = batch(load_config("batch", argv))
    assert sorted(r.name for r in report.results) == ["garden", "kitchen", "walk"] and not report.failures
    kinds = {r.name: SceneStore(r.store_url).attrs()["inputs"]["kind"] for r in report.results}
    assert kinds == {"garden": "colmap", "kitchen": "images", "walk": "video"}
    again = batch(load_config("batch", argv))
    assert {r.status for r in again.results} == {"skipped"}


def test_folders_whose_names_hold_dots_are_scenes_of_their_own(tmp_path):
    """``scan.1`` and ``scan.2`` used to be both named ``scan``: one result silently replaced the other."""
    for i in (1, 2):
        write_image_folder(make_capture(2, 64, 48, seed=i), tmp_path / "data" / f"scan.{i}")
    report = batch(load_config("batch", [f"dataset={tmp_path / 'data'}", f"storage.root={tmp_path / 'out'}", *FAST]))
    assert sorted(r.name for r in report.results) == ["scan.1", "scan.2"] and not report.failures
    for i in (1, 2):
        attrs = SceneStore(str(tmp_path / "out" / f"scan.{i}" / "scene.zarr")).attrs()
        assert attrs["source"] == str(tmp_path / "data" / f"scan.{i}") and attrs["complete"]


def test_one_failing_scene_does_not_stop_the_others(broken_dataset, tmp_path, capsys):
    code = main([f"dataset={broken_dataset}", f"storage.root={tmp_path / 'out'}", *FAST])
    captured = capsys.readouterr()
    assert code == 2  # a user error: the broken scene's image
    assert "broken: FAILED: cannot read image" in captured.out and "1 of 3 scenes failed" in captured.err
    assert SceneStore(str(tmp_path / "out" / "kitchen" / "scene.zarr")).is_complete()
    assert not SceneStore(str(tmp_path / "out" / "broken" / "scene.zarr")).exists()


def _completed(out: Path) -> dict[str, float]:
    done = {}
    for store_dir in out.glob("*/scene.zarr"):
        store = SceneStore(str(store_dir))
        if store.is_complete():
            done[store_dir.parent.name] = store.attrs()["stages"]["inference"]["finished_at"]
    return done


@pytest.mark.slow
def test_sigkill_mid_batch_then_resume(tmp_path):
    root = tmp_path / "data"
    for i in range(4):
        write_image_folder(make_capture(3, 64, 48, seed=10 + i), root / f"scene{i}")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "flows.batch", f"dataset={root}", f"storage.root={out}", "concurrency=1", *FAST]
    kill_when(cmd, lambda: _completed(out))
    before = _completed(out)
    assert 1 <= len(before) < 4, before
    for store_dir in out.glob("*/scene.zarr"):  # anything not finished must not claim to be
        name = store_dir.parent.name
        assert SceneStore(str(store_dir)).is_complete() == (name in before)
    subprocess.run(cmd, cwd=REPO_ROOT, check=True, capture_output=True, timeout=600)
    after = _completed(out)
    assert set(after) == {f"scene{i}" for i in range(4)}
    assert all(after[name] == stamp for name, stamp in before.items()), "finished scenes were recomputed"


@pytest.mark.slow
def test_dask_runner_with_two_workers(dataset, tmp_path):
    """The flow itself picks the runner from its config, so a served or deployed run honours runner=dask too."""
    argv = [f"dataset={dataset}", f"storage.root={tmp_path / 'out'}", "runner=dask", "dask_workers=2", *FAST]
    report = batch(load_config("batch", argv))
    assert not report.failures and len(report.results) == 3
    pids = {SceneStore(r.store_url).attrs()["worker"]["pid"] for r in report.results}
    assert len(pids) == 2 and os.getpid() not in pids  # scenes ran in the two worker processes
