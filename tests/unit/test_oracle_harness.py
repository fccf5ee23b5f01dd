"""The oracle venv runs the reference and round-trips arrays (the parity tests depend on it)."""

import numpy as np
import pytest
from oracle import run_oracle


@pytest.mark.parity
def test_oracle_runs_reference():
    out = run_oracle("selfcheck.py", {"x": np.arange(4.0)}, factor=3)
    np.testing.assert_array_equal(out["doubled"], np.arange(4.0) * 2)
    assert str(out["version"]) == "0.1.1" and int(out["factor"]) == 3
