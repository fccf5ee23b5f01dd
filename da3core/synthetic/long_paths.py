"""Long camera paths through the synthetic room, rendered small: ground truth for streaming tests.

Two paths: a closed loop that walks once around the room and comes back to its first pose (a revisit for loop
closure), and an open S-shaped walk that never comes back.
"""

from __future__ import annotations

import numpy as np

from da3core.geometry import intrinsics_from_fov, look_at
from da3core.synthetic.scene import SyntheticCapture, make_scene, render_capture

PATHS = ("loop", "open")


def loop_path(n_frames: int, radius: float = 2.6, height: float = 1.4) -> np.ndarray:
    """(N, 3, 4) w2c: once round a circle, looking ahead and 40 degrees inwards; frame N would equal frame 0."""
    theta = np.linspace(0.0, 2 * np.pi, n_frames, endpoint=False)
    eyes = np.stack([radius * np.cos(theta), radius * np.sin(theta), height + 0.15 * np.sin(3 * theta)], -1)
    ahead = np.stack([-np.sin(theta), np.cos(theta), np.zeros_like(theta)], -1)
    inward = np.stack([-np.cos(theta), -np.sin(theta), np.zeros_like(theta)], -1)
    look = np.cos(np.deg2rad(40)) * ahead + np.sin(np.deg2rad(40)) * inward + np.array([0.0, 0.0, -0.3])
    return np.stack([look_at(e, e + d) for e, d in zip(eyes, look)])


def open_path(n_frames: int, height: float = 1.3) -> np.ndarray:
    """(N, 3, 4) w2c: an S-curve from (-3, -2.5) to (3, 2.5), looking along the walk and slightly down."""
    u = np.linspace(0.0, 1.0, n_frames)
    x = -3.0 + 6.0 * u
    y = -2.5 + 5.0 * u + 1.2 * np.sin(2 * np.pi * u)
    eyes = np.stack([x, y, height + 0.1 * np.sin(5 * np.pi * u)], -1)
    heading = np.stack([np.full_like(u, 6.0), 5.0 + 2.4 * np.pi * np.cos(2 * np.pi * u), np.zeros_like(u)], -1)
    heading /= np.linalg.norm(heading, axis=-1, keepdims=True)
    return np.stack([look_at(e, e + d + np.array([0.0, 0.0, -0.25])) for e, d in zip(eyes, heading)])


def make_sequence(
    path: str = "loop", n_frames: int = 600, width: int = 32, height: int = 24, seed: int = 0, fov_deg: float = 70.0
) -> SyntheticCapture:
    """Render ``n_frames`` views of the seed's room along ``path`` ('loop' or 'open')."""
    if path not in PATHS:
        raise ValueError(f"unknown path {path!r}; choose one of {', '.join(PATHS)}")
    if n_frames < 2 or width < 2 or height < 2:
        raise ValueError(
            f"make_sequence needs n_frames >= 2 and a size of at least 2x2, got {n_frames}, {width}x{height}"
        )
    extrinsics = loop_path(n_frames) if path == "loop" else open_path(n_frames)
    return render_capture(make_scene(seed), intrinsics_from_fov(width, height, fov_deg), extrinsics, height, width)
