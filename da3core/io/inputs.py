"""Scene inputs: detect what a path holds (image, image folder, video, COLMAP dataset) and load its views.

``discover_scene`` only inspects and hashes files; frames are decoded later by ``load_views``, so a
bad input fails before any output is touched. A hashed image is decoded from the very bytes whose sha256 matches
the record, and a video must still have the size and mtime it had while hashed, so a file rewritten mid-run fails
the run instead of giving a result recorded under contents it no longer has. Images are read as Depth Anything 3
reads them (Pillow, then RGB), except that samples deeper than 8 bits are scaled to 0-255
(``round(v * 255 / 65535)``) rather than clipped. Gray and palette images become RGB; an alpha channel is dropped,
colours kept as stored (as DA3 does).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from da3core.errors import UserError
from da3core.geometry import intrinsics_from_colmap
from da3core.io import video as video_io

IMAGE_EXTENSIONS = ("png", "jpg", "jpeg", "webp", "bmp", "tiff", "tif")
VIDEO_EXTENSIONS = ("mp4", "avi", "mov", "mkv", "flv", "wmv", "webm", "m4v")


log = logging.getLogger(__name__)


class InputError(UserError, ValueError):
    """An input path that cannot be turned into a scene; the message names the problem and the fix."""


@dataclass
class SceneInput:
    """A discovered scene: which views to read and, for COLMAP, their cameras."""

    kind: str  # "image" | "images" | "video" | "colmap"
    source: str
    names: list[str]  # one name per view (file name, or frame_<index>.png for video frames)
    paths: list[str] = field(default_factory=list)  # per-view image files (image, images, colmap)
    frame_indices: list[int] | None = None  # video: original frame index of each view
    timestamps: list[float] | None = None  # video: seconds of each view
    extrinsics: np.ndarray | None = None  # colmap: (N, 3, 4) world-to-camera
    intrinsics: np.ndarray | None = None  # colmap: (N, 3, 3) original-image pixels, pixel centres on integers
    files: list[dict] = field(default_factory=list)  # {"path", "size", "sha256"} of every file read
    stamps: dict[str, tuple[int, int]] = field(default_factory=dict)  # path -> (size, mtime_ns) while hashed

    def __len__(self) -> int:
        return len(self.names)

    def identity(self) -> dict:
        """What makes two ingests the same input: see :func:`input_identity`."""
        return input_identity(self.manifest())

    def manifest(self) -> dict:
        """JSON-ready description for provenance (no arrays beyond small per-view lists)."""
        return {
            "kind": self.kind,
            "source": self.source,
            "names": self.names,
            "files": self.files,
            "frame_indices": self.frame_indices,
            "timestamps": self.timestamps,
        }


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def file_stamp(path: str | Path) -> tuple[int, int]:
    """A file's (size, mtime_ns): what changes when anything writes to it."""
    stat = os.stat(path)
    return stat.st_size, stat.st_mtime_ns


def fingerprint(path: str | Path) -> tuple[str, tuple[int, int]]:
    """A file's sha256 and the stamp it had while hashed; InputError if it was being written meanwhile."""
    stamp = file_stamp(path)
    digest = sha256_file(path)
    check_unchanged(path, stamp)
    return digest, stamp


def check_unchanged(path: str | Path, stamp: tuple[int, int]) -> None:
    """Refuse an input file written to since ``stamp``: its result would be recorded under contents it no longer
    has (and a rerun would skip it)."""
    if file_stamp(path) != tuple(stamp):
        raise InputError(f"input file {path} changed while this run read it; rerun once nothing writes to it any more")


def input_identity(manifest: dict | None) -> dict:
    """The part of an input manifest a result depends on: where it came from and every file's name and sha256."""
    manifest = manifest or {}
    files = sorted((f.get("name"), f.get("sha256")) for f in manifest.get("files", []))
    return {"kind": manifest.get("kind"), "source": manifest.get("source"), "files": files}


def _file_record(path: Path) -> dict:
    return {"path": str(path), "size": path.stat().st_size}


def _suffix(path: Path) -> str:
    return path.suffix.lower().lstrip(".")


def list_images(folder: Path, extensions: tuple[str, ...] = IMAGE_EXTENSIONS) -> list[Path]:
    """Image files directly in ``folder`` with one of ``extensions`` (any case), sorted by name."""
    exts = {e.lower().lstrip(".") for e in extensions}
    return sorted((p for p in folder.iterdir() if p.is_file() and _suffix(p) in exts), key=lambda p: p.name)


