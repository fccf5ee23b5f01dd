"""da3core: Depth Anything 3 and Video Depth Anything as a plain Python + torch library.

The top-level names load torch on first use only, so light modules (the preset registry, the input readers'
error classes) can be imported by a command line that only prints help.
"""

from __future__ import annotations

import contextlib
import ctypes
import sys
from typing import Any

# Native libraries that bring their own copies of system libraries must load after the ones they would shadow:
# decord loads libdecord (with its FFmpeg, zlib and a std::random_device) RTLD_GLOBAL, and pycolmap brings its own
# zlib. Loaded after them, cv2's libpng binds to the wrong zlib (16-bit PNGs fail: "bad parameters to zlib"),
# Pillow's PNG writer can double-free, and open3d's sampler crashed in decord's random_device. So libstdc++ goes
# into the global scope and OpenCV and Pillow load before anything else here.
if sys.platform.startswith("linux"):
    with contextlib.suppress(OSError):
        ctypes.CDLL("libstdc++.so.6", mode=ctypes.RTLD_GLOBAL)
import cv2  # noqa: E402,F401
import PIL.Image  # noqa: E402,F401

__all__ = ["DepthAnything3", "Gaussians", "Prediction"]


def __getattr__(name: str) -> Any:
    if name == "DepthAnything3":
        from da3core.api import DepthAnything3

        return DepthAnything3
    if name in ("Gaussians", "Prediction"):
        from da3core import prediction

        return getattr(prediction, name)
    raise AttributeError(f"module 'da3core' has no attribute {name!r}")
