"""Chunk-level Sim(3) pose graph: sequential overlap links plus loop-closure links, optimised with gtsam.

The variables are the chunks' transforms into the global gauge (the first chunk's). gtsam's Python wrapper has
``Similarity3`` with ``BetweenFactorSimilarity3`` and ``PriorFactorSimilarity3``, so the graph is plain gtsam
factors solved by Levenberg-Marquardt.

Each chunk is first expressed in its own normalised frame (its anchor): origin at the centroid of its camera
centres, unit length its median depth. There an isotropic noise model is meaningful: a rotation error of e rad,
a translation error of e median depths and a log-scale error of e all move the chunk's scene by about e median
depths, and the result no longer depends on the arbitrary origin and scale of each chunk's gauge.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import gtsam
import numpy as np

from da3core.geometry import affine_inverse
from da3core.prediction import Prediction
from da3core.streaming.chunking import StreamingInputError
from da3core.streaming.sim3 import Sim3

PRIOR_SIGMA = 1e-6  # the first chunk is the gauge; the prior pins it (its result is then reset to the exact identity)


@dataclass(frozen=True)
class ChunkLink:
    """A measured Sim(3) taking chunk ``j``'s gauge into chunk ``i``'s (x_i = sim3(x_j)), e.g. from a loop closure.

    ``weight`` is its information relative to a sequential overlap link (1: as trustworthy as one overlap).
    """

    i: int
    j: int
    sim3: Sim3
    weight: float = 1.0


def chunk_anchor(prediction: Prediction) -> Sim3:
    """The chunk's normalising transform: moves its camera centroid to the origin and scales its median depth to 1."""
    if prediction.extrinsics is None:
        raise StreamingInputError("this chunk has no cameras (mono/metric preset); streaming needs an any-view model")
    centres = affine_inverse(np.asarray(prediction.extrinsics, dtype=np.float64)[:, :3])[:, :, 3]
    depth = np.asarray(prediction.depth)
    valid = depth[np.isfinite(depth) & (depth > 0)]
    if len(valid) == 0:
        raise StreamingInputError("a chunk has no positive depth anywhere; check the chunk's input frames")
    unit = float(np.median(valid))
    return Sim3(1.0 / unit, np.eye(3), -centres.mean(0) / unit)


def _to_gtsam(sim: Sim3) -> gtsam.Similarity3:
    # gtsam's Similarity3(R, t, s) maps x -> s (R x + t); ours maps x -> s R x + t.
    return gtsam.Similarity3(gtsam.Rot3(sim.rotation), sim.translation / sim.scale, sim.scale)


def _from_gtsam(sim: gtsam.Similarity3) -> Sim3:
    s = float(sim.scale())
    return Sim3(s, sim.rotation().matrix(), s * np.asarray(sim.translation()))


def chain_transforms(sequential: Sequence[Sim3]) -> list[Sim3]:
    """Chunk -> global transforms by composing the overlap links (``sequential[i]`` takes chunk i+1 into chunk i)."""
    out = [Sim3()]
    for link in sequential:
        out.append(out[-1] @ link)
    return out


def solve_chunk_transforms(
    sequential: Sequence[Sim3], anchors: Sequence[Sim3], loops: Sequence[ChunkLink] = ()
) -> list[Sim3]:
    """One Sim(3) per chunk into the first chunk's gauge: the chained overlap links, loop-closed when ``loops`` given.

    ``sequential[i]`` takes chunk i+1's gauge into chunk i's (from :func:`align_chunks`); ``anchors[i]`` is
    :func:`chunk_anchor` of chunk i. Only per-chunk transforms go in and out: memory does not grow with frames.
    """
    n_chunks = len(sequential) + 1
    if len(anchors) != n_chunks:
        raise StreamingInputError(f"got {len(anchors)} anchors for {n_chunks} chunks; pass one chunk_anchor per chunk")
    chained = chain_transforms(sequential)
    if not loops:
        return chained
    for link in loops:
        if not (0 <= link.i < n_chunks and 0 <= link.j < n_chunks) or link.i == link.j or not link.weight > 0:
            raise StreamingInputError(
                f"loop link ({link.i}, {link.j}, weight {link.weight}) needs two different chunks of 0..{n_chunks - 1} "
                "and a positive weight"
            )
    # Variables: normalised chunk frame -> global, T'_i = T_i A_i^-1; a link x_i = S(x_j) becomes A_i S A_j^-1.
    graph = gtsam.NonlinearFactorGraph()
    initial = gtsam.Values()
    for ci, (t, a) in enumerate(zip(chained, anchors)):
        initial.insert(ci, _to_gtsam(t @ a.inverse()))
    graph.add(
        gtsam.PriorFactorSimilarity3(
            0, _to_gtsam(anchors[0].inverse()), gtsam.noiseModel.Isotropic.Sigma(7, PRIOR_SIGMA)
        )
    )
    edges = [ChunkLink(i, i + 1, s) for i, s in enumerate(sequential)] + list(loops)
    for e in edges:
        measured = _to_gtsam(anchors[e.i] @ e.sim3 @ anchors[e.j].inverse())
        noise = gtsam.noiseModel.Isotropic.Sigma(7, 1.0 / np.sqrt(e.weight))
        graph.add(gtsam.BetweenFactorSimilarity3(e.i, e.j, measured, noise))
    params = gtsam.LevenbergMarquardtParams()
    params.setMaxIterations(100)
    params.setRelativeErrorTol(1e-12)
    params.setAbsoluteErrorTol(1e-15)
    result = gtsam.LevenbergMarquardtOptimizer(graph, initial, params).optimize()
    solved = [_from_gtsam(result.atSimilarity3(ci)) @ anchors[ci] for ci in range(n_chunks)]
    first_inv = solved[0].inverse()
    return [Sim3()] + [first_inv @ t for t in solved[1:]]
