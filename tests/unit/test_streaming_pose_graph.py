"""The chunk Sim(3) pose graph (gtsam): exact on consistent links, the least-squares answer on inconsistent ones."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from da3core.streaming import ChunkLink, Sim3, StreamingInputError, chain_transforms, solve_chunk_transforms


def _random_sim3(rng: np.random.Generator, spread: float = 3.0) -> Sim3:
    return Sim3(np.exp(rng.uniform(-0.7, 0.7)), Rotation.random(random_state=rng).as_matrix(), rng.normal(0, spread, 3))


def _anchor(rng: np.random.Generator) -> Sim3:
    return Sim3(1 / rng.uniform(0.5, 3.0), np.eye(3), rng.normal(0, 2.0, 3))


def _assert_close(a: Sim3, b: Sim3, atol: float) -> None:
    np.testing.assert_allclose(a.matrix(), b.matrix(), atol=atol)


def test_consistent_links_and_loops_give_back_the_true_chunk_transforms():
    rng = np.random.default_rng(0)
    truth = [Sim3()] + [_random_sim3(rng) for _ in range(7)]  # chunk -> global
    sequential = [truth[i].inverse() @ truth[i + 1] for i in range(7)]
    loops = [ChunkLink(i, j, truth[i].inverse() @ truth[j], weight=w) for i, j, w in [(0, 5, 1.0), (2, 7, 3.0)]]
    anchors = [_anchor(rng) for _ in range(8)]
    solved = solve_chunk_transforms(sequential, anchors, loops)
    assert solved[0].is_identity()
    for got, want in zip(solved, truth):
        _assert_close(got, want, 1e-8)
    for got, want in zip(solve_chunk_transforms(sequential, anchors), truth):  # no loops: the chain itself
        _assert_close(got, want, 1e-10)


def _axis_sim3(log_scale: float, yaw: float) -> Sim3:
    return Sim3(np.exp(log_scale), Rotation.from_rotvec([0.0, 0.0, yaw]).as_matrix(), np.zeros(3))


def test_an_inconsistent_loop_is_resolved_by_weighted_least_squares():
    # Scalings and rotations about one axis through the origin commute, so the Sim(3) graph reduces to linear least
    # squares on (log scale, yaw) with the links' weights: x1 - x0 = a, x2 - x1 = b, x2 - x0 = c (weight w), x0 = 0.
    a, b, c, w = np.array([0.3, 0.2]), np.array([0.1, -0.4]), np.array([0.55, -0.05]), 2.0
    design = np.array([[1.0, 0.0], [-1.0, 1.0], [0.0, 1.0]]) * np.sqrt([1.0, 1.0, w])[:, None]
    expected = np.linalg.lstsq(design, np.stack([a, b, c]) * np.sqrt([1.0, 1.0, w])[:, None], rcond=None)[0]
    anchors = [Sim3()] * 3  # origin-centred unit frames keep the reduction exact
    solved = solve_chunk_transforms([_axis_sim3(*a), _axis_sim3(*b)], anchors, [ChunkLink(0, 2, _axis_sim3(*c), w)])
    for got, (log_s, yaw) in zip(solved[1:], expected):
        np.testing.assert_allclose(np.log(got.scale), log_s, atol=1e-9)
        np.testing.assert_allclose(Rotation.from_matrix(got.rotation).as_rotvec(), [0.0, 0.0, yaw], atol=1e-9)
        np.testing.assert_allclose(got.translation, 0.0, atol=1e-9)


def test_a_loop_link_pulls_a_drifting_chain_back_towards_the_truth():
    rng = np.random.default_rng(1)
    truth = [Sim3()] + [_random_sim3(rng) for _ in range(10)]
    drift = _axis_sim3(0.02, 0.01)  # every overlap link a little off, the same way
    sequential = [truth[i].inverse() @ truth[i + 1] @ drift for i in range(10)]
    anchors = [Sim3()] * 11
    chained = chain_transforms(sequential)
    closed = solve_chunk_transforms(sequential, anchors, [ChunkLink(0, 10, truth[10], weight=1.0)])

    def error(ts):
        return max(np.abs(np.log(t.scale / u.scale)) for t, u in zip(ts, truth))

    assert error(closed) < 0.5 * error(chained)


def test_bad_links_are_refused():
    with pytest.raises(StreamingInputError, match="anchors"):
        solve_chunk_transforms([Sim3()], [Sim3()])
    with pytest.raises(StreamingInputError, match="two different chunks"):
        solve_chunk_transforms([Sim3()], [Sim3(), Sim3()], [ChunkLink(0, 5, Sim3())])
    with pytest.raises(StreamingInputError, match="positive weight"):
        solve_chunk_transforms([Sim3()], [Sim3(), Sim3()], [ChunkLink(0, 1, Sim3(), weight=0.0)])
