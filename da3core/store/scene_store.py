"""The zarr scene store: one group per scene, on a local path or any fsspec URL (``s3://...``).

Layout (zarr v3, xarray-readable through ``dimension_names``, one frame per chunk, blosc-zstd):
``images`` uint8 (frame, y, x, channel) · ``depth``/``conf`` float32 (frame, y, x) · ``sky`` bool ·
``extrinsics`` float32 (frame, 3, 4) world-to-camera OpenCV · ``intrinsics`` float32 (frame, 3, 3) ·
``frame`` (original frame index, the xarray index) · ``timestamp`` / ``source_name`` (frame; xarray coordinates) ·
``features/feat_layer_<i>`` · ``gaussians/<field>``. Arrays carry CF-style ``units`` / ``long_name`` attributes.
Attributes carry provenance; the ``complete`` marker (config hash, time, run id) is written last, followed by
consolidated metadata (so ``xarray.open_zarr`` reads a complete store in one request, without a warning).

Replacing a store: a new one is built beside the old (``<store>.tmp-<run>``, :meth:`SceneStore.staging`) and
swapped in by :meth:`SceneStore.replace_with`; writers hold the scene lock (``da3core.store.lock``) throughout.
What a reader sees, whatever point a writer is killed at:

- local disk: the old store with its marker, or no store, or the new store without a marker (two renames:
  old store to ``<store>.old-<run>``, new store into place; the old copy is deleted afterwards). Never a
  marked store with missing or mixed arrays. A store killed between the two renames is put back by the next
  writer (:meth:`SceneStore.discard_leftovers`).
- S3 (no rename): the marker and the record of its inference are first removed from the old store's root
  ``zarr.json``, then every object of the new store is copied over (its root ``zarr.json`` last), objects the
  new store lacks are deleted, and the marker is written by one PUT after all of that. So a store whose root
  carries a marker holds exactly the arrays of the run that wrote it (S3 reads after a write are strongly
  consistent). While a replacement runs, readers may see a mix of old and new chunks, but never with a marker,
  and no rerun takes the mix for the result of its own inference.
- a reader that must not race a writer reads the marker, reads the arrays, and reads the marker again: the
  same marker (it carries the run id) means it read one complete run's store.

Leftover ``.tmp-`` / ``.old-`` siblings of killed runs are never read; the next writer removes them
(:meth:`SceneStore.discard_leftovers`).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import fsspec
import fsspec.implementations.local
import numpy as np
import zarr
from zarr.codecs import BloscCodec, BloscShuffle

from da3core.io.storage import StorageError
from da3core.prediction import Gaussians, Prediction

log = logging.getLogger(__name__)
SCHEMA_VERSION = 1
CONVENTIONS = {
    "extrinsics": "world-to-camera [R|t], OpenCV camera axes (+x right, +y down, +z forward)",
    "intrinsics": "pixel units of the processed images; pixel centres on integer coordinates",
    "depth": "camera-frame z along the optical axis; metres when attrs.is_metric == 1, else relative units",
    "images": "the processed network input, RGB uint8",
    "gaussians": "world frame of the prediction, before metric scaling; rotations are quaternions (w, x, y, z)",
}
COORDINATES = ("timestamp", "source_name")  # per-frame arrays xarray shows as coordinates of ``frame``
_COMPRESSOR = BloscCodec(cname="zstd", clevel=3, shuffle=BloscShuffle.bitshuffle)
TMP_TAG, OLD_TAG = ".tmp-", ".old-"  # sibling names: <store>.tmp-<run> (being built), <store>.old-<run> (replaced)
_GAUSSIAN_DIMS = {
    "means": ["gaussian", "xyz"],
    "scales": ["gaussian", "xyz"],
    "rotations": ["gaussian", "wxyz"],
    "harmonics": ["gaussian", "rgb", "sh"],
    "opacities": ["gaussian"],
}


def array_attrs(is_metric: bool, conventions: dict[str, str]) -> dict[str, dict[str, str]]:
    """CF-style ``units`` and ``long_name`` of the top-level arrays; lengths are metres only for metric models."""
    length = "m" if is_metric else "relative"
    cameras = {"units": length, "long_name": CONVENTIONS["extrinsics"] + "; translation in these units"}
    pixels = {"units": "pixels", "long_name": CONVENTIONS["intrinsics"]}
    return {
        "depth": {"units": length, "long_name": conventions.get("depth", CONVENTIONS["depth"])},
        "conf": {"units": "1", "long_name": "confidence, larger = more reliable"},
        "sky": {"units": "1", "long_name": "sky mask"},
        "images": {"units": "1", "long_name": CONVENTIONS["images"]},
        "extrinsics": cameras,
        "input_extrinsics": {**cameras, "long_name": "the input cameras, world-to-camera"},
        "intrinsics": pixels,
        "input_intrinsics": {**pixels, "long_name": "the input cameras' intrinsics"},
        "frame": {"units": "1", "long_name": "original frame index in the input"},
        "timestamp": {"units": "s", "long_name": "seconds from the start of the video; NaN for still images"},
        "source_name": {"long_name": "input file of the view"},
    }


class StoreError(StorageError):
    """A scene store that cannot be reached, read or written."""


@dataclass
class SceneStore:
    """Handle on one scene's zarr group; cheap to create, pass around as (url, storage_options)."""

    url: str
    storage_options: dict[str, Any] = field(default_factory=dict)

    def _fs(self) -> tuple[fsspec.AbstractFileSystem, str]:
        return fsspec.core.url_to_fs(self.url, **self.storage_options)

    def _open(self, mode: Literal["r", "r+", "a", "w", "w-"]) -> zarr.Group:
        try:
            return zarr.open_group(
                self.url, mode=mode, storage_options=self.storage_options or None, use_consolidated=False
            )
        except FileNotFoundError as exc:
            raise StoreError(f"no scene store at {self.url}") from exc

    def exists(self) -> bool:
        """True when a zarr group exists at the URL."""
        fs, path = self._fs()
        return fs.exists(f"{path}/zarr.json")

    def attrs(self) -> dict[str, Any]:
        """All attributes of the scene group."""
        return self._open("r").attrs.asdict()

    def marker(self) -> dict[str, Any] | None:
        """The completion marker (``config_hash``, ``finished_at``, ``run``), or None if the store is not complete."""
        if not self.exists():
            return None
        return self.attrs().get("complete") or None

    def is_complete(self, config_hash: str | None = None) -> bool:
        """Complete (and, if given, produced by ``config_hash``)."""
        marker = self.marker()
        return marker is not None and (config_hash is None or marker.get("config_hash") == config_hash)

    def _is_local(self) -> bool:
        return isinstance(self._fs()[0], fsspec.implementations.local.LocalFileSystem)

    def reset(self, attrs: dict[str, Any]) -> zarr.Group:
        """Delete whatever is at the URL and start an empty, incomplete store with ``attrs``."""
        fs, path = self._fs()
        if fs.exists(f"{path}/zarr.json"):  # the root (and its marker) goes first: never a marked store without arrays
            fs.rm_file(f"{path}/zarr.json")
        if fs.exists(path):
            fs.rm(path, recursive=True)
        group = zarr.open_group(self.url, mode="w", storage_options=self.storage_options or None)
        group.attrs.update({"schema_version": SCHEMA_VERSION, "conventions": CONVENTIONS, **attrs})
        return group

    def update_attrs(self, **attrs: Any) -> None:
        """Merge top-level attributes."""
        self._open("r+").attrs.update(attrs)

    def record_stage(self, stage: str, seconds: float, **info: Any) -> None:
        """Add a stage's wall time (and optional details) to ``timings`` / ``stages``."""
        group = self._open("r+")
        current = _attrs(group)
        timings = {**current.get("timings", {}), stage: round(seconds, 4)}
        stages = {**current.get("stages", {}), stage: {"finished_at": time.time(), **info}}
        group.attrs.update({"timings": timings, "stages": stages})

    def mark_complete(self, config_hash: str) -> None:
        """Describe the arrays, write the completion marker and consolidate the metadata; call this last."""
        group = self._open("r+")
        attrs = _attrs(group)
        for name, described in array_attrs(bool(attrs.get("is_metric")), attrs.get("conventions", {})).items():
            if name in group:
                group[name].attrs.update(described)
        group.attrs.update(coordinates=" ".join(name for name in COORDINATES if name in group))
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Consolidated metadata is currently not part", UserWarning)
            zarr.consolidate_metadata(group.store, path=group.path)
        # The marker goes into the consolidated root in one write (the group opened with its consolidated metadata
        # keeps it). Later updates through _open drop the consolidation again, so only marked stores carry it.
        consolidated = zarr.open_group(
            self.url, mode="r+", storage_options=self.storage_options or None, use_consolidated=True
        )
        consolidated.attrs.update(
            complete={"config_hash": config_hash, "finished_at": time.time(), "run": uuid.uuid4().hex}
        )

    def staging(self) -> SceneStore:
        """A fresh sibling URL (``<url>.tmp-<run>``) to build this store's replacement in (see :meth:`replace_with`)."""
        return SceneStore(f"{self.url}{TMP_TAG}{uuid.uuid4().hex[:12]}", self.storage_options)

    def replace_with(self, staged: SceneStore) -> None:
        """Put the unmarked store ``staged`` (same filesystem) at this URL, as the module docstring describes."""
        fs, path = self._fs()
        src = staged._fs()[1]
        if not fs.exists(f"{src}/zarr.json"):  # checked before the old store is touched
            raise StoreError(f"no staged store at {staged.url} to replace {self.url} with")
        if self._is_local():
            aside = f"{path}{OLD_TAG}{uuid.uuid4().hex[:12]}"
            if os.path.lexists(path):
                os.rename(path, aside)
            os.rename(src, path)
            shutil.rmtree(aside, ignore_errors=True)  # what a kill leaves here, discard_leftovers removes
            return
        if self.exists():  # neither complete nor the record of any inference while its arrays are being replaced
            self.update_attrs(complete=None, stages={})
        files = fs.find(src)
        root = f"{src}/zarr.json"
        new = [path + f[len(src) :] for f in files]
        # The root's attributes (inference hash, inputs) go last: until then no rerun takes the mix for its own.
        fs.copy([f for f in files if f != root], [n for f, n in zip(files, new) if f != root])  # in parallel
        stale = sorted(set(fs.find(path)) - set(new))
        if stale:
            fs.rm(stale)
        fs.copy(root, f"{path}/zarr.json")
        fs.rm(src, recursive=True)

    @contextmanager
    def replacement(self) -> Iterator[SceneStore]:
        """Yield a staged store to build; swap it in when the block succeeds, delete it when the block raises."""
        staged = self.staging()
        try:
            yield staged
        except BaseException:
            staged.discard()
            raise
        self.replace_with(staged)

    def discard_leftovers(self) -> list[str]:
        """Delete ``<url>.tmp-*`` / ``<url>.old-*`` left by killed runs; call it holding the scene lock.

        A run killed between the two renames of a local swap left no store here and the old one aside: that one
        is put back first (what the files beside it belong to), not deleted."""
        fs, path = self._fs()
        parent, name = path.rstrip("/").rsplit("/", 1)
        try:
            entries = fs.ls(parent, detail=False, refresh=True)
        except (FileNotFoundError, NotADirectoryError):
            return []
        leftovers = [
            e for e in entries if e.rstrip("/").rsplit("/", 1)[-1].startswith((name + TMP_TAG, name + OLD_TAG))
        ]
        aside = [e for e in leftovers if e.rstrip("/").rsplit("/", 1)[-1].startswith(name + OLD_TAG)]
        if self._is_local() and len(aside) == 1 and not fs.exists(path):
            # Marked or not, it is what stood here, and what lists the files beside it (a run publishes its
            # files only after its swap): putting it back restores that state exactly.
            if SceneStore(aside[0], self.storage_options).exists():
                os.rename(aside[0], path)
                leftovers.remove(aside[0])
                log.info("restored %s, the store a killed run had set aside", self.url)
        for entry in leftovers:
            fs.rm(entry, recursive=True)
        return leftovers

    def discard(self) -> None:
        """Delete this store (a staged one that will not be used)."""
        fs, path = self._fs()
        if fs.exists(path):
            fs.rm(path, recursive=True)

    def write_prediction(
        self, pred: Prediction, frame_index: np.ndarray | None = None, timestamps: np.ndarray | None = None
    ) -> None:
        """Write every array of ``pred`` (one frame per chunk) and its scalar fields as attributes."""
        group = self._open("r+")
        n = len(pred)
        for name, (values, dims, dtype, chunk0) in _frame_arrays(pred, frame_index, timestamps).items():
            _put(group, name, values, dims, dtype, chunk0)
        for name, feat in (pred.aux or {}).items():
            dims = ["frame", "patch_y", "patch_x", f"channel_{name}"]
            _put(group.require_group("features"), name, np.asarray(feat), dims)
        if pred.gaussians is not None:
            gs_group = group.require_group("gaussians")
            per_view = len(pred.gaussians) // max(n, 1)
            for name, dims in _GAUSSIAN_DIMS.items():
                _put(gs_group, name, getattr(pred.gaussians, name), dims, chunk0=per_view)
        group.attrs.update(
            {
                "n_frames": n,
                "is_metric": int(pred.is_metric),
                "scale_factor": pred.scale_factor,
                "ref_view_idx": pred.ref_view_idx,
                "source_names": pred.source_names,
                "source_sizes": None if pred.source_sizes is None else np.asarray(pred.source_sizes).tolist(),
                "source_scale": None if pred.source_scale is None else np.asarray(pred.source_scale).tolist(),
                "source_offset": None if pred.source_offset is None else np.asarray(pred.source_offset).tolist(),
            }
        )

    def append_frames(self, pred: Prediction, frame_index: np.ndarray, timestamps: np.ndarray | None = None) -> None:
        """Append ``pred``'s views to the per-frame arrays of a store begun with :meth:`write_prediction` (a long
        scene written chunk by chunk); features and Gaussians are not appended."""
        group = self._open("r+")
        given = _frame_arrays(pred, frame_index, timestamps)
        arrays = {name: v for name, v in given.items() if v[0] is not None}
        present = {name for name, _ in group.arrays()} & set(given)
        if set(arrays) != present:
            raise StoreError(f"cannot append views with arrays {sorted(arrays)} to a store holding {sorted(present)}")
        for name, (values, _, dtype, _) in arrays.items():
            values, array = np.asarray(values), _array(group, name)
            array.append(values if values.dtype.kind == "U" else values.astype(dtype or array.dtype), axis=0)
        group.attrs.update({"n_frames": _array(group, "depth").shape[0]})

    def write_array(self, name: str, values: np.ndarray, dims: list[str], chunk0: int = 1) -> None:
        """Replace one top-level array (e.g. aligned extrinsics) in place."""
        _put(self._open("r+"), name, values, dims, chunk0=chunk0)

    def read_array(self, name: str) -> np.ndarray:
        """One array's values."""
        return np.asarray(_array(self._open("r"), name)[...])

    def create_array(
        self, name: str, shape: tuple[int, ...], dtype: Any, dims: list[str], chunk0: int = 1
    ) -> zarr.Array:
        """An empty array to fill frame by frame as results stream in (same chunking and codecs as the rest)."""
        chunks = (max(1, min(chunk0, shape[0])),) + tuple(shape[1:])
        return self._open("r+").create_array(
            name, shape=shape, dtype=dtype, chunks=chunks, compressors=_COMPRESSOR, dimension_names=dims, overwrite=True
        )

    def iter_array(self, name: str) -> Iterator[np.ndarray]:
        """One array's values a frame at a time, so long videos are read back in constant memory."""
        array = _array(self._open("r"), name)
        for i in range(array.shape[0]):
            yield np.asarray(array[i])

    def read_prediction(
        self, features: bool = True, gaussians: bool = True, frames: slice = slice(None), lazy: bool = False
    ) -> Prediction:
        """Rebuild the Prediction this store holds (for exports without re-running inference).

        ``frames`` reads some views only (features and Gaussians then stay unread). ``lazy`` leaves the image-like
        arrays (depth, conf, sky, images) in the store as :class:`FrameArray` objects read a frame at a time, so a long
        scene is exported in bounded memory; the per-frame cameras are read at once.
        """
        group = self._open("r")
        attrs = _attrs(group)
        partial = frames != slice(None)

        def get(name: str, image_like: bool = True) -> Any:
            if name not in group:
                return None
            return FrameArray(_array(group, name)) if lazy and image_like else np.asarray(_array(group, name)[frames])

        aux = {}
        if features and not partial and "features" in group:
            aux = {name: np.asarray(arr[...]) for name, arr in _group(group, "features").arrays()}
        gs = None
        if gaussians and not partial and "gaussians" in group:
            stored = _group(group, "gaussians")
            gs = Gaussians(**{name: np.asarray(_array(stored, name)[...]) for name in _GAUSSIAN_DIMS})
        sizes, names = attrs.get("source_sizes"), attrs.get("source_names")
        scale, offset = attrs.get("source_scale"), attrs.get("source_offset")
        return Prediction(
            depth=get("depth"),
            is_metric=int(attrs.get("is_metric", 0)),
            sky=get("sky"),
            conf=get("conf"),
            extrinsics=get("extrinsics", False),
            intrinsics=get("intrinsics", False),
            processed_images=get("images"),
            gaussians=gs,
            aux=aux,
            scale_factor=attrs.get("scale_factor"),
            ref_view_idx=attrs.get("ref_view_idx"),
            source_sizes=None if sizes is None else np.asarray(sizes)[frames],
            source_scale=None if scale is None else np.asarray(scale, dtype=np.float64)[frames],
            source_offset=None if offset is None else np.asarray(offset, dtype=np.float64)[frames],
            source_names=None if names is None else names[frames],
        )


