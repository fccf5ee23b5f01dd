"""stitch_chunks end to end on 600-frame synthetic paths through the gauge predictor; ATE measured with evo."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.spatial.transform import Rotation
from trajectory_error import ate_rmse

from da3core.streaming import (
    Sim3,
    StreamingInputError,
    apply_sim3,
    find_loop_candidates,
    loop_link,
    plan_chunks,
    plan_loop_closures,
    stitch_chunks,
)
from da3core.synthetic import GaugePredictor

NOISE = dict(drift=1e-3, pose_noise=2e-3, depth_noise=0.01)


def _stitch(predictor, n_frames, chunk_size=60, overlap=30, loop_closure=False):
    frames = plan_chunks(n_frames, chunk_size, overlap)
    chunks = [predictor(f) for f in frames]
    links = None
    if loop_closure:
        candidates = find_loop_candidates(predictor.descriptors(), min_gap=chunk_size, min_similarity=0.98)
        plans = plan_loop_closures(candidates, frames)
        assert plans, "the loop's revisit must yield a loop closure"
        links = [
            loop_link(
                p, predictor(p.frames), chunks[p.chunk_a], frames[p.chunk_a], chunks[p.chunk_b], frames[p.chunk_b]
            )
            for p in plans
        ]
    return stitch_chunks(chunks, frames, links)


@pytest.mark.parametrize("path", ["loop", "open"])
def test_noise_free_stitch_recovers_the_trajectory_and_consistent_depth(path, loop_sequence, open_sequence):
    seq = loop_sequence if path == "loop" else open_sequence
    out = _stitch(GaugePredictor(seq, seed=7), len(seq))
    assert len(out) == len(seq)
    ate, length, scale = ate_rmse(seq.extrinsics, out.extrinsics)
    assert ate <= 1e-4 * length, f"ATE {ate:.2e} over a {length:.1f} m path"
    # Depth carries the same scale as the camera translations: scaled by evo's factor it is the true depth.
    np.testing.assert_allclose(out.depth * scale, seq.depth, rtol=1e-4)
    np.testing.assert_array_equal(out.processed_images, seq.images)


def test_loop_closure_at_least_halves_the_drift_on_the_loop(loop_sequence):
    predictor = GaugePredictor(loop_sequence, seed=3, **NOISE)
    ate_open, length, _ = ate_rmse(loop_sequence.extrinsics, _stitch(predictor, 600).extrinsics)
    ate_closed, _, _ = ate_rmse(loop_sequence.extrinsics, _stitch(predictor, 600, loop_closure=True).extrinsics)
    assert ate_open > 1e-3 * length  # the noise really drifts the chain
    assert ate_closed <= 0.5 * ate_open, f"ATE {ate_open:.3f} m without loop closure, {ate_closed:.3f} m with it"


def test_the_loop_closed_result_does_not_depend_on_the_chunks_gauges(loop_sequence):
    predictor = GaugePredictor(loop_sequence, seed=5, **NOISE)
    frames = plan_chunks(600, 60, 30)
    chunks = [predictor(f) for f in frames]
    plans = plan_loop_closures(find_loop_candidates(predictor.descriptors(), min_gap=60, min_similarity=0.98), frames)
    loop_preds = [predictor(p.frames) for p in plans]

    def closed(cs):
        links = [
            loop_link(p, lp, cs[p.chunk_a], frames[p.chunk_a], cs[p.chunk_b], frames[p.chunk_b])
            for p, lp in zip(plans, loop_preds)
        ]
        return stitch_chunks(cs, frames, links)

    rng = np.random.default_rng(0)
    regauged = [
        apply_sim3(
            c, Sim3(np.exp(rng.uniform(-2, 2)), Rotation.random(random_state=rng).as_matrix(), rng.normal(0, 50, 3))
        )
        for c in chunks
    ]
    base, moved = closed(chunks), closed(regauged)
    ate, length, _ = ate_rmse(base.extrinsics, moved.extrinsics)
    assert ate <= 1e-5 * length  # equal up to chunk 0's new gauge, which evo's alignment removes
    assert ate_rmse(loop_sequence.extrinsics, base.extrinsics)[0] > 1e-3 * length  # with noise: not trivially equal


def test_a_chunk_longer_than_the_sequence_gives_the_single_prediction_unchanged(open_sequence):
    predictor = GaugePredictor(open_sequence, seed=1)
    frames = plan_chunks(50, 60, 30)
    single = predictor(np.arange(50))
    out = stitch_chunks([predictor(f) for f in frames], frames)
    for field in dataclasses.fields(single):
        got, want = getattr(out, field.name), getattr(single, field.name)
        assert np.array_equal(got, want) if isinstance(want, np.ndarray) else got == want, field.name


def test_bad_chunk_inputs_are_refused_with_one_line(open_sequence):
    predictor = GaugePredictor(open_sequence, seed=1)
    a, b = predictor(np.arange(0, 10)), predictor(np.arange(5, 15))
    cases = [
        (([a, b], [np.arange(0, 10)]), "one frame list per chunk"),
        (([a, b], [np.arange(0, 10), np.arange(5, 14)]), "one global index per view"),
        (([a, b], [np.arange(0, 10), np.arange(5, 15)[::-1]]), "strictly increasing"),
        (([a, b], [np.arange(0, 10), np.arange(10, 20)]), "share no frame"),
        (([a, dataclasses.replace(b, extrinsics=None)], [np.arange(0, 10), np.arange(5, 15)]), "no cameras"),
        (([a, dataclasses.replace(b, extrinsics=b.extrinsics * np.nan)], [np.arange(0, 10), np.arange(5, 15)]), "NaN"),
        (([], []), "no chunks"),
    ]
    for args, message in cases:
        with pytest.raises(StreamingInputError, match=message) as err:
            stitch_chunks(*args)
        assert "\n" not in str(err.value)
