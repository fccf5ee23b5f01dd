"""Loop detection from per-frame descriptors (faiss), loop planning over chunks, and loop links from a verification."""

from __future__ import annotations

import numpy as np
import pytest

from da3core.pose_align import align_poses_umeyama
from da3core.streaming import (
    LoopCandidate,
    Sim3,
    StreamingInputError,
    find_loop_candidates,
    loop_link,
    plan_chunks,
    plan_loop_closures,
)
from da3core.synthetic import GaugePredictor


def test_the_revisit_of_the_loop_is_found_and_the_open_path_has_none(loop_sequence, open_sequence):
    found = find_loop_candidates(GaugePredictor(loop_sequence).descriptors(), min_gap=60, min_similarity=0.98)
    assert found, "the loop returns to its first pose; its revisit must be detected"
    n = len(loop_sequence)
    for c in found:  # every candidate is a true revisit: the two ends of the loop, a few frames apart round it
        assert c.frame_b - c.frame_a >= 60 and c.frame_a + n - c.frame_b <= 15
    assert len(found) == 1  # non-maximum suppression keeps one pair for one revisit
    assert find_loop_candidates(GaugePredictor(open_sequence).descriptors(), min_gap=60, min_similarity=0.98) == []


def test_neighbours_in_time_are_excluded_and_suppression_is_two_dimensional():
    # Descriptors on a unit circle: frame i points at angle 2 pi i / 100, so frame i and i + 100 are identical.
    angles = 2 * np.pi * np.arange(200) / 100
    desc = np.stack([np.cos(angles), np.sin(angles)], -1).astype(np.float32)
    given = desc.copy()
    pairs = find_loop_candidates(desc, min_gap=50, min_similarity=0.999, top_k=3, nms_radius=0)
    np.testing.assert_array_equal(desc, given)  # the caller's descriptors are not normalised in place
    assert pairs and all(c.frame_b - c.frame_a >= 50 for c in pairs)
    assert {(c.frame_a, c.frame_b) for c in pairs} >= {(i, i + 100) for i in range(100)}
    assert len(find_loop_candidates(desc, min_gap=50, min_similarity=0.999, top_k=3, nms_radius=10)) < len(pairs) / 5
    with pytest.raises(StreamingInputError, match="min_gap"):
        find_loop_candidates(desc, min_gap=0)


def test_plans_skip_neighbouring_chunks_and_keep_the_best_pair_per_chunk_pair():
    frames = plan_chunks(300, 60, 30)  # chunks start at 0, 30, ..., 240
    candidates = [LoopCandidate(5, 290, 0.95), LoopCandidate(8, 285, 0.99), LoopCandidate(50, 80, 0.999)]
    plans = plan_loop_closures(candidates, frames, half_window=4)
    assert [(p.chunk_a, p.chunk_b, p.similarity) for p in plans] == [(0, 8, 0.99)]
    np.testing.assert_array_equal(plans[0].frames, np.r_[4:13, 281:290])


def test_a_verified_loop_gives_the_exact_link_between_its_chunks(loop_sequence):
    predictor = GaugePredictor(loop_sequence, seed=2)
    frames = plan_chunks(600, 60, 30)
    plan = plan_loop_closures(find_loop_candidates(predictor.descriptors(), min_gap=60, min_similarity=0.98), frames)[0]
    a, b = predictor(frames[plan.chunk_a]), predictor(frames[plan.chunk_b])
    link = loop_link(plan, predictor(plan.frames), a, frames[plan.chunk_a], b, frames[plan.chunk_b], weight=2.0)
    assert (link.i, link.j, link.weight) == (plan.chunk_a, plan.chunk_b, 2.0)
    # Truth without the points: the chunks' gauges seen through the true cameras of every frame of each chunk.
    to_a = Sim3(*align_poses_umeyama(a.extrinsics.astype(np.float64), loop_sequence.extrinsics[frames[plan.chunk_a]]))
    to_b = Sim3(*align_poses_umeyama(b.extrinsics.astype(np.float64), loop_sequence.extrinsics[frames[plan.chunk_b]]))
    np.testing.assert_allclose(link.sim3.matrix(), (to_a @ to_b.inverse()).matrix(), atol=1e-5)
    with pytest.raises(StreamingInputError, match="planned frames"):
        loop_link(plan, a, a, frames[plan.chunk_a], b, frames[plan.chunk_b])
