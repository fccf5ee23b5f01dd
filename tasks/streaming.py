"""Prefect tasks of a streaming reconstruction: one chunk's inference (cached), the alignment of two neighbours, the
verification of a loop, and the writing of a chunk into the scene store.

Tasks hand each other chunk names and small records (frames, anchors, Sim(3)s), never depth maps: predictions go
through the chunk cache (:mod:`da3core.streaming.chunk_cache`), so the tasks can run on Dask workers, and a chunk
finished before a kill is read back instead of recomputed.
"""

from __future__ import annotations

import functools
import os
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from da3core.io.inputs import InputError, SceneInput, load_views
from da3core.prediction import Prediction
from da3core.store import SceneStore
from da3core.streaming import (
    ChunkLink,
    LoopPlan,
    Sim3,
    align_chunks,
    apply_sim3,
    chunk_anchor,
    descriptor_layer,
    frame_descriptors,
    loop_is_revisit,
    loop_link,
)
from da3core.streaming.chunk_cache import ChunkCache
from tasks.model_cache import get_model

if TYPE_CHECKING:  # the schemas live with the flows' config; tasks only read them
    from flows.schema import ReconstructConfig


@dataclass
class ChunkRecord:
    """A finished chunk as tasks pass it on: where it is cached, which views it covers, its anchor, how it went."""

    name: str
    frames: np.ndarray  # the scene's view positions it covers, increasing
    anchor: Sim3  # da3core.streaming.chunk_anchor of its prediction
    info: dict[str, Any]  # finished_at, seconds, worker, ref_view_idx, model; reused: read back from the cache


def span(positions: np.ndarray) -> slice:
    """The slice from the first to the last of increasing ``positions`` (contiguous reads from a chunk store)."""
    return slice(int(positions[0]), int(positions[-1]) + 1)


@task(name="chunk", task_run_name="chunk-{name}-{chunk}", cache_policy=NO_CACHE)
def infer_chunk(
    name: str,
    chunk: str,
    frames: np.ndarray,
    scene: SceneInput,
    cache: ChunkCache,
    cfg: ReconstructConfig,
    descriptors: bool,
) -> ChunkRecord:
    """Infer the scene's views ``frames`` together (decoding only those) into the cache, unless already there."""
    logger = get_run_logger()
    frames = np.asarray(frames, dtype=np.int64)
    record = cache.finished(chunk, frames)
    if record is not None:
        logger.info(
            "%s %s: views %d-%d already inferred (%s); reused",
            name,
            chunk,
            frames[0],
            frames[-1],
            time.strftime("%H:%M:%S", time.localtime(record["finished_at"])),
        )
        return ChunkRecord(chunk, frames, Sim3.from_matrix(np.asarray(record["anchor"])), {**record, "reused": True})
    started = time.perf_counter()
    views = load_views(scene, frames)
    decoded = time.perf_counter()
    pred, desc, model = predict(views, frames, len(scene), cfg, descriptors)
    inferred = time.perf_counter()
    pred.source_names = [scene.names[i] for i in frames]
    anchor = chunk_anchor(pred)
    record = {
        "finished_at": time.time(),
        "decode_seconds": round(decoded - started, 4),
        "seconds": round(inferred - decoded, 4),
        "ref_view_idx": pred.ref_view_idx,
        "anchor": anchor.matrix().tolist(),
        "model": model,
        "worker": {"host": socket.gethostname(), "pid": os.getpid()},
    }
    cache.write(chunk, frames, pred, desc, record)
    logger.info(
        "%s %s: %d views (%d-%d) in %.2fs (decode %.2fs)",
        name,
        chunk,
        len(frames),
        frames[0],
        frames[-1],
        inferred - decoded,
        decoded - started,
    )
    return ChunkRecord(chunk, frames, anchor, {**record, "reused": False})


def predict(
    views: list[np.ndarray], frames: np.ndarray, n_views: int, cfg: ReconstructConfig, descriptors: bool
) -> tuple[Prediction, np.ndarray | None, dict[str, Any]]:
    """(prediction, per-frame descriptors or None, what the store records about the model) for some views."""
    if cfg.streaming.predictor != "model":
        return _synthetic(views, frames, n_views, cfg)
    loaded = get_model(cfg.model)
    layer = descriptor_layer(cfg.model.preset) if descriptors else None
    with loaded.lock:
        # The call the normal mode makes for a scene without input poses; the descriptor layer only adds an output.
        result = loaded.model.infer(
            views,
            infer_gs=False,
            use_ray_pose=cfg.pose.use_ray_pose,
            ref_view_strategy=cfg.ref_view_strategy.value,
            process_res=cfg.processing.process_res,
            process_res_method=cfg.processing.method.value,
            export_feat_layers=None if layer is None else [layer],
        )
    pred = result.prediction
    desc = None if layer is None else frame_descriptors(pred.aux.pop(f"feat_layer_{layer}"))
    return pred, desc, loaded.info


