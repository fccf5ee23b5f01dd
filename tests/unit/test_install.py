"""The install is what the README promises: CPU torch here, importable packages, the `da3` entry point."""

from __future__ import annotations

import importlib.metadata as md
import subprocess
import sys

import tomllib
from paths import REPO_ROOT


def test_no_cuda_torch_pulled_in():
    import torch

    names = sorted(d.metadata["Name"] for d in md.distributions() if d.metadata["Name"].lower().startswith("nvidia-"))
    assert names == [], f"CUDA packages were installed: {names}"
    if not torch.cuda.is_available():  # a GPU machine installs a CUDA build on purpose
        assert torch.version.cuda is None, torch.__version__


def test_packages_and_console_script_are_declared():
    meta = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    assert meta["project"]["scripts"]["da3"] == "flows.cli:main"
    assert {"dev", "app"} <= set(meta["project"]["optional-dependencies"])
    out = subprocess.run([sys.executable, "-m", "flows.cli", "--help"], capture_output=True, text=True, cwd=REPO_ROOT)
    assert out.returncode == 0 and "Usage" in out.stdout
