"""The Sim(3) type of the streaming code, and applying one to a chunk's prediction.

Convention: a ``Sim3`` maps world points ``x -> scale * rotation @ x + translation``. The transform of chunk i
maps that chunk's world (its gauge) into the global world (the first chunk's gauge).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from da3core.pose_align import apply_sim3_to_extrinsics
from da3core.prediction import Prediction


@dataclass(frozen=True)
class Sim3:
    """A similarity transform of world points, x -> s R x + t (float64)."""

    scale: float = 1.0
    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))
    translation: np.ndarray = field(default_factory=lambda: np.zeros(3))

    def __post_init__(self) -> None:
        rot = np.asarray(self.rotation, dtype=np.float64)
        trans = np.asarray(self.translation, dtype=np.float64).reshape(-1)
        if rot.shape != (3, 3) or trans.shape != (3,) or not np.isfinite(rot).all() or not np.isfinite(trans).all():
            raise ValueError(f"a Sim3 needs a finite 3x3 rotation and a 3-vector, got {rot.shape} and {trans.shape}")
        if not (np.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"a Sim3 needs a finite positive scale, got {self.scale}")
        object.__setattr__(self, "scale", float(self.scale))
        object.__setattr__(self, "rotation", rot)
        object.__setattr__(self, "translation", trans)

    def __matmul__(self, other: Sim3) -> Sim3:
        """Composition ``self @ other``: apply ``other`` first."""
        return Sim3(
            self.scale * other.scale,
            self.rotation @ other.rotation,
            self.scale * self.rotation @ other.translation + self.translation,
        )

    def inverse(self) -> Sim3:
        """The transform undoing this one."""
        rot_t = self.rotation.T
        return Sim3(1.0 / self.scale, rot_t, -rot_t @ self.translation / self.scale)

    def apply(self, points: np.ndarray) -> np.ndarray:
        """Transform points (..., 3)."""
        return self.scale * np.asarray(points, dtype=np.float64) @ self.rotation.T + self.translation

    def matrix(self) -> np.ndarray:
        """The 4x4 matrix [sR t; 0 1]."""
        out = np.eye(4)
        out[:3, :3] = self.scale * self.rotation
        out[:3, 3] = self.translation
        return out

    @classmethod
    def from_matrix(cls, matrix: np.ndarray) -> Sim3:
        """Read a 4x4 [sR t; 0 1] matrix (the inverse of :meth:`matrix`)."""
        m = np.asarray(matrix, dtype=np.float64)
        scale = np.cbrt(np.linalg.det(m[:3, :3]))
        return cls(scale, m[:3, :3] / scale, m[:3, 3])

    def is_identity(self) -> bool:
        """Exactly the identity (no rounding tolerance), so callers can skip a no-op bit for bit."""
        return self.scale == 1.0 and (self.rotation == np.eye(3)).all() and not self.translation.any()


def apply_sim3(prediction: Prediction, sim3: Sim3) -> Prediction:
    """Move a chunk into another gauge: depth x s, cameras moved by ``sim3``; conf, intrinsics and images kept.

    Gaussians and aux features are not moved, so they are dropped; the identity returns a copy of the prediction
    with every array unchanged, bit for bit.
    """
    if prediction.extrinsics is None or prediction.intrinsics is None:
        raise ValueError("this prediction has no cameras (mono/metric preset); streaming needs an any-view model")
    if sim3.is_identity():
        return dataclasses.replace(prediction)
    extrinsics = apply_sim3_to_extrinsics(prediction.extrinsics, sim3.scale, sim3.rotation, sim3.translation)
    return dataclasses.replace(
        prediction,
        depth=(prediction.depth * sim3.scale).astype(np.float32),
        extrinsics=extrinsics.astype(np.float32),
        gaussians=None,
        aux={},
    )
