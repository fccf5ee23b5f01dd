"""Replacing a local scene store, killed (SIGKILL) at every step: a reader sees the old complete store, no store,
or an unmarked one, never a marked store with missing or mixed arrays; the next writer cleans up and finishes.

The writer is ``tests/store_scripts/replace_store.py`` in a child process: it kills itself at a named point through
hooks on the os calls the store makes, and once at the same point through ``strace -e inject`` from outside.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr
from paths import REPO_ROOT
from store_scripts.replace_store import KILL_POINTS, marker_hash, prediction
from store_scripts.replace_store import main as replace_store

from da3core.store import SceneStore

pytestmark = pytest.mark.slow  # servers, subprocesses and kills: seconds each

SCRIPT = REPO_ROOT / "tests" / "store_scripts" / "replace_store.py"
ENV = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
OLD, NEW = (8, 0), (3, 1)  # (views, seed): the new store is smaller, so stale old chunks would show
ARRAYS = {"images", "depth", "conf", "sky", "extrinsics", "intrinsics", "frame", "timestamp", "source_name"}

# What a reader finds after the kill: the old complete store, no store, or the new one without its marker.
EXPECTED = {
    "staging": "old",
    "before-swap": "old",
    "between-renames": "none",
    "deleting-old": "new-unmarked",
    "before-marker": "new-unmarked",
}


@pytest.fixture(scope="module")
def old_store(tmp_path_factory) -> Path:
    """A complete 8-view store to copy into place before each kill."""
    url = tmp_path_factory.mktemp("pristine") / "scene.zarr"
    replace_store([str(url), *map(str, OLD)])
    return url


def assert_holds(url: Path, views: int, seed: int) -> None:
    """The store at ``url`` has exactly the arrays of ``prediction(views, seed)``, nothing else."""
    group = zarr.open_group(str(url), mode="r")
    assert {name for name, _ in group.arrays()} == ARRAYS
    expected = prediction(views, seed)
    for name, field in (
        ("images", "processed_images"),
        ("depth", "depth"),
        ("conf", "conf"),
        ("sky", "sky"),
        ("extrinsics", "extrinsics"),
        ("intrinsics", "intrinsics"),
    ):
        np.testing.assert_array_equal(group[name][...], getattr(expected, field), err_msg=name)


def reader_sees(url: Path) -> str:
    """What the store at ``url`` is, checked array by array against what each writer wrote."""
    store = SceneStore(str(url))
    if not store.exists():
        return "none"
    marker = store.marker()
    if marker is not None:
        assert marker["config_hash"] == marker_hash(*OLD), marker  # only the old store can carry a marker here
        assert_holds(url, *OLD)
        return "old"
    assert_holds(url, *NEW)
    return "new-unmarked"


def kill_then_recover(tmp_path: Path, old_store: Path, command: list[str]) -> str:
    """Run ``command`` (a killed replacement) on a copy of the old store; check it was killed; recover in process."""
    url = tmp_path / "scene.zarr"
    shutil.copytree(old_store, url)
    proc = subprocess.run(command + [str(url), *map(str, NEW)], env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode in (-9, 137), proc.stderr[-2000:]
    seen = reader_sees(url)
    replace_store([str(url), *map(str, NEW)])  # the next writer: takes over the lock, discards the leftovers
    assert SceneStore(str(url)).marker()["config_hash"] == marker_hash(*NEW)
    assert_holds(url, *NEW)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene.zarr"], "leftovers or lock file remain"
    return seen


@pytest.mark.parametrize("point", KILL_POINTS)
def test_kill_at_each_step_of_a_replacement(tmp_path, old_store, point):
    seen = kill_then_recover(tmp_path, old_store, [sys.executable, str(SCRIPT), "--kill-at", point])
    assert seen == EXPECTED[point]


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace not installed (scripts/test.sh installs it)")
def test_kill_by_strace_when_the_old_store_is_renamed(tmp_path, old_store):
    """The same point driven from outside: SIGKILL on entry to rename(2) of the store path."""
    url = tmp_path / "scene.zarr"
    strace = [
        "strace",
        "-f",
        "-qq",
        "-o",
        "/dev/null",
        "-e",
        "trace=rename,renameat,renameat2",
        "-e",
        "inject=rename,renameat,renameat2:signal=KILL:when=1",
        "-P",
        str(url),
    ]
    assert kill_then_recover(tmp_path, old_store, [*strace, sys.executable, str(SCRIPT)]) == "old"
