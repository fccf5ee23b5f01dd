"""Native libraries that bundle their own zlib must not break the image codecs, whatever the import order."""

from __future__ import annotations

import subprocess
import sys

import pytest

SCRIPT = """
import io, sys
import numpy as np
import da3core  # must load the codecs first
import decord, pycolmap  # bundled FFmpeg (RTLD_GLOBAL) and zlib
import cv2
from PIL import Image
depth = (np.arange(64 * 48).reshape(48, 64) * 21).astype(np.uint16)
buffer = io.BytesIO()
Image.fromarray(depth).save(buffer, format="PNG")
back = cv2.imdecode(np.frombuffer(buffer.getvalue(), np.uint8), cv2.IMREAD_UNCHANGED)
assert back is not None and (back == depth).all(), "16-bit PNG did not round-trip"
ok, png = cv2.imencode(".png", depth)
assert ok and (np.asarray(Image.open(io.BytesIO(png.tobytes()))) == depth).all()
print("ok")
"""


def test_png_round_trip_after_decord_and_pycolmap():
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


@pytest.mark.slow
def test_open3d_sampling_survives_decord_loaded_first():
    """decord's RTLD_GLOBAL library once shadowed libstdc++'s random_device and crashed open3d's sampler (SIGSEGV)."""
    code = (
        "import da3core.io.video, numpy as np; from da3core.evaluation import sample_surface, TriangleMesh; "
        "print(sample_surface(TriangleMesh(np.eye(3), np.array([[0, 1, 2]]), np.zeros((0, 3))), 10).shape)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "(10, 3)", result.stderr[-2000:]
