"""Long sequences in bounded memory: overlapping chunks, robust Sim(3) alignment, loop closure, stitching.

The flow runs it chunk by chunk: :func:`plan_chunks`, then per neighbour pair :func:`align_chunks`, per chunk
:func:`chunk_anchor`, loop detection (:func:`find_loop_candidates`, :func:`plan_loop_closures`, :func:`loop_link`),
:func:`solve_chunk_transforms` over per-chunk transforms only, and :func:`apply_sim3` to each chunk while writing
the frames :func:`owned_frames` assigns to it. :func:`stitch_chunks` does all of it in memory.
"""

from da3core.streaming.chunking import StreamingInputError, check_chunking, frame_owner, owned_frames, plan_chunks
from da3core.streaming.loops import (
    LoopCandidate,
    LoopPlan,
    descriptor_layer,
    find_loop_candidates,
    frame_descriptors,
    loop_is_revisit,
    loop_link,
    plan_loop_closures,
)
from da3core.streaming.overlap_align import align_chunks, fit_sim3_irls
from da3core.streaming.pose_graph import ChunkLink, chain_transforms, chunk_anchor, solve_chunk_transforms
from da3core.streaming.sim3 import Sim3, apply_sim3
from da3core.streaming.stitch import chunk_transforms, stitch_chunks

__all__ = [
    "ChunkLink",
    "LoopCandidate",
    "LoopPlan",
    "Sim3",
    "StreamingInputError",
    "align_chunks",
    "apply_sim3",
    "chain_transforms",
    "check_chunking",
    "chunk_anchor",
    "chunk_transforms",
    "descriptor_layer",
    "find_loop_candidates",
    "fit_sim3_irls",
    "frame_descriptors",
    "frame_owner",
    "loop_is_revisit",
    "loop_link",
    "owned_frames",
    "plan_chunks",
    "plan_loop_closures",
    "solve_chunk_transforms",
    "stitch_chunks",
]
