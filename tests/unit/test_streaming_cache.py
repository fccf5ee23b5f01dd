"""The chunk cache a streaming run resumes from: a chunk counts only when finished for exactly its frames, what is
read back is what was written, and discarding works whether or not anything was cached."""

from __future__ import annotations

import numpy as np

from da3core.streaming.chunk_cache import ChunkCache
from da3core.synthetic import GaugePredictor


def test_a_finished_chunk_reads_back_for_its_own_frames_only(open_sequence, tmp_path):
    cache = ChunkCache(str(tmp_path / "scene.zarr.chunks"), "key")
    frames = np.arange(10, 16)
    pred = GaugePredictor(open_sequence)(frames)
    descriptors = np.random.default_rng(0).standard_normal((len(frames), 8)).astype(np.float32)
    assert cache.finished("chunk_0000", frames) is None
    cache.write("chunk_0000", frames, pred, descriptors, {"finished_at": 1.5})
    assert cache.finished("chunk_0000", frames) == {"finished_at": 1.5}
    assert cache.finished("chunk_0000", frames + 1) is None  # planned for other frames: recomputed
    assert ChunkCache(cache.root, "other").finished("chunk_0000", frames) is None  # other settings or input
    back = cache.read("chunk_0000", slice(2, 5))
    np.testing.assert_array_equal(back.depth, pred.depth[2:5])
    np.testing.assert_array_equal(back.extrinsics, pred.extrinsics[2:5])
    np.testing.assert_array_equal(cache.descriptors("chunk_0000", slice(2, 5)), descriptors[2:5])


def test_discarding_removes_the_chunks_and_needs_nothing_cached(open_sequence, tmp_path):
    root = tmp_path / "scene.zarr.chunks"
    ChunkCache(str(root), "never-written").discard()  # a forced first run discards before anything exists
    kept, dropped = ChunkCache(str(root), "kept"), ChunkCache(str(root), "dropped")
    for cache in (kept, dropped):
        cache.write("chunk_0000", np.arange(3), GaugePredictor(open_sequence)(np.arange(3)), None, {})
    assert kept.discard_others() == [str(root / "dropped")]
    assert [p.name for p in root.iterdir()] == ["kept"]
    kept.discard()
    assert not root.exists()  # no empty folder left beside the store


def test_a_discard_cut_short_anywhere_leaves_no_finished_chunk_with_arrays_gone(open_sequence, tmp_path, monkeypatch):
    """Killed at any file deletion (as between two S3 delete batches), every chunk still counted finished reads back
    exactly as written: the markers go first."""
    import os

    frames = [np.arange(0, 3), np.arange(2, 5)]
    preds = [GaugePredictor(open_sequence)(f) for f in frames]
    real_unlink, real_remove = os.unlink, os.remove
    total, n = None, 1
    while total is None or n <= total:
        cache = ChunkCache(str(tmp_path / f"cut{n}" / "scene.zarr.chunks"), "key")
        for i, (f, pred) in enumerate(zip(frames, preds)):
            cache.write(f"chunk_{i:04d}", f, pred, None, {})
        count = 0

        def cut(path, *args, real=real_unlink, at=n, **kwargs):
            nonlocal count
            count += 1
            if count == at:
                raise KeyboardInterrupt  # the process ends here
            return real(path, *args, **kwargs)

        monkeypatch.setattr(os, "unlink", cut)
        monkeypatch.setattr(os, "remove", lambda path, *a, **k: cut(path, *a, real=real_remove, **k))
        try:
            cache.discard()
            total = count  # deletions of a whole discard: every one of them is a place to be cut
        except KeyboardInterrupt:
            pass
        finally:
            monkeypatch.setattr(os, "unlink", real_unlink)
            monkeypatch.setattr(os, "remove", real_remove)
        for i, (f, pred) in enumerate(zip(frames, preds)):
            if cache.finished(f"chunk_{i:04d}", f) is not None:
                back = cache.read(f"chunk_{i:04d}")
                for name in ("depth", "conf", "extrinsics", "intrinsics", "processed_images"):
                    np.testing.assert_array_equal(getattr(back, name), getattr(pred, name), err_msg=f"cut {n}: {name}")
        n += 1
    assert total and total > 20