@functools.lru_cache(maxsize=2)
def _gauge_predictor(cfg_key: tuple, n_views: int, height: int, width: int) -> tuple[Any, np.ndarray]:
    from da3core.synthetic import GaugePredictor, make_sequence

    path, seed, drift, pose_noise, depth_noise = cfg_key
    predictor = GaugePredictor(
        make_sequence(path, n_views, width=width, height=height), seed, drift, pose_noise, depth_noise
    )
    return predictor, predictor.descriptors()


def _synthetic(
    views: list[np.ndarray], frames: np.ndarray, n_views: int, cfg: ReconstructConfig
) -> tuple[Prediction, np.ndarray, dict[str, Any]]:
    """The test predictor: exact depth and cameras of the synthetic path the scene's views were rendered along."""
    path = cfg.streaming.predictor.split(":", 1)[1]
    noise = cfg.streaming.synthetic
    height, width = views[0].shape[:2]
    predictor, desc = _gauge_predictor(
        (path, noise.seed, noise.drift, noise.pose_noise, noise.depth_noise), n_views, height, width
    )
    for view, frame in zip(views, frames):  # the flow must hand over exactly the views it planned
        if not np.array_equal(view, predictor.sequence.images[frame]):
            raise InputError(
                f"view {frame} is not frame {frame} of make_sequence('{path}', {n_views}) at {width}x"
                f"{height}; streaming.predictor={cfg.streaming.predictor} needs that sequence as PNGs"
            )
    model = {
        "preset": cfg.streaming.predictor,
        "weights": "synthetic ground truth",
        "note": "test predictor (da3core.synthetic.GaugePredictor): not a model",
    }
    return predictor(frames), desc[frames], model


@task(name="align", task_run_name="align-{name}", cache_policy=NO_CACHE)
def align_pair(name: str, cache: ChunkCache, a: ChunkRecord, b: ChunkRecord) -> Sim3:
    """The Sim(3) taking chunk b into chunk a, from the views they share (only those are read)."""
    _, in_a, in_b = np.intersect1d(a.frames, b.frames, return_indices=True)
    va, vb = span(np.sort(in_a)), span(np.sort(in_b))
    sim = align_chunks(cache.read(a.name, va), a.frames[va], cache.read(b.name, vb), b.frames[vb])
    get_run_logger().info("%s: %s -> %s scale %.4f", name, b.name, a.name, sim.scale)
    return sim


@task(name="loop", task_run_name="loop-{name}", cache_policy=NO_CACHE)
def link_loop(
    name: str, cache: ChunkCache, plan: LoopPlan, loop: ChunkRecord, a: ChunkRecord, b: ChunkRecord
) -> ChunkLink | None:
    """The link a verified loop gives between two chunks; None when the verification does not put them together."""
    logger = get_run_logger()
    verification = cache.read(loop.name)
    if not loop_is_revisit(plan, verification):
        logger.info("%s %s: the verification does not bring the two places together; not a loop", name, loop.name)
        return None
    in_a, in_b = (span(np.flatnonzero(np.isin(c.frames, plan.frames))) for c in (a, b))
    link = loop_link(
        plan, verification, cache.read(a.name, in_a), a.frames[in_a], cache.read(b.name, in_b), b.frames[in_b]
    )
    logger.info(
        "%s %s: chunks %d and %d linked (similarity %.3f)", name, loop.name, plan.chunk_a, plan.chunk_b, plan.similarity
    )
    return link


@task(name="write-chunk", task_run_name="write-{name}", cache_policy=NO_CACHE)
def write_chunk(
    name: str,
    cache: ChunkCache,
    record: ChunkRecord,
    owned: slice,
    transform: Sim3,
    scene: SceneInput,
    store: SceneStore,
    first: bool,
) -> np.ndarray | None:
    """Move the views a chunk supplies into the global frame (depth scaled with the cameras) and append them to the
    store (the first chunk begins it); returns their source sizes."""
    part = apply_sim3(cache.read(record.name, owned), transform)
    views = record.frames[owned]
    index = views if scene.frame_indices is None else np.asarray(scene.frame_indices)[views]
    stamps = None if scene.timestamps is None else np.asarray(scene.timestamps)[views]
    if first:
        store.write_prediction(part, frame_index=index, timestamps=stamps)
    else:
        store.append_frames(part, frame_index=index, timestamps=stamps)
    get_run_logger().info("%s: wrote views %d-%d from %s", name, views[0], views[-1], record.name)
    return part.source_sizes
