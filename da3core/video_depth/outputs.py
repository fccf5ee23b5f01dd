"""Annolid-compatible outputs of Video Depth Anything, written frame by frame in constant memory.

Layout (Annolid's ``run_video_depth_anything``), in one output folder (local or fsspec URL):
``depth.ndjson`` (always) · ``<stem>_vis.mp4`` · ``depth_frames/depth_00000.png`` ·
``point_clouds/point_0000.csv`` (+ ``point_clouds/point_cloud_info.json``) · ``<stem>_depths.npz`` ·
``<stem>_depths_exr/frame_00000.exr``. File numbers count processed frames; ``frame_index`` in the
records is the original video frame.

Deliberate fixes over Annolid: every file is published atomically and a rerun replaces the previous
run's files (no appended duplicates, no stale frames); the focal length is configurable; point
clouds from relative models use depth = 1 / disparity (stated in the info file), never raw disparity
as z. ``StreamingOutputs`` takes frames as they arrive; the vis video, depth PNGs and npz need the
global depth range, so they are a second pass over depths read back one at a time (``write_*``).
"""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import zipfile
from collections.abc import Iterable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, TextIO, cast

import fsspec
import matplotlib
import numpy as np
from matplotlib.colors import ListedColormap
from PIL import Image

from da3core.export.media import write_mp4
from da3core.export.target import ExportTarget

NDJSON_NAME = "depth.ndjson"
RECORD_VERSION = "Depth-Anything"
DEFAULT_FOCAL = 470.4  # Annolid's / upstream's default in pixels, whatever the resolution
_INFERNO = (np.asarray(cast(ListedColormap, matplotlib.colormaps["inferno"]).colors) * 255).astype(
    np.uint8
)  # upstream's 256-entry LUT


@dataclass(frozen=True)
class OutputOptions:
    """Which optional Annolid outputs to write, and how."""

    save_depth_video: bool = False
    save_depth_frames: bool = False
    save_point_clouds: bool = False
    save_npz: bool = False
    save_exr: bool = False
    grayscale: bool = False
    focal_length_x: float = DEFAULT_FOCAL
    focal_length_y: float = DEFAULT_FOCAL


def default_output_dir(video: str) -> str:
    """Annolid's folder for a video's outputs: ``videos/mice.mp4`` → ``videos/mice`` (local path or URL)."""
    if "://" in video:
        scheme, rest = video.split("://", 1)
        return f"{scheme}://{PurePosixPath(rest).with_suffix('')}"
    return str(Path(video).with_suffix(""))


def quantize_depth(depth: np.ndarray) -> tuple[np.ndarray, float, float]:
    """(uint16 image, min, max) with ``q = round((d - min) / (max - min) * 65535)``, as Annolid's writer."""
    depth = np.asarray(depth, dtype=np.float32)
    d_min, d_max = float(depth.min()), float(depth.max())
    if abs(d_max - d_min) < 1e-6:
        d_max = d_min + 1e-6
    normalized = (depth - d_min) / (d_max - d_min)
    return np.clip(np.round(normalized * 65535.0), 0, 65535).astype(np.uint16), d_min, d_max


def depth_record(depth: np.ndarray, frame_index: int, video_name: str) -> dict[str, Any]:
    """One ``depth.ndjson`` record (Annolid's schema): the depth as a base64 16-bit PNG plus its scale."""
    quantized, d_min, d_max = quantize_depth(depth)
    buffer = io.BytesIO()
    Image.fromarray(quantized).save(buffer, format="PNG")  # uint16 → 16-bit grayscale PNG
    return {
        "version": RECORD_VERSION,
        "flags": {},
        "shapes": [],
        "imagePath": "",
        "imageHeight": int(depth.shape[0]),
        "imageWidth": int(depth.shape[1]),
        "otherData": {
            "depth_map": {
                "image_data": base64.b64encode(buffer.getvalue()).decode("ascii"),
                "scale": {"min": d_min, "max": d_max},
                "dtype": "uint16",
            }
        },
        "frame_index": int(frame_index),
        "video_name": video_name,
    }


def colorize(depth: np.ndarray, lo: float, hi: float, grayscale: bool = False) -> np.ndarray:
    """(H, W, 3) uint8 as upstream's ``save_video``: 8-bit over the global [lo, hi], inferno or gray."""
    scale = (hi - lo) if hi > lo else 1e-6
    level = (np.clip((depth - lo) / scale, 0.0, 1.0) * 255).astype(np.uint8)
    return np.repeat(level[..., None], 3, axis=2) if grayscale else _INFERNO[level]


