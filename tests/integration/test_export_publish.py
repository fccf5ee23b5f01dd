"""A scene's exports are one result with its store: written beside it first, then published with it.

An export that fails after inference (a full disk, a bug) leaves the earlier complete result, store and files,
byte for byte; a run killed while publishing leaves an unmarked store, and the rerun completes it with exactly the
files a clean run writes; a swap killed between its two renames is undone by the next writer.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from paths import REPO_ROOT
from store_scripts.replace_store import marker_hash
from user_error_checks import file_tree

import da3core.export
from da3core.store import SceneStore, store_lock
from flows.reconstruct import main

FAST = ["model=da3-small", "model.weights=random", "model.device=cpu"]
EXPORTS = "export=glb+depth_vis+mini_npz"


def _argv(room: Path, out: Path, res: int, *extra: str) -> list[str]:
    return [f"scene={room}", f"output_dir={out}", *FAST, f"processing.process_res={res}", EXPORTS, *extra]


def test_an_export_failing_after_inference_leaves_the_earlier_result(room, tmp_path, monkeypatch):
    out = tmp_path / "out"
    assert main(_argv(room, out, 56)) == 0
    before = file_tree(out)
    real = da3core.export.export

    def disk_fills_at_depth_vis(pred, formats, export_dir, **kwargs):
        if formats == ["depth_vis"]:  # glb is written by now: the failure comes half-way through the exports
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(Path(export_dir) / "depth_vis"))
        return real(pred, formats, export_dir, **kwargs)

    monkeypatch.setattr(da3core.export, "export", disk_fills_at_depth_vis)
    for changed in (["processing.process_res=70"], ["export=glb+depth_vis+ply"]):  # new inference; exports only
        assert main([*_argv(room, out, 56), *changed]) == 2
        assert file_tree(out) == before, "the earlier result changed"
        assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in out.iterdir() if p.name[0] != ".")


@pytest.mark.slow
@pytest.mark.parametrize("after", [1, 3])
def test_kill_while_publishing_then_rerun(room, tmp_path, after):
    clean = tmp_path / "clean"
    assert main(_argv(room, clean, 70)) == 0
    out = tmp_path / "out"
    assert main(_argv(room, out, 56, "export=glb+depth_vis+colmap")) == 0  # an earlier result with other files
    script = REPO_ROOT / "tests" / "store_scripts" / "kill_publish.py"
    proc = subprocess.run(
        [sys.executable, str(script), str(after), *_argv(room, out, 70)],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": f"{REPO_ROOT}{os.pathsep}{REPO_ROOT / 'tests'}"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode in (-9, 137), proc.stderr[-3000:]
    store = SceneStore(str(out / "scene.zarr"))
    assert store.exists() and not store.is_complete()  # the new store, not yet marked
    assert main(_argv(room, out, 70)) == 0
    assert SceneStore(str(out / "scene.zarr")).is_complete()
    files = lambda root: {k for k in file_tree(root) if not k.startswith("scene.zarr")}  # noqa: E731
    assert files(out) == files(clean)  # the earlier colmap model is gone, no staging folder is left
    for name in files(clean):
        if name.endswith((".jpg", ".npz")):
            assert (out / name).read_bytes() == (clean / name).read_bytes(), name


def test_a_store_set_aside_by_a_killed_swap_is_put_back(tmp_path):
    url = tmp_path / "scene.zarr"
    script = REPO_ROOT / "tests" / "store_scripts" / "replace_store.py"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    subprocess.run([sys.executable, str(script), str(url), "8", "0"], env=env, check=True, timeout=300)
    killed = subprocess.run(
        [sys.executable, str(script), "--kill-at", "between-renames", str(url), "3", "1"], env=env, timeout=300
    )
    assert killed.returncode in (-9, 137) and not url.exists()
    store = SceneStore(str(url))
    with store_lock(store):
        assert all(".tmp-" in name for name in store.discard_leftovers())  # the staged one goes, the old comes back
    assert store.marker()["config_hash"] == marker_hash(8, 0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene.zarr"]
    # An unmarked store set aside (a run killed before its marker, then one killed mid-swap) is put back too: it
    # is what lists the files beside it, so the next run can remove those it does not rewrite.
    for point, views in (("before-marker", "3"), ("between-renames", "5")):
        cmd = [sys.executable, str(script), "--kill-at", point, str(url), views, "1"]
        assert subprocess.run(cmd, env=env, timeout=300).returncode in (-9, 137)
    with store_lock(store):
        store.discard_leftovers()
    assert store.exists() and not store.is_complete() and store.read_array("depth").shape[0] == 3
    shutil.rmtree(url)


def test_nerfstudio_name_clash_is_refused_before_inference(room, tmp_path, capsys, monkeypatch):
    """``frame_0000.jpg`` and ``frame_0000.png`` would be one nerfstudio image: refused in one line, no inference."""
    from PIL import Image

    import flows.reconstruct

    first = sorted(room.iterdir())[0]
    with Image.open(first) as image:
        image.save(first.with_suffix(".jpg"))
    monkeypatch.setattr(flows.reconstruct, "infer", lambda *a, **k: pytest.fail("inference ran"))
    out = tmp_path / "out"
    assert main([f"scene={room}", f"output_dir={out}", *FAST, "export=nerfstudio"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "would both be" in err[0] and first.stem in err[0]


KILL_IN_DOWNLOAD_SWAP = """
import os, signal, sys
from pathlib import Path
from flows.cli_run import replace_old_contents
real = os.replace
def replace(src, dst, **kw):
    real(src, dst, **kw)
    if ".da3-download" in str(src):
        os.kill(os.getpid(), signal.SIGKILL)  # right after the first downloaded file took its final name
os.replace = replace
replace_old_contents(Path(sys.argv[1]), Path(sys.argv[2]))
"""


@pytest.mark.slow
def test_a_backend_download_swapped_in_never_leaves_a_marked_store_beside_old_files(room, tmp_path):
    """``da3 ... --use-backend --auto-cleanup``: the downloaded result replaces the old one. Killed after its first
    file moved in, the folder holds no marked store describing files it did not write."""
    export_dir = tmp_path / "export"
    assert main(_argv(room, export_dir, 70)) == 0  # the old result: 70 px, four views
    download = export_dir / ".da3-download-test"
    fewer = tmp_path / "fewer"
    shutil.copytree(room, fewer)
    sorted(fewer.iterdir())[0].unlink()
    assert main(_argv(fewer, download, 56)) == 0  # what the backend sent back: three views
    killed = subprocess.run(
        [sys.executable, "-c", KILL_IN_DOWNLOAD_SWAP, str(export_dir), str(download)],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        timeout=300,
    )
    assert killed.returncode in (-9, 137)
    store = SceneStore(str(export_dir / "scene.zarr"))
    assert store.exists() and not store.is_complete()  # the old store, unmarked: it no longer matches its files
