"""Chunk planning and frame ownership: coverage, overlap, the one-chunk fallback and the one-line refusals."""

from __future__ import annotations

import numpy as np
import pytest

from da3core.streaming import StreamingInputError, frame_owner, owned_frames, plan_chunks


@pytest.mark.parametrize(
    "n_frames, chunk_size, overlap",
    [(600, 60, 30), (601, 60, 30), (61, 60, 30), (100, 7, 6), (1000, 120, 60), (10, 2, 1)],
)
def test_plan_covers_every_frame_with_full_chunks_that_overlap(n_frames, chunk_size, overlap):
    chunks = plan_chunks(n_frames, chunk_size, overlap)
    assert all(len(c) == chunk_size and (np.diff(c) == 1).all() for c in chunks)
    np.testing.assert_array_equal(np.unique(np.concatenate(chunks)), np.arange(n_frames))
    for a, b in zip(chunks, chunks[1:]):
        assert len(np.intersect1d(a, b)) >= overlap
        assert b[0] > a[0]
    # One chunk more than needed would be waste: all but the last advance by exactly chunk_size - overlap.
    assert all(b[0] - a[0] == chunk_size - overlap for a, b in zip(chunks[:-2], chunks[1:-1]))


@pytest.mark.parametrize("n_frames", [1, 5, 60])
def test_a_chunk_at_least_as_long_as_the_sequence_is_one_forward_pass(n_frames):
    chunks = plan_chunks(n_frames, 60, 30)
    assert len(chunks) == 1
    np.testing.assert_array_equal(chunks[0], np.arange(n_frames))


@pytest.mark.parametrize(
    "args, names",
    [
        ((100, 1, 0), "chunk_size=1"),
        ((100, 30, 30), "overlap=30"),
        ((100, 30, 45), "overlap=45"),
        ((100, 30, 0), "overlap=0"),
        ((0, 30, 10), "0 frames"),
        ((100.0, 30, 10), "n_frames must be a whole number, got 100.0"),
        ((100, 30, 10.5), "overlap must be a whole number, got 10.5"),
    ],
)
def test_bad_parameters_are_refused_with_one_line_naming_them(args, names):
    with pytest.raises(StreamingInputError) as err:
        plan_chunks(*args)
    message = str(err.value)
    assert names in message and "\n" not in message
    assert isinstance(err.value, ValueError)


def test_every_frame_comes_from_the_chunk_where_it_is_most_central():
    frames = plan_chunks(200, 60, 30)
    owned = owned_frames(frames)
    taken = np.concatenate([f[o] for f, o in zip(frames, owned)])
    np.testing.assert_array_equal(np.sort(taken), np.arange(200))  # each frame exactly once
    owner = frame_owner(frames)
    for g in range(200):
        margins = [min(np.searchsorted(f, g), len(f) - 1 - np.searchsorted(f, g)) if g in f else -1 for f in frames]
        best = max(margins)
        assert owner[g] == margins.index(best)  # the most central, the earlier chunk on ties
    # Frames 30..59 are shared by chunks 0 and 1: the first half of the overlap stays with chunk 0.
    assert (owner[30:45] == 0).all() and (owner[45:60] == 1).all()