def point_cloud_info(height: int, width: int, options: OutputOptions, is_metric: bool) -> dict[str, Any]:
    """What the point-cloud CSV columns mean and the pinhole intrinsics used."""
    z = (
        "metric depth in metres (the model output)"
        if is_metric
        else "relative depth = 1 / relative disparity (the model output); unknown scale and shift, not metres; "
        "nan where the disparity is 0"
    )
    return {
        "columns": ["x", "y", "z", "intensity", "red", "green", "blue"],
        "z": z,
        "z_kind": "metric_depth" if is_metric else "inverse_relative_disparity",
        "intensity": "the raw model output: " + ("metres" if is_metric else "relative disparity, larger = nearer"),
        "x": "(u - cx) / fx * z, u = pixel column",
        "y": "(v - cy) / fy * z, v = pixel row",
        "intrinsics": {
            "fx": options.focal_length_x,
            "fy": options.focal_length_y,
            "cx": width / 2,
            "cy": height / 2,
            "width": width,
            "height": height,
            "units": "pixels of the processed frame",
        },
        "rows": "one per pixel in row-major order (reshape to height x width)",
    }


def point_cloud_rows(depth: np.ndarray, rgb: np.ndarray, options: OutputOptions, is_metric: bool) -> np.ndarray:
    """(H*W, 7) float rows ``x, y, z, intensity, r, g, b`` with the documented pinhole back-projection."""
    h, w = depth.shape
    raw = depth.astype(np.float32)
    if is_metric:
        z = raw
    else:
        with np.errstate(divide="ignore"):
            z = np.where(raw > 0, 1.0 / raw, np.nan).astype(np.float32)
    v, u = np.mgrid[0:h, 0:w].astype(np.float32)
    x = (u - w / 2) / options.focal_length_x * z
    y = (v - h / 2) / options.focal_length_y * z
    return np.column_stack([x.ravel(), y.ravel(), z.ravel(), raw.ravel(), rgb.reshape(-1, 3).astype(np.float32)])


class StreamingOutputs:
    """The per-frame outputs (``depth.ndjson``, EXR frames, point-cloud CSVs), staged under hidden temp names.

    Use as a context manager: on an exception the staged files are deleted; on success they stay staged until
    :meth:`publish` (called once the store they belong to is in place) or :meth:`discard`.
    """

    def __init__(self, target: ExportTarget, video_name: str, options: OutputOptions, is_metric: bool):
        self.target, self.video_name, self.options, self.is_metric = target, video_name, options, is_metric
        self.stem = PurePosixPath(video_name).stem
        self.count = 0
        self._stack = ExitStack()
        self._ndjson: TextIO = io.StringIO()  # the real file from __enter__ on
        self._dirs: dict[str, Path] = {}

    def __enter__(self) -> StreamingOutputs:
        local = self._stack.enter_context(self.target.staged(NDJSON_NAME))
        self._ndjson = self._stack.enter_context(open(local, "w", encoding="utf-8"))
        if self.options.save_exr:
            self._dirs["exr"] = self._stack.enter_context(self.target.staged_dir(f"{self.stem}_depths_exr"))
        if self.options.save_point_clouds:
            self._dirs["points"] = self._stack.enter_context(self.target.staged_dir("point_clouds"))
        return self

    def add(self, frame_index: int, rgb: np.ndarray, depth: np.ndarray) -> None:
        """Write one processed frame's record, EXR and point cloud."""
        self._ndjson.write(json.dumps(depth_record(depth, frame_index, self.video_name)) + "\n")
        if "exr" in self._dirs:
            write_exr(self._dirs["exr"] / f"frame_{self.count:05d}.exr", depth)
        if "points" in self._dirs:
            if self.count == 0:
                info = point_cloud_info(depth.shape[0], depth.shape[1], self.options, self.is_metric)
                (self._dirs["points"] / "point_cloud_info.json").write_text(json.dumps(info, indent=1))
            rows = point_cloud_rows(depth, rgb, self.options, self.is_metric)
            np.savetxt(
                self._dirs["points"] / f"point_{self.count:04d}.csv",
                rows,
                delimiter=",",
                comments="",
                header="x,y,z,intensity,red,green,blue",
                fmt=["%.6f"] * 4 + ["%d"] * 3,
            )
        self.count += 1

    def __exit__(self, *exc: Any) -> None:
        if exc[0] is not None:
            self._stack.__exit__(*exc)  # the staged files go; the previous run's files stay
            return
        self._ndjson.close()  # complete on disk now; moved under its final name by publish()

    def publish(self) -> None:
        """Move the staged files under their final names and drop frames of a longer earlier run."""
        self._stack.close()  # the staged() contexts publish when they exit without an exception
        if "exr" in self._dirs:
            prune(self.target, f"{self.stem}_depths_exr", self.count, "frame_{:05d}.exr")
        if "points" in self._dirs:
            prune(self.target, "point_clouds", self.count, "point_{:04d}.csv", keep=("point_cloud_info.json",))

    def discard(self) -> None:
        """Delete the staged files without publishing them (a no-op after :meth:`publish`)."""
        error = RuntimeError("staged outputs discarded")
        self._stack.__exit__(RuntimeError, error, None)  # exiting with an error: nothing is published

    def written(self) -> dict[str, list[str]]:
        """Output kind → locations, in Annolid's result-dict keys."""
        out = {"depth_ndjson": [self.target.url(NDJSON_NAME)]}
        if self.options.save_exr:
            out["exr"] = [self.target.url(f"{self.stem}_depths_exr")]
        if self.options.save_point_clouds:
            out["point_cloud_csv"] = [self.target.url(f"point_clouds/point_{i:04d}.csv") for i in range(self.count)]
        return out


