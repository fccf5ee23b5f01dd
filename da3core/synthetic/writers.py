"""Write a :class:`SyntheticCapture` as the inputs the pipeline reads: image folders, videos, COLMAP datasets."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from da3core.geometry import COLMAP_PIXEL_OFFSET, depth_to_world_points, intrinsics_to_colmap, project_points
from da3core.synthetic.scene import SyntheticCapture


@dataclass(frozen=True)
class VideoInfo:
    """What was encoded: frame i is shown at ``timestamps[i]`` seconds."""

    path: Path
    fps: float
    n_frames: int
    timestamps: np.ndarray


def write_image_folder(
    capture: SyntheticCapture, folder: str | Path, ext: str = "png", quality: int = 95
) -> list[Path]:
    """Save frames as ``frame_0000.<ext>``...; PNG is lossless, JPEG uses ``quality``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, image in enumerate(capture.images):
        path = folder / f"frame_{i:04d}.{ext}"
        kwargs: dict[str, Any] = {"quality": quality} if ext.lower() in ("jpg", "jpeg") else {}
        Image.fromarray(image).save(path, **kwargs)
        paths.append(path)
    return paths


def write_ground_truth(capture: SyntheticCapture, path: str | Path) -> Path:
    """Save depth, intrinsics and world-to-camera extrinsics to an ``.npz`` beside the inputs."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        path,
        depth=capture.depth,
        intrinsics=capture.intrinsics,
        extrinsics=capture.extrinsics,
        surface_ids=capture.surface_ids,
    )
    return path


def write_video(capture: SyntheticCapture, path: str | Path, fps: float = 30.0, crf: int = 16) -> VideoInfo:
    """Encode the frames as H.264 (yuv420p) through PyAV; frame i gets pts i at time base 1/fps."""
    return encode_frames(capture.images, path, fps, crf)


def pattern_frames(n_frames: int, height: int, width: int) -> Iterator[np.ndarray]:
    """A cheap endless-video stand-in, made one frame at a time: drifting colour gratings and a moving square."""
    v, u = np.mgrid[0:height, 0:width].astype(np.float32)
    for i in range(n_frames):
        phase = 2 * np.pi * i / 50
        frame = np.stack([np.sin(u / 7 + phase), np.cos(v / 5 - phase), np.sin((u + v) / 11 + 2 * phase)], axis=-1)
        frame = ((frame + 1) * 100).astype(np.uint8)
        top, left = (i * 3) % max(1, height - height // 4), (i * 5) % max(1, width - width // 4)
        frame[top : top + height // 4, left : left + width // 4] = 255
        yield frame


def encode_frames(frames: Iterable[np.ndarray], path: str | Path, fps: float = 30.0, crf: int = 16) -> VideoInfo:
    """Encode uint8 RGB frames (even sizes) as H.264 yuv420p as they come; frame i gets pts i at time base 1/fps."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rate = Fraction(fps).limit_denominator(1001)
    n = 0
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": "veryfast"}
        for image in frames:
            if n == 0:
                height, width = image.shape[:2]
                if width % 2 or height % 2:
                    raise ValueError(f"H.264 yuv420p needs even frame sizes, got {width}x{height}")
                stream.width, stream.height = width, height
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
            n += 1
        for packet in stream.encode():
            container.mux(packet)
    return VideoInfo(path, float(rate), n, np.arange(n) / float(rate))


def _track_points(capture: SyntheticCapture, n_points: int, rng: np.random.Generator) -> list[tuple]:
    """Surface points seen by at least two views, each with its exact (image, u, v) observations."""
    n, height, width = capture.depth.shape
    tracks = []
    per_view = max(1, n_points // n)
    for i in range(n):
        valid = np.argwhere(capture.depth[i] > 0)
        pick = valid[rng.choice(len(valid), size=min(per_view, len(valid)), replace=False)]
        world = depth_to_world_points(capture.depth[i].astype(np.float64), capture.intrinsics[i], capture.extrinsics[i])
        for row, col in pick:
            xyz = world[row, col]
            sid = capture.surface_ids[i, row, col]
            obs = []
            for j in range(n):
                uv, z = project_points(xyz, capture.intrinsics[j], capture.extrinsics[j])
                c, r = int(round(uv[0])), int(round(uv[1]))
                # Visible in j when the nearest pixel lies on the same rectangle (planes cannot self-occlude).
                if z > 0 and 0 <= c < width and 0 <= r < height and capture.surface_ids[j, r, c] == sid:
                    obs.append((j, uv))
            if len(obs) >= 2:
                tracks.append((xyz, capture.images[i, row, col], obs))
    return tracks


def write_colmap(
    capture: SyntheticCapture,
    root: str | Path,
    sparse_subdir: str = "sparse/0",
    text: bool = False,
    image_ext: str = "png",
    n_points: int = 2000,
    seed: int = 0,
) -> Path:
    """Write ``root/images/*`` and a COLMAP model (binary or text) under ``root/<sparse_subdir>``.

    One PINHOLE camera per image (its exact K), exact world-to-camera poses, and 3-D points with
    multi-view tracks whose 2-D observations are exact projections. COLMAP puts pixel centres at +0.5,
    so principal points and observations are shifted by half a pixel. Returns the model folder.
    """
    import pycolmap

    root = Path(root)
    image_paths = write_image_folder(capture, root / "images", ext=image_ext)
    height, width = capture.images.shape[1:3]
    tracks = _track_points(capture, n_points, np.random.default_rng(seed))
    keypoints: list[list[np.ndarray]] = [[] for _ in range(len(capture))]
    point_obs = []
    for xyz, rgb, obs in tracks:
        elems = []
        for j, uv in obs:
            elems.append((j + 1, len(keypoints[j])))
            keypoints[j].append(uv)
        point_obs.append((xyz, rgb, elems))

    rec = pycolmap.Reconstruction()
    for i, path in enumerate(image_paths):
        K = intrinsics_to_colmap(capture.intrinsics[i])
        cam = pycolmap.Camera.create_from_model_name(i + 1, "PINHOLE", float(K[0, 0]), width, height)
        cam.params = [K[0, 0], K[1, 1], K[0, 2], K[1, 2]]
        rec.add_camera_with_trivial_rig(cam)
        kps = np.asarray(keypoints[i], dtype=np.float64).reshape(-1, 2) + COLMAP_PIXEL_OFFSET
        image = pycolmap.Image(name=path.name, keypoints=kps, camera_id=i + 1, image_id=i + 1)
        ext = capture.extrinsics[i]
        rec.add_image_with_trivial_frame(image, pycolmap.Rigid3d(pycolmap.Rotation3d(ext[:3, :3]), ext[:3, 3]))
    for xyz, rgb, elems in point_obs:
        track = pycolmap.Track()
        for image_id, idx in elems:
            track.add_element(image_id, idx)
        rec.add_point3D(np.asarray(xyz, dtype=np.float64), track, np.asarray(rgb, dtype=np.uint8))

    model_dir = root / sparse_subdir
    model_dir.mkdir(parents=True, exist_ok=True)
    (rec.write_text if text else rec.write_binary)(str(model_dir))
    return model_dir
