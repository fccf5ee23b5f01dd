"""da3core: Depth Anything 3 and Video Depth Anything as a plain Python + torch library.

The top-level names load torch on first use only, so light modules (the preset registry, the input readers'
error classes) can be imported by a command line that only prints help.
"""

from __future__ import annotations

from typing import Any

# Load OpenCV's and Pillow's codecs before anything else native: decord loads its bundled FFmpeg with RTLD_GLOBAL
# and pycolmap brings its own zlib, and a codec library loaded after them can bind to that zlib instead of its own
# (cv2 then fails to read 16-bit PNGs, "bad parameters to zlib", and Pillow's PNG writer can double-free).
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
