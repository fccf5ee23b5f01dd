"""Per-chunk predictions of a streaming run, kept beside the scene store so that a killed run resumes where it stopped.

Layout: ``<root>/<key>/<name>.zarr``, one scene store per chunk (or loop-verification window); ``key`` names the
inference settings and the input the chunks belong to, so a cache is never read for other settings or other files.
A chunk counts as finished only when its store carries the completion marker for its own frames, which is written
after every array: a chunk killed half-written is recomputed, never read. This works the same on S3, where a
marker is one PUT of the root ``zarr.json``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import fsspec
import fsspec.implementations.local
import numpy as np

from da3core.io.storage import join_url
from da3core.prediction import Prediction
from da3core.store import SceneStore


def _frames_hash(key: str, frames: np.ndarray) -> str:
    """What a finished chunk's marker certifies: this cache key and exactly these global frames."""
    digest = hashlib.sha256(key.encode() + np.asarray(frames, dtype=np.int64).tobytes())
    return digest.hexdigest()[:16]


@dataclass
class ChunkCache:
    """The chunk stores of one streaming run (``root`` + ``key``); cheap to pass between processes."""

    root: str
    key: str
    storage_options: dict[str, Any] = field(default_factory=dict)

    def store(self, name: str) -> SceneStore:
        """The scene store holding chunk ``name``."""
        return SceneStore(join_url(self.root, self.key, f"{name}.zarr"), self.storage_options)

    def finished(self, name: str, frames: np.ndarray) -> dict[str, Any] | None:
        """The record of chunk ``name`` if it is finished for exactly ``frames``, else None."""
        store = self.store(name)
        try:
            if not store.is_complete(_frames_hash(self.key, frames)):
                return None
            return store.attrs()["chunk"]
        except Exception:  # a root killed mid-write is unreadable in backend-specific ways: simply not finished
            return None

    def write(
        self,
        name: str,
        frames: np.ndarray,
        prediction: Prediction,
        descriptors: np.ndarray | None,
        record: dict[str, Any],
    ) -> None:
        """Store a chunk's prediction (views = ``frames``), its per-frame descriptors and ``record``; marker last."""
        store = self.store(name)
        store.reset({"chunk": record})  # also removes what a killed attempt left
        store.write_prediction(prediction, frame_index=np.asarray(frames))
        if descriptors is not None:
            store.write_array(
                "descriptors", np.asarray(descriptors, dtype=np.float32), ["frame", "channel"], chunk0=len(frames)
            )
        store.mark_complete(_frames_hash(self.key, frames))

    def read(self, name: str, views: slice = slice(None)) -> Prediction:
        """Chunk ``name``'s prediction, or only its ``views`` (positions within the chunk)."""
        return self.store(name).read_prediction(features=False, gaussians=False, frames=views)

    def descriptors(self, name: str, views: slice = slice(None)) -> np.ndarray:
        """(V, D) per-frame descriptors of chunk ``name``'s ``views``."""
        return self.store(name).read_array("descriptors")[views]

    def discard(self) -> None:
        """Delete this run's chunks (its result is in the scene store, or it will not be resumed)."""
        fs, path = fsspec.core.url_to_fs(join_url(self.root, self.key), **self.storage_options)
        if fs.exists(path):
            _delete_unmarked_first(fs, path)
        root = path.rsplit("/", 1)[0]
        if isinstance(fs, fsspec.implementations.local.LocalFileSystem) and fs.exists(root) and not fs.ls(root):
            fs.rmdir(root)  # object stores have no empty folders to leave behind

    def discard_others(self) -> list[str]:
        """Delete the chunks of other keys (runs of other settings or inputs that will not be resumed)."""
        fs, root = fsspec.core.url_to_fs(self.root, **self.storage_options)
        try:
            entries = fs.ls(root, detail=False, refresh=True)
        except (FileNotFoundError, NotADirectoryError):
            return []
        others = [e for e in entries if e.rstrip("/").rsplit("/", 1)[-1] != self.key]
        for entry in others:
            _delete_unmarked_first(fs, entry)
        return others


def _delete_unmarked_first(fs: Any, path: str) -> None:
    """Delete a cache folder, every chunk's root ``zarr.json`` (its marker) first: a deletion cut short (a kill, an
    S3 batch of 1000 keys at a time) leaves chunks that are whole or unmarked, never marked with arrays gone."""
    roots = [f"{store.rstrip('/')}/zarr.json" for store in fs.glob(f"{path.rstrip('/')}/*.zarr")]
    present = [root for root in roots if fs.exists(root)]
    if present:
        fs.rm(present)
    fs.rm(path, recursive=True)
