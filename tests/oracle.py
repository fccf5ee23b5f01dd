"""Drive the reference implementation (depth-anything-3==0.1.1 in .venv-oracle) from the tests.

The oracle needs numpy<2 and a patched torchvision, so it lives in its own venv (scripts/install_oracle.sh)
and runs in subprocesses. An oracle script in tests/oracle_scripts/ is called as
``python script.py <inputs.npz> <args.json> <outputs.npz>``: it reads numpy inputs and JSON arguments,
runs the reference, and saves its numpy outputs. The scripts import only the reference and numpy/torch.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from paths import REPO_ROOT

SCRIPTS = Path(__file__).resolve().parent / "oracle_scripts"


def oracle_python() -> Path:
    """The oracle venv's interpreter (DA3_ORACLE_PYTHON, else .venv-oracle/bin/python)."""
    return Path(os.environ.get("DA3_ORACLE_PYTHON") or REPO_ROOT / ".venv-oracle" / "bin" / "python")


def require_oracle() -> Path:
    """Return the oracle interpreter; skip (or fail, under DA3_REQUIRE_ORACLE=1) when it is missing."""
    python = oracle_python()
    if python.exists():
        return python
    message = f"reference oracle venv not found at {python}; build it with scripts/install_oracle.sh"
    if os.environ.get("DA3_REQUIRE_ORACLE") == "1":
        pytest.fail(message)
    pytest.skip(message)


def run_oracle(
    script: str, inputs: dict[str, np.ndarray] | None = None, timeout: float = 900, **args: Any
) -> dict[str, np.ndarray]:
    """Run ``tests/oracle_scripts/<script>`` in the oracle venv and return the arrays it saved."""
    python = require_oracle()
    with tempfile.TemporaryDirectory(prefix="da3-oracle-") as tmp:
        tmp = Path(tmp)
        np.savez(tmp / "in.npz", **(inputs or {}))
        (tmp / "args.json").write_text(json.dumps(args))
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        # The reference must use as many threads as our side: GEMM reduction order follows the thread count,
        # and an inherited OMP_NUM_THREADS (Dask's nanny exports 1) made "bitwise" cases differ by ~1e-5.
        threads = str(torch.get_num_threads())
        env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, HF_HUB_OFFLINE="1")
        proc = subprocess.run(
            [str(python), str(SCRIPTS / script), str(tmp / "in.npz"), str(tmp / "args.json"), str(tmp / "out.npz")],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            cwd=tmp,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"oracle script {script} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
        with np.load(tmp / "out.npz", allow_pickle=False) as out:
            return {k: out[k] for k in out.files}
