"""da3core: Depth Anything 3 and Video Depth Anything as a plain Python + torch library.

The top-level names load torch on first use only, so light modules (the preset registry, the input readers'
error classes) can be imported by a command line that only prints help.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DepthAnything3", "Gaussians", "Prediction"]


def __getattr__(name: str) -> Any:
    if name == "DepthAnything3":
        from da3core.api import DepthAnything3

        return DepthAnything3
    if name in ("Gaussians", "Prediction"):
        from da3core import prediction

        return getattr(prediction, name)
    raise AttributeError(f"module 'da3core' has no attribute {name!r}")