def output_locations(target: ExportTarget, video_name: str, options: OutputOptions, count: int) -> dict[str, list[str]]:
    """Every file a run with ``options`` writes for ``count`` processed frames, by Annolid's result keys."""
    stem = PurePosixPath(video_name).stem
    wanted = {
        "depth_ndjson": (True, [NDJSON_NAME]),
        "depth_visualization": (options.save_depth_video, [f"{stem}_vis.mp4"]),
        "depth_frames": (options.save_depth_frames, [f"depth_frames/depth_{i:05d}.png" for i in range(count)]),
        "point_cloud_csv": (options.save_point_clouds, [f"point_clouds/point_{i:04d}.csv" for i in range(count)]),
        "npz": (options.save_npz, [f"{stem}_depths.npz"]),
        "exr": (options.save_exr, [f"{stem}_depths_exr"]),
    }
    return {key: [target.url(rel) for rel in rels] for key, (on, rels) in wanted.items() if on}


def output_entries(video_name: str, options: OutputOptions) -> list[str]:
    """What a run with ``options`` owns in its output folder: files, and folders (ending in ``/``) it fills whole."""
    stem = PurePosixPath(video_name).stem
    wanted = [
        (True, NDJSON_NAME),
        (options.save_depth_video, f"{stem}_vis.mp4"),
        (options.save_depth_frames, "depth_frames/"),
        (options.save_point_clouds, "point_clouds/"),
        (options.save_npz, f"{stem}_depths.npz"),
        (options.save_exr, f"{stem}_depths_exr/"),
    ]
    return [entry for on, entry in wanted if on]


def remove_outputs(target: ExportTarget, entries: Iterable[str]) -> list[str]:
    """Delete earlier runs' outputs (``output_entries`` items: a file, or a folder's run-written files); returns them.

    The list comes from store attributes, so anything that is not a plain name inside the folder is ignored.
    """
    fs = target.fs if target.remote else fsspec.filesystem("file")
    removed = []
    for entry in sorted(set(entries)):
        parts = PurePosixPath(entry).parts
        if not parts or entry.startswith("/") or ".." in parts or parts[0].startswith("depth.zarr"):
            continue
        path = fs._strip_protocol(target.url(entry.rstrip("/")))
        if not fs.exists(path):
            continue
        if not entry.endswith("/"):
            fs.rm_file(path)
        else:  # only the files a run writes there: a user's own files in the folder stay, and so does the folder
            ours = [p for p in fs.ls(path, detail=False) if _written_here(entry, PurePosixPath(p).name)]
            if ours:
                fs.rm(ours)
            if not target.remote and not fs.ls(path, detail=False):
                fs.rmdir(path)
        removed.append(entry)
    return removed


def _numbered(pattern: str) -> re.Pattern[str]:
    """``depth_{:05d}.png`` -> a regex of every name that format writes."""
    head, tail = pattern.split("{", 1)[0], pattern.split("}", 1)[1]
    return re.compile(re.escape(head) + r"\d+" + re.escape(tail))


_WRITTEN = {  # per output folder, the names runs write into it (anything else there is the user's)
    "depth_frames": (_numbered("depth_{:05d}.png"),),
    "point_clouds": (_numbered("point_{:04d}.csv"), re.compile(r"point_cloud_info\.json")),
    "_depths_exr": (_numbered("frame_{:05d}.exr"),),
}


def _written_here(folder: str, name: str) -> bool:
    folder = folder.rstrip("/")
    patterns = next((p for key, p in _WRITTEN.items() if folder == key or folder.endswith(key)), ())
    return any(pattern.fullmatch(name) for pattern in patterns)


