"""A procedural room (textured floor, walls, ceiling and boxes) ray-cast from pinhole cameras.

Every pixel's colour and z-depth come from an exact ray/rectangle intersection in float64, so the
depth maps, intrinsics and world-to-camera extrinsics are ground truth for geometry tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from da3core.geometry import affine_inverse, intrinsics_from_fov, look_at, pixel_rays

ROOM_HALF_SIZE = 4.0
ROOM_HEIGHT = 3.0
PALETTE_SIZE = 4096


@dataclass(frozen=True)
class Rect:
    """A textured rectangle ``origin + a * edge_u + b * edge_v`` for a, b in [0, 1]."""

    origin: np.ndarray
    edge_u: np.ndarray
    edge_v: np.ndarray
    cell_size: float  # texture cell size in metres


@dataclass(frozen=True)
class SyntheticScene:
    """The rectangles of a room and the colour palette their textures draw from."""

    rects: tuple[Rect, ...]
    palette: np.ndarray  # (PALETTE_SIZE, 3) float64 in [0, 255]
    seed: int
    target: np.ndarray  # (3,) point the default cameras look at


@dataclass
class SyntheticCapture:
    """N rendered views with exact ground truth (OpenCV, world-to-camera)."""

    images: np.ndarray  # (N, H, W, 3) uint8
    depth: np.ndarray  # (N, H, W) float32 z-depth; 0 where a ray hits nothing
    surface_ids: np.ndarray  # (N, H, W) int16 index of the hit rectangle, -1 for none
    intrinsics: np.ndarray  # (N, 3, 3) float64
    extrinsics: np.ndarray  # (N, 3, 4) float64 world-to-camera
    scene: SyntheticScene

    def __len__(self) -> int:
        return len(self.images)


def _rect(origin, edge_u, edge_v, cell_size: float) -> Rect:
    origin, edge_u, edge_v = (np.asarray(v, dtype=np.float64) for v in (origin, edge_u, edge_v))
    return Rect(origin, edge_u, edge_v, cell_size)


def _box_faces(center_xy, size_xy, height: float, yaw: float, cell: float) -> list[Rect]:
    """The five visible faces (no bottom) of a box standing on the floor, rotated by ``yaw``."""
    c, s = np.cos(yaw), np.sin(yaw)
    ex = np.array([c, s, 0.0]) * size_xy[0]
    ey = np.array([-s, c, 0.0]) * size_xy[1]
    ez = np.array([0.0, 0.0, height])
    p0 = np.array([center_xy[0], center_xy[1], 0.0]) - ex / 2 - ey / 2
    return [
        _rect(p0, ex, ez, cell),
        _rect(p0 + ey, ex, ez, cell),
        _rect(p0, ey, ez, cell),
        _rect(p0 + ex, ey, ez, cell),
        _rect(p0 + ez, ex, ey, cell),
    ]


def make_scene(seed: int = 0, n_boxes: int = 5) -> SyntheticScene:
    """A closed room with ``n_boxes`` randomly placed boxes; deterministic for a given seed."""
    rng = np.random.default_rng(seed)
    h, r = ROOM_HALF_SIZE, ROOM_HEIGHT
    rects = [
        _rect([-h, -h, 0], [2 * h, 0, 0], [0, 2 * h, 0], 0.5),  # floor
        _rect([-h, -h, r], [2 * h, 0, 0], [0, 2 * h, 0], 0.8),  # ceiling
        _rect([-h, -h, 0], [2 * h, 0, 0], [0, 0, r], 0.4),  # walls
        _rect([-h, h, 0], [2 * h, 0, 0], [0, 0, r], 0.4),
        _rect([-h, -h, 0], [0, 2 * h, 0], [0, 0, r], 0.4),
        _rect([h, -h, 0], [0, 2 * h, 0], [0, 0, r], 0.4),
    ]
    for _ in range(n_boxes):
        radius, angle = rng.uniform(0.0, 1.1), rng.uniform(0, 2 * np.pi)
        center = (radius * np.cos(angle), radius * np.sin(angle))
        rects += _box_faces(center, rng.uniform(0.3, 0.7, 2), rng.uniform(0.3, 1.1), rng.uniform(0, np.pi), 0.12)
    # Saturated colours so neighbouring cells differ strongly.
    hue = rng.uniform(0, 1, PALETTE_SIZE)
    sat = rng.uniform(0.45, 1.0, PALETTE_SIZE)
    val = rng.uniform(0.35, 1.0, PALETTE_SIZE)
    palette = _hsv_to_rgb(hue, sat, val) * 255.0
    return SyntheticScene(tuple(rects), palette, seed, np.array([0.0, 0.0, 0.45]))


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    i = np.floor(h * 6).astype(int) % 6
    f = h * 6 - np.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    table = np.stack([[v, t, p], [q, v, p], [p, v, t], [p, q, v], [t, p, v], [v, p, q]])  # (6, 3, N)
    return table[i, :, np.arange(len(h))]


def _cell_hash(sid: np.ndarray, i: np.ndarray, j: np.ndarray, salt: int) -> np.ndarray:
    x = (i.astype(np.int64) * 73856093) ^ (j.astype(np.int64) * 19349663) ^ (sid.astype(np.int64) * 83492791 + salt)
    x = (x ^ (x >> 13)) * 1274126177
    return (x ^ (x >> 16)) % PALETTE_SIZE


def _texture(scene: SyntheticScene, sid: np.ndarray, s: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Colour at surface coordinates (s, t) in metres: two scales of random colour cells."""
    cell = np.array([r.cell_size for r in scene.rects])[sid]
    shade = np.array([_shade(r) for r in scene.rects])[sid][:, None]
    coarse = scene.palette[_cell_hash(sid, np.floor(s / cell), np.floor(t / cell), scene.seed)]
    fine = scene.palette[_cell_hash(sid, np.floor(s / (0.3 * cell)), np.floor(t / (0.3 * cell)), scene.seed + 7919)]
    return shade * (0.65 * coarse + 0.35 * fine)


