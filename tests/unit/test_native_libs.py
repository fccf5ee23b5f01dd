"""Native libraries that bundle their own zlib must not break the image codecs, whatever the import order."""

from __future__ import annotations

import subprocess
import sys

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
