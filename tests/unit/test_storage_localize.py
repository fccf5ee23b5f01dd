"""The local copy of a remote input (da3core.io.storage.localize), on fsspec's in-memory filesystem: runs reading
one input at once fetch it once, and a copy cut short by a kill is fetched again whole."""

from __future__ import annotations

import threading
from pathlib import Path

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from da3core.io.storage import localize

FILES = {"a.jpg": b"first image", "b.jpg": b"second image", "sub/c.jpg": b"third image"}


@pytest.fixture
def remote(tmp_path, monkeypatch) -> str:
    """A remote folder on fsspec's in-memory filesystem; the cache under tmp_path."""
    monkeypatch.setenv("DA3_CACHE_DIR", str(tmp_path / "cache"))
    fs = fsspec.filesystem("memory")
    root = f"/localize-{tmp_path.name}/room"
    for name, data in FILES.items():
        fs.pipe_file(f"{root}/{name}", data)
    yield f"memory://{root}"
    fs.rm(root, recursive=True)


def _contents(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_runs_localizing_one_input_at_once_fetch_it_once(remote, monkeypatch):
    """The first run is held after its first file; a second run meanwhile waits for it and reuses its copy."""
    fetched, resume, calls = threading.Event(), threading.Event(), []
    get_file = MemoryFileSystem.get_file

    def held_get_file(self, rpath, lpath, **kwargs):
        calls.append(rpath)
        get_file(self, rpath, lpath, **kwargs)
        if threading.current_thread().name == "first" and not fetched.is_set():
            fetched.set()
            resume.wait(30)

    monkeypatch.setattr(MemoryFileSystem, "get_file", held_get_file)
    results: dict[str, Path] = {}
    first = threading.Thread(target=lambda: results.update(first=localize(remote)), name="first")
    first.start()
    assert fetched.wait(30)
    second = threading.Thread(target=lambda: results.update(second=localize(remote)), name="second")
    second.start()
    second.join(1.0)
    resume.set()
    first.join(30)
    second.join(30)
    assert results["first"] == results["second"]
    assert _contents(results["first"]) == FILES
    files = [f"{remote.removeprefix('memory://')}/{name}" for name in FILES]
    assert sorted(c for c in calls if c in files) == sorted(files)  # each fetched once


def test_a_copy_cut_short_is_fetched_again_whole(remote):
    """Without its completion marker, a copy holding a stray file (a killed download) is replaced, not reused."""
    target = localize(remote)
    (target.parent / ".complete").unlink()
    (target / "a.jpg").write_bytes(b"cut sh")
    (target / "stray.part").write_bytes(b"junk")
    assert localize(remote) == target
    assert _contents(target) == FILES
    assert (target.parent / ".complete").exists()
