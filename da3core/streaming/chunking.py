"""How a long sequence is cut into overlapping chunks, and which chunk supplies each frame of the result."""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np

from da3core.errors import UserError


class StreamingInputError(UserError, ValueError):
    """Streaming parameters or chunk inputs that cannot work; the message names the parameter and the fix."""


def check_chunking(chunk_size: int, overlap: int) -> None:
    """Refuse a chunk size below 2 or an overlap outside 1..chunk_size - 1 (one line naming the parameter)."""
    if chunk_size < 2:
        raise StreamingInputError(f"streaming.chunk_size={chunk_size} is too small; use a chunk size of at least 2")
    if not 0 < overlap < chunk_size:
        raise StreamingInputError(
            f"streaming.overlap={overlap} must be between 1 and chunk_size - 1 = {chunk_size - 1}; "
            "lower the overlap or raise the chunk size"
        )


def plan_chunks(n_frames: int, chunk_size: int, overlap: int) -> list[np.ndarray]:
    """Global frame indices of each chunk: windows of ``chunk_size`` that step by ``chunk_size - overlap``.

    A sequence no longer than ``chunk_size`` is one chunk (one forward pass, as without streaming). The last window
    is shifted back to end on the last frame, so every chunk is full length and shares at least ``overlap`` frames
    with its predecessor; hence any sequence longer than one chunk is long enough for the overlap.
    """
    for name, value in (("n_frames", n_frames), ("chunk_size", chunk_size), ("overlap", overlap)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise StreamingInputError(f"{name} must be a whole number, got {value!r}")
    check_chunking(chunk_size, overlap)
    if n_frames < 1:
        raise StreamingInputError(
            f"the sequence has {n_frames} frames; give at least one frame (check the input and fps)"
        )
    if n_frames <= chunk_size:
        return [np.arange(n_frames)]
    step = chunk_size - overlap
    starts = list(range(0, n_frames - chunk_size, step)) + [n_frames - chunk_size]
    return [np.arange(s, s + chunk_size) for s in starts]


def frame_owner(frames: Sequence[np.ndarray]) -> np.ndarray:
    """The chunk each global frame of the result comes from (-1 for frames no chunk covers).

    Rule: a frame covered by several chunks comes from the chunk where it sits farthest from the chunk's ends
    (the most temporal context on both sides); ties go to the earlier chunk.
    """
    frames = [np.asarray(f) for f in frames]
    n = int(max(f.max() for f in frames)) + 1
    best_margin = np.full(n, -1, dtype=np.int64)
    owner = np.full(n, -1, dtype=np.int64)
    for ci, f in enumerate(frames):
        pos = np.arange(len(f))
        margin = np.minimum(pos, len(f) - 1 - pos)
        better = margin > best_margin[f]
        best_margin[f[better]] = margin[better]
        owner[f[better]] = ci
    return owner


def owned_frames(frames: Sequence[np.ndarray]) -> list[np.ndarray]:
    """For each chunk, the local indices of the frames the stitched result takes from it (see :func:`frame_owner`)."""
    owner = frame_owner(frames)
    return [np.flatnonzero(owner[np.asarray(f)] == ci) for ci, f in enumerate(frames)]


def check_frames(frames: Sequence[np.ndarray], n_chunks: int) -> list[np.ndarray]:
    """Validate chunk frame lists: one per chunk, distinct non-negative ints in increasing order each."""
    if len(frames) != n_chunks or n_chunks == 0:
        raise StreamingInputError(f"got {n_chunks} chunks and {len(frames)} frame lists; pass one frame list per chunk")
    out = []
    for ci, f in enumerate(frames):
        f = np.asarray(f)
        if f.ndim != 1 or len(f) == 0 or not np.issubdtype(f.dtype, np.integer):
            raise StreamingInputError(f"frames[{ci}] must be a non-empty 1-D int array of global frame indices")
        if (f < 0).any() or (np.diff(f) <= 0).any():
            raise StreamingInputError(
                f"frames[{ci}] must be non-negative and strictly increasing; sort the chunk's frames"
            )
        out.append(f.astype(np.int64))
    return out
