"""In-memory stitching of overlapping chunk predictions into one prediction in the first chunk's gauge."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from da3core.prediction import Prediction
from da3core.streaming.chunking import StreamingInputError, check_frames, owned_frames
from da3core.streaming.overlap_align import align_chunks
from da3core.streaming.pose_graph import ChunkLink, chunk_anchor, solve_chunk_transforms
from da3core.streaming.sim3 import Sim3, apply_sim3

# Per-view fields gathered frame by frame from the chunk that owns each frame (when every chunk has them).
_PER_VIEW = (
    "depth",
    "conf",
    "sky",
    "extrinsics",
    "intrinsics",
    "processed_images",
    "source_sizes",
    "source_scale",
    "source_offset",
)


def _check_chunks(chunks: Sequence[Prediction], frames: Sequence[np.ndarray]) -> None:
    shape = chunks[0].depth.shape[1:]
    for ci, (chunk, f) in enumerate(zip(chunks, frames)):
        if chunk.extrinsics is None or chunk.intrinsics is None:
            raise StreamingInputError(
                f"chunk {ci} has no cameras (mono/metric preset); streaming needs an any-view model"
            )
        if not (np.isfinite(chunk.extrinsics).all() and np.isfinite(chunk.intrinsics).all()):
            raise StreamingInputError(f"chunk {ci} has NaN or infinite cameras; no Sim(3) can align it")
        if len(chunk) != len(f):
            raise StreamingInputError(
                f"chunk {ci} has {len(chunk)} views but frames[{ci}] lists {len(f)}; pass one global index per view"
            )
        if chunk.depth.shape[1:] != shape:
            raise StreamingInputError(
                f"chunk {ci} has {chunk.depth.shape[1:]} depth maps, chunk 0 {shape}; infer all "
                "chunks at the same processing resolution"
            )


def chunk_transforms(
    chunks: Sequence[Prediction], frames: Sequence[np.ndarray], loops: Sequence[ChunkLink] | None = None
) -> list[Sim3]:
    """One Sim(3) per chunk into the first chunk's gauge: consecutive chunks aligned on their overlap, loop-closed."""
    sequential = [align_chunks(chunks[i], frames[i], chunks[i + 1], frames[i + 1]) for i in range(len(chunks) - 1)]
    return solve_chunk_transforms(sequential, [chunk_anchor(c) for c in chunks], loops or ())


def stitch_chunks(
    chunks: Sequence[Prediction], frames: Sequence[np.ndarray], loops: Sequence[ChunkLink] | None = None
) -> Prediction:
    """Stitch chunk predictions, each in its own Sim(3) gauge, into one over the sorted union of their frames.

    ``frames[i]`` holds the increasing global frame indices of chunk i's views; consecutive chunks must share
    frames. The result is in chunk 0's gauge with depth and camera translations scaled consistently. A frame in
    several chunks comes from the chunk where it is most central (:func:`frame_owner`). ``loops`` are
    :class:`ChunkLink` loop closures (e.g. from :func:`loop_link`); with them the chunk transforms come from a Sim(3)
    pose graph. Gaussians and aux features are not stitched; one chunk is returned unchanged.
    """
    if len(chunks) == 0:
        raise StreamingInputError("stitch_chunks got no chunks; pass at least one prediction")
    frames = check_frames(frames, len(chunks))
    _check_chunks(chunks, frames)
    if len(chunks) == 1:
        return apply_sim3(chunks[0], Sim3())
    transforms = chunk_transforms(chunks, frames, loops)
    owned = owned_frames(frames)
    parts = [apply_sim3(chunk, t) for chunk, t in zip(chunks, transforms)]
    order = np.argsort(np.concatenate([f[o] for f, o in zip(frames, owned)]), kind="stable")
    fields: dict[str, Any] = {}
    for name in _PER_VIEW:
        if all(getattr(p, name) is not None for p in parts):
            fields[name] = np.concatenate([getattr(p, name)[o] for p, o in zip(parts, owned)])[order]
    if all(p.source_names is not None for p in parts):
        names = [n for p, o in zip(parts, owned) for n in np.asarray(p.source_names, dtype=object)[o]]
        fields["source_names"] = [names[i] for i in order]
    return Prediction(is_metric=chunks[0].is_metric, scale_factor=chunks[0].scale_factor, **fields)
