"""What a command loads before and during a one-image run: none of the libraries that only other inputs, exports or
runners use (each costs 0.1-1.3 s to import, in every run, see benchmarks/startup.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from paths import REPO_ROOT

from da3core.synthetic import make_capture, write_image_folder

# Streaming's loop closure (faiss, gtsam), Dask (the prefect-dask collection, which registering Prefect's block types
# imports), image colormaps (matplotlib), meshes (trimesh), video encoding (av).
UNUSED = ["faiss", "gtsam", "distributed", "matplotlib", "trimesh", "av"]
SERVER = "prefect.server.api.server"  # Prefect's API: only for the in-process API, never with one configured
FAST = ["model=da3-small", "model.weights=random", "processing.process_res=56", "export=mini_npz"]
LOADED = "import json, sys\n{code}\nprint(json.dumps(sorted(m for m in {names!r} if m in sys.modules)))"


def _loaded(code: str, names: list[str], env: dict[str, str]) -> list[str]:
    """The modules among ``names`` that a fresh interpreter has loaded after running ``code``."""
    done = subprocess.run(
        [sys.executable, "-c", LOADED.format(code=code, names=names)],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _env(home: str, api_url: str | None = None) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PREFECT_HOME": home}
    env.pop("PREFECT_API_URL", None)
    return env | ({"PREFECT_API_URL": api_url} if api_url else {})


def test_flow_modules_import_no_unused_library(tmp_path):
    """Importing the reconstruct and batch flows (what `da3 image` and `python -m flows.reconstruct` do first)."""
    assert _loaded("import flows.reconstruct, flows.batch", [*UNUSED, SERVER], _env(str(tmp_path))) == []


@pytest.mark.slow
@pytest.mark.parametrize("api", ["in-process", "configured"])
def test_one_image_run_loads_no_unused_library(api, tmp_path, prefect_api):
    """A whole one-image run exporting mini_npz, through the in-process API or a configured one."""
    write_image_folder(make_capture(1, 64, 48, seed=3), tmp_path / "scene")
    image = next((tmp_path / "scene").iterdir())
    args = [f"scene={image}", f"storage.root={tmp_path / 'out'}", *FAST]
    run = f"from flows.reconstruct import main\nassert main({args!r}) == 0"
    configured = api == "configured"
    names = [*UNUSED, SERVER] if configured else UNUSED
    env = _env(str(tmp_path / "prefect"), prefect_api if configured else None)
    assert _loaded(run, names, env) == []
    assert (tmp_path / "out" / image.stem / "exports" / "mini_npz" / "results.npz").is_file()


@pytest.mark.slow
def test_rerun_of_a_finished_scene_loads_no_torch(tmp_path, prefect_api):
    """A rerun whose result is complete is skipped without loading torch (1 s of the rerun): it needs no model,
    and the device check only asks torch about an accelerator named explicitly."""
    write_image_folder(make_capture(1, 64, 48, seed=4), tmp_path / "scene")
    image = next((tmp_path / "scene").iterdir())
    args = [f"scene={image}", f"storage.root={tmp_path / 'out'}", *FAST]
    run = f"from flows.reconstruct import main\nassert main({args!r}) == 0"
    env = _env(str(tmp_path / "prefect"), prefect_api)
    assert _loaded(run, ["torch"], env) == ["torch"]  # the first run computes
    results = tmp_path / "out" / image.stem / "exports" / "mini_npz" / "results.npz"
    written = results.stat().st_mtime_ns
    assert _loaded(run, ["torch"], env) == []
    assert results.stat().st_mtime_ns == written  # reused, not recomputed