_TEMP_FILE = re.compile(r"\.(depth|.+_vis|.+_depths)\.tmp-[0-9a-f]{8}\.(ndjson|mp4|npz)")  # ExportTarget.staged
_FRAME_DIRS = re.compile(r"depth_frames|point_clouds|.+_depths_exr")


def remove_leftovers(target: ExportTarget) -> list[str]:
    """Delete the hidden staging files and folders killed runs left among the outputs (local folders only: remote
    outputs are staged in the local temp folder); call it holding the output folder's lock. Returns what went."""
    root = Path(target.url(""))
    if target.remote or not root.is_dir():
        return []
    removed = [p for p in root.iterdir() if p.is_file() and _TEMP_FILE.fullmatch(p.name)]
    for path in removed:
        path.unlink(missing_ok=True)
    for folder in (p for p in root.iterdir() if p.is_dir() and _FRAME_DIRS.fullmatch(p.name)):
        staging = [p for p in folder.iterdir() if p.is_dir() and p.name.startswith(".da3-export-")]
        for path in staging:
            shutil.rmtree(path, ignore_errors=True)
        removed += staging
        if not any(folder.iterdir()):  # staged_dir creates the folder before anything is published
            folder.rmdir()
    return [str(p) for p in removed]


def write_exr(path: Path, depth: np.ndarray) -> None:
    """One float32 channel "Z" (upstream's layout), ZIP-compressed scanlines."""
    import OpenEXR

    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    with OpenEXR.File(header, {"Z": np.ascontiguousarray(depth, dtype=np.float32)}) as exr:
        exr.write(str(path))


def prune(target: ExportTarget, reldir: str, count: int, pattern: str, keep: tuple[str, ...] = ()) -> None:
    """Delete numbered files in ``reldir`` that this run did not write (e.g. frames of a longer earlier run)."""
    fs = target.fs if target.remote else fsspec.filesystem("file")
    root = fs._strip_protocol(target.url(reldir))
    if not fs.isdir(root):
        return
    wanted, ours = {pattern.format(i) for i in range(count)} | set(keep), _numbered(pattern)
    stale = [  # numbered files of an earlier, longer run; a user's own files there are not the run's to delete
        p for p in fs.ls(root, detail=False) if (name := PurePosixPath(p).name) not in wanted and ours.fullmatch(name)
    ]
    if stale:
        fs.rm(stale)


def write_depth_video(
    target: ExportTarget,
    stem: str,
    depths: Iterable[np.ndarray],
    lo: float,
    hi: float,
    fps: float,
    grayscale: bool = False,
) -> list[str]:
    """``<stem>_vis.mp4``: H.264 crf 18 over the global depth range (upstream's ``save_video``)."""
    relpath = f"{stem}_vis.mp4"
    with target.staged(relpath) as local:
        write_mp4(local, (colorize(d, lo, hi, grayscale) for d in depths), fps, quality="high")
    return [target.url(relpath)]


def write_depth_frames(
    target: ExportTarget, depths: Iterable[np.ndarray], lo: float, hi: float, grayscale: bool = False
) -> list[str]:
    """``depth_frames/depth_00000.png``: 8-bit over the global range, inferno RGB or gray."""
    count = 0
    with target.staged_dir("depth_frames") as folder:
        for count, depth in enumerate(depths, start=1):
            image = colorize(depth, lo, hi, grayscale)
            Image.fromarray(image[..., 0] if grayscale else image).save(folder / f"depth_{count - 1:05d}.png")
    prune(target, "depth_frames", count, "depth_{:05d}.png")
    return [target.url(f"depth_frames/depth_{i:05d}.png") for i in range(count)]


def write_npz(target: ExportTarget, stem: str, depths: Iterable[np.ndarray], shape: tuple[int, int, int]) -> list[str]:
    """``<stem>_depths.npz`` with key ``depths`` float32 (T, H, W), deflated and streamed one frame at a time.

    Equivalent to upstream's ``np.savez_compressed(depths=...)`` but never holds the whole video.
    """
    from numpy.lib import format as npy_format

    relpath = f"{stem}_depths.npz"
    with target.staged(relpath) as local:
        with zipfile.ZipFile(local, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            with archive.open("depths.npy", "w", force_zip64=True) as member:
                npy_format.write_array_header_2_0(
                    member,
                    {
                        "descr": npy_format.dtype_to_descr(np.dtype("<f4")),
                        "fortran_order": False,
                        "shape": tuple(int(s) for s in shape),
                    },
                )
                written = 0
                for depth in depths:
                    member.write(np.ascontiguousarray(depth, dtype="<f4").tobytes())
                    written += 1
        if written != shape[0]:
            raise ValueError(f"npz expected {shape[0]} frames but got {written}")
    return [target.url(relpath)]
