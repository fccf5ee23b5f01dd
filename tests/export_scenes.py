"""Predictions built from synthetic captures with exact geometry, for the exporter and renderer tests."""

from __future__ import annotations

import numpy as np

from da3core.geometry import depth_to_world_points
from da3core.prediction import Gaussians, Prediction
from da3core.render.sh import SH_C0
from da3core.synthetic import SyntheticCapture, make_capture


def world_points(capture: SyntheticCapture) -> np.ndarray:
    """(N, H, W, 3) float64 exact world point of every pixel (OpenCV, integer pixel centres)."""
    return np.stack(
        [
            depth_to_world_points(capture.depth[i].astype(np.float64), capture.intrinsics[i], capture.extrinsics[i])
            for i in range(len(capture))
        ]
    )


def pixel_gaussians(capture: SyntheticCapture, opacity: float = 0.95, size_px: float = 0.6) -> Gaussians:
    """One isotropic Gaussian per pixel at its exact world point, ``size_px`` pixels wide, coloured like it."""
    n, h, w = capture.depth.shape
    means = world_points(capture).reshape(-1, 3)
    focal = capture.intrinsics[:, 0, 0][:, None, None]
    scale = np.repeat((capture.depth * size_px / focal).reshape(-1, 1), 3, axis=1)
    harmonics = np.zeros((n * h * w, 3, 9), np.float32)
    harmonics[:, :, 0] = (capture.images.reshape(-1, 3) / 255.0 - 0.5) / SH_C0
    return Gaussians(
        means=means.astype(np.float32),
        scales=np.maximum(scale, 1e-4).astype(np.float32),
        rotations=np.tile(np.array([1, 0, 0, 0], np.float32), (n * h * w, 1)),
        harmonics=harmonics,
        opacities=np.full(n * h * w, opacity, np.float32),
    )


def synthetic_prediction(
    n_views: int = 4,
    width: int = 70,
    height: int = 56,
    seed: int = 0,
    conf: bool = True,
    gaussians: bool = False,
    features: bool = False,
    arc_deg: float = 90.0,
) -> tuple[Prediction, SyntheticCapture]:
    """A Prediction whose depth, cameras and images are the capture's exact ground truth.

    conf: a smooth, seeded field in [1, 4] (so percentile thresholds pick a known subset); gaussians: one per
    pixel (:func:`pixel_gaussians`); features: ``aux["feat_layer_3"]`` (N, H/7, W/7, 24) that embed the
    downsampled colours through a fixed random linear map, plus small noise.
    """
    capture = make_capture(n_views=n_views, width=width, height=height, seed=seed, arc_deg=arc_deg)
    rng = np.random.default_rng(seed)
    prediction = Prediction(
        depth=capture.depth.astype(np.float32),
        extrinsics=capture.extrinsics.astype(np.float32),
        intrinsics=capture.intrinsics.astype(np.float32),
        processed_images=capture.images,
        source_sizes=np.tile([height, width], (n_views, 1)),
    )
    if conf:
        prediction.conf = (1.0 + 3.0 * rng.random(capture.depth.shape)).astype(np.float32)
    if gaussians:
        prediction.gaussians = pixel_gaussians(capture)
    if features:
        small = capture.images[:, ::7, ::7].astype(np.float32) / 255.0
        mixing = rng.normal(size=(3, 24)).astype(np.float32)
        prediction.aux["feat_layer_3"] = small @ mixing + 0.01 * rng.normal(size=small.shape[:3] + (24,)).astype(
            np.float32
        )
    return prediction, capture


def oracle_arrays(prediction: Prediction, **extra: np.ndarray) -> dict[str, np.ndarray]:
    """The prediction's arrays under the names tests/oracle_scripts/export_reference.py reads, plus ``extra``."""
    return dict(
        depth=prediction.depth,
        conf=prediction.conf,
        extrinsics=prediction.extrinsics,
        intrinsics=prediction.intrinsics,
        images=prediction.processed_images,
        **extra,
    )