class FrameArray:
    """A stored per-frame array indexed like a numpy array but read from the store on each access."""

    def __init__(self, array: zarr.Array) -> None:
        self._array = array

    @property
    def shape(self) -> tuple[int, ...]:
        """(frames, ...) as stored."""
        return tuple(self._array.shape)

    @property
    def dtype(self) -> np.dtype:
        """The stored dtype."""
        return self._array.dtype

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        return np.asarray(self._array[key])


def _attrs(node: zarr.Group | zarr.Array) -> dict[str, Any]:
    """A node's attributes as a plain dict (JSON values)."""
    return dict(node.attrs.asdict())


def _array(group: zarr.Group, name: str) -> zarr.Array:
    """The array ``name`` of ``group``; a group where an array belongs means a damaged store."""
    node = group[name]
    if not isinstance(node, zarr.Array):
        raise StoreError(f"{name} in {group.store} is a group where an array belongs; the store is damaged")
    return node


def _group(group: zarr.Group, name: str) -> zarr.Group:
    """The subgroup ``name`` of ``group``; an array where a group belongs means a damaged store."""
    node = group[name]
    if not isinstance(node, zarr.Group):
        raise StoreError(f"{name} in {group.store} is an array where a group belongs; the store is damaged")
    return node


def _frame_arrays(pred: Prediction, frame_index: np.ndarray | None, timestamps: np.ndarray | None) -> dict[str, tuple]:
    """name -> (values or None, dims, dtype, frames per chunk) of every per-frame array of ``pred``."""
    n = len(pred)
    ext = None if pred.extrinsics is None else np.asarray(pred.extrinsics)[:, :3, :4]
    index = np.arange(n) if frame_index is None else np.asarray(frame_index)
    stamps = np.full(n, np.nan) if timestamps is None else np.asarray(timestamps, dtype=np.float64)
    # Small per-frame arrays go in one chunk; image-like ones get one frame per chunk.
    return {
        "images": (pred.processed_images, ["frame", "y", "x", "channel"], None, 1),
        "depth": (pred.depth, ["frame", "y", "x"], None, 1),
        "conf": (pred.conf, ["frame", "y", "x"], None, 1),
        "sky": (pred.sky, ["frame", "y", "x"], None, 1),
        "extrinsics": (ext, ["frame", "ext_row", "ext_col"], np.float32, n),
        "intrinsics": (pred.intrinsics, ["frame", "k_row", "k_col"], np.float32, n),
        "frame": (index.astype(np.int64), ["frame"], None, n),
        "timestamp": (stamps, ["frame"], None, n),
        "source_name": (
            None if pred.source_names is None else np.asarray(pred.source_names, dtype=str),
            ["frame"],
            None,
            n,
        ),
    }


def _put(
    group: zarr.Group, name: str, values: np.ndarray | None, dims: list[str], dtype: Any = None, chunk0: int = 1
) -> None:
    if values is None:
        return
    values = np.asarray(values, dtype=dtype)
    chunks = (max(1, min(chunk0, values.shape[0])),) + values.shape[1:] if values.ndim else ()
    # Text as zarr's variable-length UTF-8 (its fixed-width type has no v3 spec and warns on every write).
    dtype = str if values.dtype.kind == "U" else values.dtype
    array = group.create_array(
        name,
        shape=values.shape,
        dtype=dtype,
        chunks=chunks,
        compressors=_COMPRESSOR,
        dimension_names=dims,
        overwrite=True,
    )
    array[...] = values
