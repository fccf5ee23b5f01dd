"""DA3 input preprocessing: load, resize to the processing resolution, make sides multiples of 14, normalise.

Matches the reference bit for bit: OpenCV resizing of uint8 RGB (INTER_AREA when shrinking,
INTER_CUBIC when growing), Python (banker's) rounding, ties to the upper multiple of 14, ImageNet
normalisation computed as ``(u8 / 255 - mean) / std`` in float32, and intrinsics scaled per axis
without a half-pixel correction.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from da3core.choices import RESIZE_METHODS
from da3core.errors import UserError

PATCH_SIZE = 14
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
ImageLike = str | Path | np.ndarray | Image.Image


class ImageLoadError(UserError, ValueError):
    """An input image that cannot be read."""


@dataclass
class PreprocessedBatch:
    """Network-ready views and how each maps back to its original image.

    A processed pixel (u, v) of view i came from original pixel
    ``(u * scale[i, 0] + offset[i, 0], v * scale[i, 1] + offset[i, 1])``.
    """

    images: torch.Tensor  # (N, 3, H, W) float32, ImageNet-normalised
    intrinsics: np.ndarray | None  # (N, 3, 3) float32 in processed pixels
    source_sizes: np.ndarray  # (N, 2) int original (H, W)
    scale: np.ndarray  # (N, 2) float64 original pixels per processed pixel (x, y)
    offset: np.ndarray  # (N, 2) float64 original-pixel offset of processed pixel 0 (x, y); non-zero after crops

    @property
    def processed_images(self) -> np.ndarray:
        """(N, H, W, 3) uint8 RGB recovered from the normalised tensor, exactly as the reference does."""
        arr = self.images.permute(0, 2, 3, 1).cpu().numpy() * np.array(STD) + np.array(MEAN)
        return (np.clip(arr, 0, 1) * 255).astype(np.uint8)


def load_image(src: ImageLike) -> np.ndarray:
    """RGB uint8 (H, W, 3) from a path, a PIL image or an array (grey, RGB or RGBA uint8); 16-bit samples are scaled
    to 8 bits (``round(v * 255 / 65535)``) as the flows read them, not clipped."""
    from da3core.io.inputs import InputError, read_image

    if isinstance(src, (str, Path)):
        if not Path(src).is_file():
            raise ImageLoadError(f"image not found: {src}")
        try:
            return read_image(src)
        except InputError as exc:
            raise ImageLoadError(str(exc)) from exc
    if isinstance(src, Image.Image):
        if src.mode == "F":
            raise ImageLoadError(
                "a float PIL image (mode F) has no colour scale; convert it to 8 bits, e.g. "
                "Image.fromarray((np.asarray(im) * 255).round().astype(np.uint8)) for values in [0, 1]"
            )
        if src.mode.startswith("I;16") or src.mode == "I":  # 16-bit (or 32-bit integer) grey
            wide = np.clip(np.asarray(src, dtype=np.int64), 0, 65535)
            return np.repeat(((wide * 255 + 32767) // 65535).astype(np.uint8)[..., None], 3, axis=2)
        return np.asarray(src.convert("RGB"))
    if isinstance(src, np.ndarray):
        if src.dtype != np.uint8 or not (src.ndim == 2 or (src.ndim == 3 and src.shape[2] in (1, 3, 4))):
            raise ImageLoadError(f"image arrays must be uint8 HxW, HxWx3 or HxWx4, got {src.dtype} {src.shape}")
        return np.asarray(
            Image.fromarray(src.squeeze(-1) if src.ndim == 3 and src.shape[2] == 1 else src).convert("RGB")
        )
    raise ImageLoadError(f"unsupported image type {type(src).__name__}; pass a path, a PIL image or a uint8 array")


def _round_to_multiple(x: int, p: int = PATCH_SIZE) -> int:
    down = (x // p) * p
    up = down + p
    return max(1, up if abs(up - x) <= abs(x - down) else down)


def _resize(arr: np.ndarray, w: int, h: int, grow: bool) -> np.ndarray:
    return cv2.resize(arr, (w, h), interpolation=cv2.INTER_CUBIC if grow else cv2.INTER_AREA)


def _scaled_size(height: int, width: int, process_res: int, method: str) -> tuple[int, int]:
    """(h, w) after the resize to ``process_res``, before sides become multiples of the patch."""
    side = max(width, height) if method.startswith("upper") else min(width, height)
    if side == process_res:
        return height, width
    s = process_res / float(side)
    return max(1, int(round(height * s))), max(1, int(round(width * s)))


def processed_size(height: int, width: int, process_res: int, method: str) -> tuple[int, int]:
    """(h, w) of one view as the network gets it (before a batch of several sizes is centre-cropped to the least)."""
    h, w = _scaled_size(height, width, process_res, method)
    if method.endswith("resize"):
        return _round_to_multiple(h), _round_to_multiple(w)
    return (h // PATCH_SIZE) * PATCH_SIZE, (w // PATCH_SIZE) * PATCH_SIZE


def _process_one(img: ImageLike, K: np.ndarray | None, process_res: int, method: str):
    arr = load_image(img)
    h0, w0 = arr.shape[:2]
    h, w = _scaled_size(h0, w0, process_res, method)
    side = max(w0, h0) if method.startswith("upper") else min(w0, h0)
    if side != process_res:
        arr = _resize(arr, w, h, process_res > side)
    sx, sy = w / float(w0), h / float(h0)
    ox = oy = 0
    least = (PATCH_SIZE + 1) // 2 if method.endswith("resize") else PATCH_SIZE  # resizing rounds 7 up to 14
    if min(w, h) < least:  # its short side would hold no patch at all: too thin at this resolution
        name = Path(img).name if isinstance(img, (str, Path)) else "a view"
        raise ImageLoadError(
            f"{name} is {w0}x{h0} pixels: at process_res {process_res} ({method}) its short side becomes {min(w, h)} "
            f"px, under one {PATCH_SIZE}-px patch; crop it to a less extreme aspect ratio or raise "
            "processing.process_res"
        )
    if method.endswith("resize"):
        nw, nh = _round_to_multiple(w), _round_to_multiple(h)
        if (nw, nh) != (w, h):
            arr = _resize(arr, nw, nh, nw > w or nh > h)
        sx2, sy2 = nw / float(w), nh / float(h)
    else:
        nw, nh = (w // PATCH_SIZE) * PATCH_SIZE, (h // PATCH_SIZE) * PATCH_SIZE
        ox, oy = (w - nw) // 2, (h - nh) // 2
        arr = arr[oy : oy + nh, ox : ox + nw]
        sx2 = sy2 = 1.0
    if K is not None:
        K = np.array(K, copy=True)
        K[:1] *= sx
        K[1:2] *= sy
        if method.endswith("resize"):
            K[:1] *= sx2
            K[1:2] *= sy2
        else:
            K[0, 2] -= ox
            K[1, 2] -= oy
    tensor = torch.from_numpy(np.require(arr, requirements=["C", "W"])).permute(2, 0, 1).float().div(255)
    mean, std = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)
    tensor = tensor.sub_(mean).div_(std)
    # Original pixel of processed pixel (u, v): crop offset in resized pixels, then undo both scalings.
    scale = np.array([1.0 / (sx * sx2), 1.0 / (sy * sy2)])
    offset = np.array([ox / sx, oy / sy])
    return tensor, K, (h0, w0), scale, offset


def preprocess_images(
    images: Sequence[ImageLike],
    process_res: int = 504,
    method: str = "upper_bound_resize",
    intrinsics: np.ndarray | None = None,
    num_workers: int = 8,
) -> PreprocessedBatch:
    """Resize, crop and normalise a list of views into one (N, 3, H, W) batch, adjusting intrinsics."""
    if method not in RESIZE_METHODS:
        raise ValueError(f"unknown process_res_method '{method}'; allowed: {', '.join(RESIZE_METHODS)}")
    if len(images) == 0:
        raise ValueError("no images to process: pass at least one image")
    if intrinsics is not None and len(intrinsics) != len(images):
        raise ValueError(f"{len(intrinsics)} intrinsics for {len(images)} images")
    Ks = list(intrinsics) if intrinsics is not None else [None] * len(images)
    work = lambda args: _process_one(args[0], args[1], process_res, method)  # noqa: E731
    if num_workers > 1 and len(images) > 1:
        with ThreadPoolExecutor(min(num_workers, len(images))) as pool:
            results = list(pool.map(work, zip(images, Ks)))
    else:
        results = [work(a) for a in zip(images, Ks)]
    tensors, Ks, sizes, scales, offsets = (list(x) for x in zip(*results))
    shapes = {t.shape[1:] for t in tensors}
    if len(shapes) > 1:  # centre-crop every view to the smallest size so they stack
        min_h, min_w = min(s[0] for s in shapes), min(s[1] for s in shapes)
        for i, t in enumerate(tensors):
            top, left = (t.shape[1] - min_h) // 2, (t.shape[2] - min_w) // 2
            tensors[i] = t[:, top : top + min_h, left : left + min_w]
            offsets[i] = offsets[i] + np.array([left, top]) * scales[i]
            if Ks[i] is not None:
                Ks[i] = Ks[i].copy()
                Ks[i][0, 2] -= left
                Ks[i][1, 2] -= top
    return PreprocessedBatch(
        images=torch.stack(tensors),
        intrinsics=None if intrinsics is None else np.asarray(Ks).astype(np.float32),
        source_sizes=np.asarray(sizes, dtype=np.int64),
        scale=np.asarray(scales),
        offset=np.asarray(offsets),
    )
