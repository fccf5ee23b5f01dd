"""Loop closure: revisit candidates from per-frame global descriptors, and chunk links from verified loop pairs.

Detection works on any per-frame feature vector (the model's pooled features, camera tokens, a place-recognition
descriptor): the descriptors' mean over the sequence is removed first (what every frame shares says nothing about
the place, and it would make all frames look alike), then cosine nearest neighbours with faiss, pairs closer in
time than ``min_gap`` frames excluded, and a two-dimensional non-maximum suppression keeping the most similar pair
per neighbourhood of (frame_a, frame_b). Verification infers a short window around both frames together; that
prediction shares frames with the two chunks, so it is aligned to each and yields the chunk-to-chunk Sim(3).

The model's own descriptor (:func:`frame_descriptors`) pools the backbone features of the last block before views
attend to each other (:func:`descriptor_layer`): up to there each frame is processed alone, so a frame's descriptor
does not depend on the chunk it was inferred in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import faiss
import numpy as np

from da3core.geometry import affine_inverse
from da3core.model.presets import get_preset
from da3core.prediction import Prediction
from da3core.streaming.chunking import StreamingInputError, frame_owner
from da3core.streaming.overlap_align import align_chunks
from da3core.streaming.pose_graph import ChunkLink

QUERY_BLOCK = 4096  # queries per faiss search, bounding the neighbour table's memory on long sequences


@dataclass(frozen=True)
class LoopCandidate:
    """Two frames that look alike though far apart in time (frame_a < frame_b), with their cosine similarity."""

    frame_a: int
    frame_b: int
    similarity: float


@dataclass(frozen=True)
class LoopPlan:
    """A loop pair to verify: infer ``frames`` (windows around both places) together; they link the two chunks."""

    chunk_a: int
    chunk_b: int
    frames: np.ndarray  # sorted global frame indices
    similarity: float


def find_loop_candidates(
    descriptors: np.ndarray, min_gap: int, min_similarity: float = 0.85, top_k: int = 5, nms_radius: int = 25
) -> list[LoopCandidate]:
    """Revisit candidates from (N, D) per-frame descriptors, most similar first.

    A pair qualifies when one frame is among the other's ``top_k`` most similar frames outside ``min_gap`` frames
    of it, with cosine similarity >= ``min_similarity``; of pairs within ``nms_radius`` frames of a better pair in
    both coordinates only the better one is kept.
    """
    desc = np.array(descriptors, dtype=np.float32, order="C")  # a copy: faiss normalises it in place
    if desc.ndim != 2 or len(desc) == 0:
        raise StreamingInputError(f"descriptors must be an (N, D) array with N >= 1, got shape {desc.shape}")
    if min_gap < 1 or top_k < 1 or nms_radius < 0:
        raise StreamingInputError(
            f"need min_gap >= 1, top_k >= 1, nms_radius >= 0; got {min_gap}, {top_k}, {nms_radius}"
        )
    n = len(desc)
    desc -= desc.mean(axis=0)
    faiss.normalize_L2(desc)
    index = faiss.IndexFlatIP(desc.shape[1])
    index.add(desc)
    # The temporal neighbours (up to 2 * min_gap - 1 of them, and the frame itself) are the likeliest hits;
    # asking for that many more keeps top_k far neighbours in every row.
    k = min(n, top_k + 2 * min_gap)
    pairs: dict[tuple[int, int], float] = {}
    for start in range(0, n, QUERY_BLOCK):
        sims, idx = index.search(desc[start : start + QUERY_BLOCK], k)
        rows = np.arange(start, start + len(idx))[:, None]
        far = (idx >= 0) & (np.abs(idx - rows) >= min_gap)
        rank = np.cumsum(far, axis=1)
        keep = far & (rank <= top_k) & (sims >= min_similarity)
        for r, j, sim in zip(np.broadcast_to(rows, idx.shape)[keep], idx[keep], sims[keep]):
            key = (int(min(r, j)), int(max(r, j)))
            pairs[key] = max(pairs.get(key, -np.inf), float(sim))
    ranked = sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0]))
    kept: list[LoopCandidate] = []
    for (a, b), sim in ranked:
        if all(abs(a - c.frame_a) > nms_radius or abs(b - c.frame_b) > nms_radius for c in kept):
            kept.append(LoopCandidate(a, b, sim))
    return kept


def descriptor_layer(preset: str) -> int:
    """The backbone block :func:`frame_descriptors` pools for ``preset``: the last one that sees each view alone."""
    spec = get_preset(preset).net
    if spec.alt_start < 1:
        raise StreamingInputError(f"preset {preset} has no camera tokens; loop closure needs an any-view model")
    return spec.alt_start - 1


def frame_descriptors(features: np.ndarray) -> np.ndarray:
    """(S, C) unit global descriptors from (S, h, w, C) patch features: the mean over the patches, normalised."""
    pooled = np.asarray(features, dtype=np.float32).mean(axis=(1, 2))
    return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), np.finfo(np.float32).tiny)


def loop_is_revisit(plan: LoopPlan, loop_prediction: Prediction, max_distance: float = 1.0) -> bool:
    """Whether the verification puts the two places together: some camera of one window within ``max_distance``
    median depths of some camera of the other (frames of one place seen again are taken from nearby)."""
    frames = np.asarray(plan.frames)
    cut = int(np.argmax(np.diff(frames))) + 1 if len(frames) > 1 else 0
    if cut == 0 or frames[cut] - frames[cut - 1] <= 1:
        return True  # one run of consecutive frames: nothing to tell apart
    centres = affine_inverse(np.asarray(loop_prediction.extrinsics, dtype=np.float64)[:, :3])[:, :, 3]
    depth = np.asarray(loop_prediction.depth)
    unit = float(np.median(depth[np.isfinite(depth) & (depth > 0)]))
    gaps = np.linalg.norm(centres[:cut, None] - centres[None, cut:], axis=-1)
    return bool(gaps.min() <= max_distance * unit)


def _window(chunk_frames: np.ndarray, frame: int, half_window: int) -> np.ndarray:
    """Up to 2 * half_window + 1 consecutive frames of the chunk around ``frame``, shifted to stay inside it."""
    pos = int(np.searchsorted(chunk_frames, frame))
    size = min(len(chunk_frames), 2 * half_window + 1)
    start = min(max(pos - half_window, 0), len(chunk_frames) - size)
    return chunk_frames[start : start + size]


def plan_loop_closures(
    candidates: Sequence[LoopCandidate], frames: Sequence[np.ndarray], half_window: int = 10
) -> list[LoopPlan]:
    """The verification inferences for ``candidates``: at most one per pair of non-adjacent chunks (the best one).

    Each frame of a candidate is placed in the chunk that supplies it to the result; candidates within the same or
    neighbouring chunks are dropped (the overlap already links those).
    """
    if half_window < 1:
        raise StreamingInputError(f"half_window={half_window}; use at least 1 so each place has 3 frames")
    frames = [np.asarray(f) for f in frames]
    owner = frame_owner(frames)
    best: dict[tuple[int, int], LoopPlan] = {}
    for c in candidates:
        ca, cb = (int(owner[f]) if f < len(owner) else -1 for f in (c.frame_a, c.frame_b))
        if ca < 0 or cb < 0 or abs(ca - cb) <= 1:
            continue
        if (ca, cb) in best and best[(ca, cb)].similarity >= c.similarity:
            continue
        loop_frames = np.union1d(
            _window(frames[ca], c.frame_a, half_window), _window(frames[cb], c.frame_b, half_window)
        )
        best[(ca, cb)] = LoopPlan(ca, cb, loop_frames, c.similarity)
    return sorted(best.values(), key=lambda p: (p.chunk_a, p.chunk_b))


def loop_link(
    plan: LoopPlan,
    loop_prediction: Prediction,
    chunk_a: Prediction,
    frames_a: np.ndarray,
    chunk_b: Prediction,
    frames_b: np.ndarray,
    weight: float = 1.0,
) -> ChunkLink:
    """The chunk link of a verified loop: ``loop_prediction`` (over ``plan.frames``) aligned to both chunks."""
    if len(loop_prediction) != len(plan.frames):
        raise StreamingInputError(
            f"the loop prediction has {len(loop_prediction)} views for {len(plan.frames)} planned frames; "
            "infer plan.frames"
        )
    a_from_loop = align_chunks(chunk_a, frames_a, loop_prediction, plan.frames)
    b_from_loop = align_chunks(chunk_b, frames_b, loop_prediction, plan.frames)
    return ChunkLink(plan.chunk_a, plan.chunk_b, a_from_loop @ b_from_loop.inverse(), weight)
