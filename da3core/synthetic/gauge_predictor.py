"""A stand-in for the model in streaming tests: exact depth and cameras of a synthetic sequence, each call in its
own random Sim(3) gauge, with optional drift and noise. Only tests construct it; nothing selects it by default.

Noise (all zero by default), in the true world before the gauge:

- ``drift``: each call's reconstruction is bent progressively: the view at position k of the call is moved, with
  its depth, by the similarity exp(k xi) about the call's first camera, xi = drift x (a fixed bias + a random part
  per call) in radians / scene units / log-scale per frame. Overlap alignment then inherits a systematic error per
  chunk, which accumulates along the sequence the way monocular scale and heading drift do.
- ``pose_noise``: an independent random rigid motion per view (radians, scene units), its depth moved with it.
- ``depth_noise``: multiplicative log-normal noise per pixel.
"""

from __future__ import annotations

import hashlib

import numpy as np
from scipy.spatial.transform import Rotation

from da3core.geometry import affine_inverse
from da3core.pose_align import apply_sim3_to_extrinsics
from da3core.prediction import Prediction
from da3core.synthetic.scene import SyntheticCapture

DESCRIPTOR_GRID = 4  # descriptor: histogram of visible surfaces per cell of a 4x4 image grid
DRIFT_BIAS = np.array([0.0, 0.0, 1.0, 0.3, 0.0, 0.0, 0.5])  # (rotvec, translation, log-scale) direction of drift


class GaugePredictor:
    """Callable on a list of global frame indices; returns their exact prediction in a seeded random gauge."""

    def __init__(
        self,
        sequence: SyntheticCapture,
        seed: int = 0,
        drift: float = 0.0,
        pose_noise: float = 0.0,
        depth_noise: float = 0.0,
    ) -> None:
        self.sequence = sequence
        self.seed = seed
        self.drift = drift
        self.pose_noise = pose_noise
        self.depth_noise = depth_noise

    def _rng(self, frames: np.ndarray) -> np.random.Generator:
        """A generator seeded by the frame list, so a call's gauge and noise do not depend on call order."""
        digest = hashlib.blake2b(frames.astype(np.int64).tobytes(), digest_size=8).digest()
        return np.random.default_rng([self.seed, *np.frombuffer(digest, dtype=np.uint32).tolist()])

    def __call__(self, frames: np.ndarray) -> Prediction:
        """Depth, conf (all 1), w2c extrinsics, intrinsics and images of ``frames``, in a random gauge."""
        frames = np.asarray(frames, dtype=np.int64)
        if frames.ndim != 1 or len(frames) == 0 or frames.min() < 0 or frames.max() >= len(self.sequence):
            raise ValueError(f"frames must be a non-empty list of indices in 0..{len(self.sequence) - 1}")
        rng = self._rng(frames)
        seq = self.sequence
        ext, depth = seq.extrinsics[frames].copy(), seq.depth[frames].copy()
        pivot = affine_inverse(ext[0])[:, 3]
        xi = self.drift * (DRIFT_BIAS + 0.5 * rng.standard_normal(7))
        for k in range(len(frames)):
            noise = self.pose_noise * rng.standard_normal(6)
            rot = Rotation.from_rotvec(k * xi[:3]) * Rotation.from_rotvec(noise[:3])
            scale = np.exp(k * xi[6])
            # x -> scale * rot (x - pivot) + pivot + shift: the bend about the call's first camera, plus the noise.
            shift = k * xi[3:6] + noise[3:]
            trans = pivot + shift - scale * rot.as_matrix() @ pivot
            ext[k] = apply_sim3_to_extrinsics(ext[k : k + 1], scale, rot.as_matrix(), trans)[0]
            depth[k] *= scale
        if self.depth_noise:
            depth *= np.exp(self.depth_noise * rng.standard_normal(depth.shape))
        gauge_scale = float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))
        gauge_rot = Rotation.random(random_state=rng).as_matrix()
        ext = apply_sim3_to_extrinsics(ext, gauge_scale, gauge_rot, rng.normal(0.0, 3.0, 3))
        return Prediction(
            depth=(depth * gauge_scale).astype(np.float32),
            conf=np.ones(depth.shape, dtype=np.float32),
            extrinsics=ext.astype(np.float32),
            intrinsics=seq.intrinsics[frames].astype(np.float32),
            processed_images=seq.images[frames],
        )

    def descriptors(self) -> np.ndarray:
        """(N, D) per-frame place descriptors: the surfaces each image cell sees (equal views, equal vectors)."""
        ids = self.sequence.surface_ids
        n, h, w = ids.shape
        n_rects = len(self.sequence.scene.rects) + 1  # + "no hit"
        g = DESCRIPTOR_GRID
        cell = (np.arange(h)[:, None] * g // h) * g + np.arange(w)[None, :] * g // w
        codes = (cell[None] * n_rects + ids + 1).reshape(n, -1)
        return np.stack([np.bincount(c, minlength=g * g * n_rects) for c in codes]).astype(np.float32)
