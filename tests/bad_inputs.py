"""Broken inputs a user can hand the pipeline, each written into a fresh folder: ``BUILDERS[name](folder) -> path``.

Images, videos and COLMAP datasets start from the synthetic capture and are then damaged the way real files are:
empty, cut short, of the wrong kind, too large, or missing parts.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from da3core.synthetic import make_capture, write_colmap, write_image_folder, write_video

CAPTURE = make_capture(n_views=3, width=64, height=48, seed=7)


def _cut(path: Path, fraction: float) -> Path:
    """Keep the first ``fraction`` of the file's bytes (a download or copy that stopped)."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def _image_folder(folder: Path) -> Path:
    write_image_folder(CAPTURE, folder / "views")
    return folder / "views"


def zero_byte_image(folder: Path) -> Path:
    views = _image_folder(folder)
    (views / "frame_0001.png").write_bytes(b"")
    return views


def truncated_image(folder: Path) -> Path:
    views = _image_folder(folder)
    _cut(views / "frame_0001.png", 0.5)
    return views


def not_an_image(folder: Path) -> Path:
    views = _image_folder(folder)
    (views / "frame_0001.png").write_text("these are notes, not a picture\n")
    return views


def png_bomb(folder: Path) -> Path:
    """A valid 1-bit 20000x20000 PNG (a few hundred KB): Pillow refuses its 400 Mpx as a decompression bomb."""
    size, views = 20000, _image_folder(folder)
    row = b"\x00" + bytes(size // 8)  # filter byte + one bit per pixel
    packer = zlib.compressobj(9)
    body = b"".join(packer.compress(row) for _ in range(size)) + packer.flush()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", size, size, 1, 0, 0, 0, 0)
    (views / "frame_0001.png").write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")
    )
    return views


def _video(folder: Path) -> Path:
    return write_video(make_capture(n_views=12, width=64, height=48, seed=3), folder / "clip.mp4", fps=12.0).path


def zero_byte_video(folder: Path) -> Path:
    path = folder / "clip.mp4"
    path.write_bytes(b"")
    return path


def truncated_video(folder: Path) -> Path:
    return _cut(_video(folder), 0.3)


def not_a_video(folder: Path) -> Path:
    path = folder / "clip.mp4"
    path.write_text("a shopping list saved as mp4\n")
    return path


def audio_only_video(folder: Path) -> Path:
    """An mp4 holding one second of an AAC tone and no video stream."""
    import av

    path = folder / "clip.mp4"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("aac", rate=44100)
        t = np.arange(44100) / 44100
        samples = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
        for start in range(0, samples.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(samples[:, start : start + 1024]), format="fltp", layout="mono"
            )
            frame.rate = 44100
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def _colmap(folder: Path) -> Path:
    root = folder / "colmap"
    write_colmap(CAPTURE, root, n_points=50)
    return root


def colmap_no_sparse(folder: Path) -> Path:
    root = folder / "colmap"
    write_image_folder(CAPTURE, root / "images")
    return root


def colmap_empty_sparse0(folder: Path) -> Path:
    root = colmap_no_sparse(folder)
    (root / "sparse" / "0").mkdir(parents=True)
    return root


def _damaged_model_file(name: str, garbage: bool) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        root = _colmap(folder)
        target = root / "sparse" / "0" / name
        if garbage:
            target.write_bytes(np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8).tobytes())
        else:
            _cut(target, 0.5)
        return root

    return build


def colmap_missing_image(folder: Path) -> Path:
    root = _colmap(folder)
    sorted((root / "images").iterdir())[1].unlink()
    return root


def damaged_model_dir(folder: Path) -> Path:
    """A DA3 model dir whose model.safetensors stopped downloading halfway (its header promises more bytes)."""
    import torch
    from safetensors.torch import save_file

    root = folder / "models" / "DA3-SMALL"
    root.mkdir(parents=True)
    (root / "config.json").write_text(json.dumps({"model_name": "da3-small"}))
    save_file({"backbone.weight": torch.zeros(4096)}, str(root / "model.safetensors"))
    _cut(root / "model.safetensors", 0.5)
    return root


def model_dir_config(text: str) -> Callable[[Path], Path]:
    """A DA3 model dir (no weights) whose config.json holds ``text``: valid JSON or not, naming a preset or not."""

    def build(folder: Path) -> Path:
        root = folder / "models" / "mine"
        root.mkdir(parents=True)
        (root / "config.json").write_text(text)
        return root

    return build


def thin_images(folder: Path) -> Path:
    """Two 2000x4 strips: at a low process_res their short side shrinks below one 14-pixel patch."""
    from PIL import Image

    (folder / "strips").mkdir()
    for i in range(2):
        Image.new("RGB", (2000, 4), (40 * i, 90, 200)).save(folder / "strips" / f"strip_{i}.png")
    return folder / "strips"


def dataset_with_one_name_twice(folder: Path) -> Path:
    """A dataset holding a folder ``walk`` and a video ``walk.mp4``: both would be scene ``walk``."""
    root = folder / "dataset"
    write_image_folder(CAPTURE, root / "walk")
    write_video(CAPTURE, root / "walk.mp4", fps=4.0)
    return root


def good_folder(folder: Path) -> Path:
    write_image_folder(CAPTURE, folder / "views")
    return folder / "views"


BUILDERS: dict[str, Callable[[Path], Path]] = {
    "missing path": lambda folder: folder / "no-such-scene",
    "empty folder": lambda folder: (folder / "empty").mkdir() or folder / "empty",
    "0-byte image": zero_byte_image,
    "truncated image": truncated_image,
    "non-image file": not_an_image,
    "20000x20000 png": png_bomb,
    "0-byte mp4": zero_byte_video,
    "truncated mp4": truncated_video,
    "audio-only mp4": audio_only_video,
    "non-video mp4": not_a_video,
    "colmap without sparse/": colmap_no_sparse,
    "colmap with empty sparse/0": colmap_empty_sparse0,
    "colmap garbage cameras.bin": _damaged_model_file("cameras.bin", garbage=True),
    "colmap truncated cameras.bin": _damaged_model_file("cameras.bin", garbage=False),
    "colmap garbage images.bin": _damaged_model_file("images.bin", garbage=True),
    "colmap truncated images.bin": _damaged_model_file("images.bin", garbage=False),
    "colmap missing image": colmap_missing_image,
    "damaged model dir": damaged_model_dir,
    "thin images": thin_images,
    "model dir config.json [1,2]": model_dir_config("[1, 2]"),
    "model dir model_name 5": model_dir_config('{"model_name": 5}'),
    "model dir two presets": model_dir_config('{"model_name": "da3-small,da3-base"}'),
    "model dir unknown preset": model_dir_config('{"model_name": "da3-nosuch"}'),
    "model dir broken json": model_dir_config('{"model_name": '),
    "dataset with one name twice": dataset_with_one_name_twice,
    # good inputs, for mistakes elsewhere (a preset that cannot use them)
    "good folder": good_folder,
    "good colmap": _colmap,
}
