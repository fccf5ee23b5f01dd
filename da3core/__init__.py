"""da3core: Depth Anything 3 and Video Depth Anything as a plain Python + torch library."""

from da3core.api import DepthAnything3
from da3core.prediction import Gaussians, Prediction

__all__ = ["DepthAnything3", "Gaussians", "Prediction"]