def find_sparse_model(root: Path, sparse_subdir: str = "") -> Path | None:
    """The COLMAP model folder of a dataset: ``sparse_subdir`` if given, else ``sparse/0`` then ``sparse``.

    ``sparse_subdir`` is a folder of the dataset (``sparse/1``) or, as upstream's CLI takes it, one of ``sparse/``
    (``1`` for ``sparse/1``).

    The folder must lie inside ``root`` once links and ``..`` are resolved; this is checked before the folder
    is looked at, so the error is the same whether or not the target exists.
    """
    base = root.resolve()
    candidates = (
        [root / sparse_subdir, root / "sparse" / sparse_subdir]
        if sparse_subdir
        else [root / "sparse" / "0", root / "sparse"]
    )
    for cand in candidates:
        if not cand.resolve().is_relative_to(base):
            raise InputError(
                f"COLMAP model folder {sparse_subdir or cand.relative_to(root).as_posix()!r} is outside "
                f"the dataset {root}; input.sparse_subdir must name a folder inside it"
            )
        if any((cand / f"images{ext}").is_file() for ext in (".bin", ".txt")):
            return cand
    return None


def discover_scene(
    source: str | Path,
    image_extensions: tuple[str, ...] = IMAGE_EXTENSIONS,
    sparse_subdir: str = "",
    fps: float | None = 1.0,
    max_frames: int | None = None,
    hash_files: bool = True,
) -> SceneInput:
    """Classify ``source`` and list its views; raises InputError with a one-line reason.

    Every file record gets a ``name``, its path relative to the scene's folder (the file's folder for a single
    file), and unless ``hash_files`` is False (a quick check of what an input is) its ``sha256``.
    """
    path = Path(source)
    scene = _discover(path, image_extensions, sparse_subdir, fps, max_frames)
    root = path if path.is_dir() else path.parent
    for record in scene.files:
        record["name"] = _name_in(Path(record["path"]), root)
        if hash_files:
            record["sha256"], scene.stamps[record["path"]] = fingerprint(record["path"])
            record["size"] = scene.stamps[record["path"]][0]
    return scene