def _shade(rect: Rect) -> float:
    """Constant per-face brightness from a fixed light direction, so box faces read as distinct."""
    normal = np.cross(rect.edge_u, rect.edge_v)
    light = np.array([0.4, 0.25, 0.88])
    return 0.6 + 0.4 * abs(normal @ light) / (np.linalg.norm(normal) * np.linalg.norm(light))


def render_view(
    scene: SyntheticScene, intrinsics: np.ndarray, extrinsics: np.ndarray, height: int, width: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ray-cast one view; returns (image uint8 (H, W, 3), z-depth float64 (H, W), surface id int16 (H, W))."""
    dirs = pixel_rays(intrinsics, height, width).reshape(-1, 3)  # camera frame, z = 1
    c2w = affine_inverse(np.asarray(extrinsics, dtype=np.float64)[:3])
    dirs_w = dirs @ c2w[:3, :3].T
    origin = c2w[:3, 3]
    best_t = np.full(len(dirs), np.inf)
    best_id = np.full(len(dirs), -1, dtype=np.int16)
    best_st = np.zeros((len(dirs), 2))
    for sid, rect in enumerate(scene.rects):
        normal = np.cross(rect.edge_u, rect.edge_v)
        denom = dirs_w @ normal
        with np.errstate(divide="ignore", invalid="ignore"):  # rays parallel to the plane give inf/nan, never hits
            t = ((rect.origin - origin) @ normal) / denom
            rel = origin + t[:, None] * dirs_w - rect.origin
            a = rel @ rect.edge_u / (rect.edge_u @ rect.edge_u)
            b = rel @ rect.edge_v / (rect.edge_v @ rect.edge_v)
        hit = (t > 1e-9) & (t < best_t) & (a >= 0) & (a <= 1) & (b >= 0) & (b <= 1)
        best_t[hit], best_id[hit] = t[hit], sid
        best_st[hit] = np.stack([a[hit] * np.linalg.norm(rect.edge_u), b[hit] * np.linalg.norm(rect.edge_v)], -1)
    found = best_id >= 0
    color = np.zeros((len(dirs), 3))
    color[found] = _texture(scene, best_id[found], best_st[found, 0], best_st[found, 1])
    depth = np.where(found, best_t, 0.0)  # camera rays have z = 1, so the ray parameter is the z-depth
    shape = (height, width)
    return (
        np.clip(np.round(color), 0, 255).astype(np.uint8).reshape(*shape, 3),
        depth.reshape(shape),
        best_id.reshape(shape),
    )


def orbit_extrinsics(
    n_views: int,
    target: np.ndarray,
    radius: float = 2.6,
    height: float = 1.5,
    arc_deg: float = 90.0,
    start_deg: float = -30.0,
    height_wobble: float = 0.25,
) -> np.ndarray:
    """World-to-camera (N, 3, 4) poses on an arc around ``target``, gently bobbing in height."""
    angles = np.deg2rad(start_deg + arc_deg * np.linspace(0.0, 1.0, n_views))
    phase = np.linspace(0.0, 2 * np.pi, n_views, endpoint=False)
    eyes = np.stack([radius * np.cos(angles), radius * np.sin(angles), height + height_wobble * np.sin(phase)], axis=-1)
    return np.stack([look_at(eye, target) for eye in eyes])


def make_capture(
    n_views: int = 8,
    width: int = 320,
    height: int = 240,
    fov_deg: float = 65.0,
    arc_deg: float = 90.0,
    seed: int = 0,
) -> SyntheticCapture:
    """Render ``n_views`` cameras on an arc through the room built from ``seed``."""
    if n_views < 1 or width < 2 or height < 2:
        raise ValueError(f"make_capture needs n_views >= 1 and a size of at least 2x2, got {n_views}, {width}x{height}")
    scene = make_scene(seed)
    return render_capture(
        scene,
        intrinsics_from_fov(width, height, fov_deg),
        orbit_extrinsics(n_views, scene.target, arc_deg=arc_deg),
        height,
        width,
    )


def render_capture(
    scene: SyntheticScene, intrinsics: np.ndarray, extrinsics: np.ndarray, height: int, width: int
) -> SyntheticCapture:
    """Ray-cast every w2c camera of ``extrinsics`` (N, 3, 4) with one pinhole ``intrinsics`` (3, 3)."""
    views = [render_view(scene, intrinsics, ext, height, width) for ext in extrinsics]
    return SyntheticCapture(
        images=np.stack([v[0] for v in views]),
        depth=np.stack([v[1] for v in views]).astype(np.float32),
        surface_ids=np.stack([v[2] for v in views]),
        intrinsics=np.repeat(np.asarray(intrinsics, dtype=np.float64)[None], len(extrinsics), axis=0),
        extrinsics=np.asarray(extrinsics, dtype=np.float64),
        scene=scene,
    )


def scene_mesh(scene: SyntheticScene) -> tuple[np.ndarray, np.ndarray]:
    """The room's exact surface as a triangle mesh: (vertices (4R, 3) float64, triangles (2R, 3) int32)."""
    corners = [
        np.stack([r.origin, r.origin + r.edge_u, r.origin + r.edge_u + r.edge_v, r.origin + r.edge_v])
        for r in scene.rects
    ]
    quads = 4 * np.arange(len(scene.rects))[:, None]
    triangles = np.concatenate([quads + [0, 1, 2], quads + [0, 2, 3]])
    return np.concatenate(corners), triangles.astype(np.int32)


def surface_points(scene: SyntheticScene, spacing: float) -> np.ndarray:
    """Points on a regular grid of step ``spacing`` (metres) over every rectangle of the room, (M, 3) float64."""
    points = []
    for rect in scene.rects:
        nu = max(1, int(np.ceil(np.linalg.norm(rect.edge_u) / spacing)))
        nv = max(1, int(np.ceil(np.linalg.norm(rect.edge_v) / spacing)))
        a, b = np.meshgrid((np.arange(nu) + 0.5) / nu, (np.arange(nv) + 0.5) / nv, indexing="ij")
        points.append(rect.origin + a.reshape(-1, 1) * rect.edge_u + b.reshape(-1, 1) * rect.edge_v)
    return np.concatenate(points)
