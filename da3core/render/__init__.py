"""3D Gaussian rendering: gsplat on CUDA, a pure-torch rasterizer with the same interface on CPU."""

from da3core.render.views import rasterize, render_gaussians

__all__ = ["rasterize", "render_gaussians"]