def _name_in(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:  # one of them was resolved through a symlink
        return Path(os.path.relpath(path.resolve(), root.resolve())).as_posix()


def _discover(
    path: Path, image_extensions: tuple[str, ...], sparse_subdir: str, fps: float | None, max_frames: int | None
) -> SceneInput:
    if not path.exists():
        raise InputError(f"input not found: {path}. Give an image, a folder of images, a video or a COLMAP dataset.")
    if path.is_file():
        if _suffix(path) in VIDEO_EXTENSIONS:
            return _discover_video(path, fps, max_frames)
        if _suffix(path) in IMAGE_EXTENSIONS:
            check_image_header(path)
            return SceneInput("image", str(path), [path.name], [str(path)], files=[_file_record(path)])
        raise InputError(
            f"unsupported file type '{path.suffix}' for {path}: expected an image ({', '.join(IMAGE_EXTENSIONS)}) "
            f"or a video ({', '.join(VIDEO_EXTENSIONS)})"
        )
    if not path.is_dir():  # a device, a fifo, a socket: nothing the pipeline can read as a scene
        raise InputError(
            f"{path} is not a regular file or folder; give an image, a folder of images, a video or a COLMAP dataset"
        )
    if (path / "images").is_dir() and ((path / "sparse").is_dir() or sparse_subdir):
        return _discover_colmap(path, sparse_subdir, max_frames)
    images = list_images(path, image_extensions)
    if max_frames is not None and max_frames > 0:
        images = images[:max_frames]
    if not images and (path / "images").is_dir():
        raise InputError(
            f"{path} has images/ but no COLMAP model (sparse/0 or sparse); run COLMAP first, or use "
            f"scene={path / 'images'} to reconstruct the images without their poses"
        )
    if not images:
        raise InputError(
            f"no images in {path} (looked for {', '.join(image_extensions)}); "
            "point scene= at a folder of images, a video or a COLMAP dataset"
        )
    for image in images:
        check_image_header(image)
    return SceneInput(
        "images", str(path), [p.name for p in images], [str(p) for p in images], files=[_file_record(p) for p in images]
    )


def _discover_video(path: Path, fps: float | None, max_frames: int | None) -> SceneInput:
    meta = video_io.probe_video(path)
    if meta.n_frames == 0:
        raise InputError(f"video {path} has no frames; check the file is complete")
    indices = video_io.sample_frame_indices(meta.n_frames, meta.fps, fps, max_frames)
    return SceneInput(
        "video",
        str(path),
        [f"frame_{i:06d}.png" for i in indices],
        frame_indices=[int(i) for i in indices],
        timestamps=[float(i) / meta.fps for i in indices],
        files=[_file_record(path)],
    )


def _discover_colmap(root: Path, sparse_subdir: str, max_frames: int | None) -> SceneInput:
    import pycolmap

    model_dir = find_sparse_model(root, sparse_subdir)
    if model_dir is None:
        looked = sparse_subdir or "sparse/0 or sparse"
        raise InputError(
            f"COLMAP dataset {root} has no model in {looked} (cameras/images .bin or .txt); "
            "run COLMAP first or set input.sparse_subdir"
        )
    try:
        rec = pycolmap.Reconstruction(str(model_dir))
    except Exception as exc:  # pycolmap raises plain RuntimeError/ValueError on unreadable models
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise InputError(
            f"cannot read COLMAP model {model_dir} ({reason}): its files are damaged or incomplete; "
            "export the model from COLMAP again"
        ) from exc
    images = sorted(rec.images.values(), key=lambda im: im.name)
    if max_frames is not None and max_frames > 0:  # the first views by name, as for a folder of images
        images = images[:max_frames]
    if not images:
        raise InputError(f"COLMAP model {model_dir} has no registered images")
    paths, exts, ints = [], [], []
    images_dir = (root / "images").resolve()
    for image in images:
        file = root / "images" / image.name
        # Names come from the model's files: an absolute or ../ name, or a link out of images/, would make the
        # reader take another file as a view. Refused before the file is looked at, whether or not it exists.
        if not file.resolve().is_relative_to(images_dir):
            raise InputError(
                f"COLMAP image name {image.name!r} in {model_dir} points outside {root / 'images'}; "
                "image names must be files inside images/ (fix the model's images.txt/.bin)"
            )
        if not file.is_file():
            raise InputError(f"COLMAP image {image.name} is listed in {model_dir} but missing from {root / 'images'}")
        camera = rec.cameras[image.camera_id]
        paths.append(file)
        exts.append(image.cam_from_world().matrix())
        ints.append(intrinsics_from_colmap(_camera_for(camera, check_image_header(file), file)))
    _warn_distortion([rec.cameras[image.camera_id] for image in images])
    model_files = [p for p in sorted(model_dir.iterdir()) if p.is_file()]
    return SceneInput(
        "colmap",
        str(root),
        [im.name for im in images],
        [str(p) for p in paths],
        extrinsics=np.stack(exts),
        intrinsics=np.stack(ints),
        files=[_file_record(p) for p in paths + model_files],
    )


def _warn_distortion(cameras: list[Any]) -> None:
    """Say so when COLMAP cameras carry lens distortion, which DA3 does not model (it takes the pinhole part)."""
    distorted = {(c.model.name, c.camera_id) for c in cameras if any(c.params[i] for i in c.extra_params_idxs())}
    if distorted:
        models = ", ".join(sorted({name for name, _ in distorted}))
        log.warning(
            "%d COLMAP camera(s) (%s) have lens distortion, which DA3 does not model: the views are used as pinhole "
            "images and the colmap export writes PINHOLE cameras; for exact cameras undistort the dataset first "
            "(colmap image_undistorter) and give its output as the scene",
            len(distorted),
            models,
        )


def _camera_for(camera: Any, size: tuple[int, int], file: Path) -> np.ndarray:
    """The COLMAP camera's matrix for an image file of ``size`` (width, height): scaled when the images were resized
    after COLMAP ran (the same aspect ratio), refused when they were cropped or are other images."""
    K = np.array(camera.calibration_matrix(), dtype=np.float64)
    width, height = size
    if (width, height) == (camera.width, camera.height):
        return K
    sx, sy = width / camera.width, height / camera.height
    if abs(sx - sy) * max(camera.width, camera.height) > 1.0:  # more than a pixel of rounding: not a plain resize
        raise InputError(
            f"{file.name} is {width}x{height} pixels but its COLMAP camera {camera.camera_id} is "
            f"{camera.width}x{camera.height}, another aspect ratio; give the images COLMAP was run on"
        )
    K[0] *= sx  # COLMAP's pixel grid starts at the image corner, so a resize scales the principal point as is
    K[1] *= sy
    return K


def load_views(scene: SceneInput, views: Sequence[int] | np.ndarray | None = None) -> list[np.ndarray]:
    """Decode every view, or only the ``views`` (positions in the scene), as RGB uint8 (H, W, 3); raises InputError
    for unreadable files. A long scene is decoded a chunk at a time this way: a video decodes only those frames."""
    picked = np.arange(len(scene)) if views is None else np.asarray(views, dtype=np.int64)
    # A hashed input is decoded only as hashed: the result must be what its recorded sha256 says it is.
    records = {r["path"]: r for r in scene.files if "sha256" in r}
    if scene.kind == "video":
        # the local file: ``source`` says where the video came from (an s3:// URL for remote input)
        record = scene.files[0]
        frames, _ = video_io.read_frames(record["path"], np.asarray(scene.frame_indices)[picked])
        if record["path"] in scene.stamps:  # a video is decoded in place, chunk by chunk: its stamp stands for its hash
            check_unchanged(record["path"], scene.stamps[record["path"]])
        return list(frames)
    return [read_image(scene.paths[i], records.get(scene.paths[i], {}).get("sha256")) for i in picked]


def check_image_header(path: str | Path) -> tuple[int, int]:
    """Open an image's header only (no decoding): its (width, height); InputError for an empty, foreign or oversized
    file."""
    from PIL import Image

    with _image_errors(path), Image.open(path) as image:
        return image.size


def read_image(path: str | Path, sha256: str | None = None) -> np.ndarray:
    """One image file as RGB uint8 (H, W, 3), as the module docstring describes; InputError if unreadable, or if
    ``sha256`` is given and the bytes read are not those."""
    from PIL import Image

    with _image_errors(path):  # decoded from these very bytes, so the check below covers what is decoded
        data = Path(path).read_bytes()
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise InputError(f"input file {path} changed while this run read it; rerun once nothing writes to it any more")
    with _image_errors(path, len(data)), Image.open(io.BytesIO(data)) as im:
        if not _deeper_than_8_bits(im, data):
            return np.asarray(im.convert("RGB"))
        im.load()  # decodes fully: a truncated file fails here like an 8-bit one
    return _wide_to_rgb8(path, data)


@contextlib.contextmanager
def _image_errors(path: str | Path, size: int | None = None) -> Iterator[None]:
    """Pillow's failures on one image file as a one-line InputError naming the file and the fix."""
    from PIL import Image, UnidentifiedImageError

    try:
        yield
    except Image.DecompressionBombError as exc:  # over Pillow's pixel limit, which guards against crafted files
        raise InputError(
            f"image {path} is too large to read safely ({exc.args[0].split(',')[0]}); downscale it "
            "(e.g. to 8000 px on the long side) and try again"
        ) from exc
    except UnidentifiedImageError as exc:
        empty = (os.path.getsize(path) if size is None else size) == 0
        kind = "empty (0 bytes)" if empty else "not an image Pillow can read"
        raise InputError(f"cannot read image {path}: the file is {kind}. Replace or remove the file.") from exc
    except OSError as exc:
        reason = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise InputError(
            f"cannot read image {path}: the file is damaged or cut short ({reason}). Replace or remove the file."
        ) from exc


def _deeper_than_8_bits(im, data: bytes) -> bool:
    """16-bit samples, which Pillow clips (gray) or truncates inconsistently (colour) on ``convert("RGB")``."""
    if im.mode.startswith("I;16") or im.mode in ("I", "F"):
        return True
    if im.format == "PNG":  # IHDR: width, height, then bit depth
        return (data[24] if len(data) >= 25 else 8) > 8
    if im.format == "TIFF":
        bits = im.tag_v2.get(258, (8,))
        return max(bits if isinstance(bits, tuple) else (bits,)) > 8
    return False


def _wide_to_rgb8(path: str | Path, encoded: bytes) -> np.ndarray:
    import cv2

    data = cv2.imdecode(np.frombuffer(encoded, np.uint8), cv2.IMREAD_UNCHANGED)
    if data is None or data.dtype != np.uint16:
        kind = "unreadable" if data is None else f"{data.dtype} samples"
        raise InputError(f"cannot read image {path}: {kind}; save it as 8- or 16-bit PNG/TIFF or as JPEG")
    rgb8 = ((data.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)  # round(v * 255 / 65535)
    if rgb8.ndim == 2:
        return np.repeat(rgb8[..., None], 3, axis=2)
    return np.ascontiguousarray(rgb8[..., 2::-1])  # OpenCV's BGR(A) -> RGB, alpha dropped
