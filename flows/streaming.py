"""Streaming mode of the reconstruct flow (``streaming.enabled=true``): a long video or image folder in overlapping
chunks, written into the same one scene store in one global frame.

Chunks are Prefect tasks submitted together, so ``runner=dask`` spreads their inference over workers; the
alignment of two neighbours is submitted with them and runs as soon as both are done. Then loop closure
(descriptors of every frame, revisits verified by inferring the pair), one Sim(3) per chunk from the gtsam pose
graph, and the chunks are appended to the staged store in order. Every chunk's prediction goes through a cache
beside the store (``scene.zarr.chunks/<key>/``), so a killed run resumes without recomputing finished chunks;
the cache is deleted once the result is in place.
"""

# Annotations stay objects (no `from __future__ import annotations`): the subflow's parameters are read from them.

import time
from pathlib import Path
from typing import Any

import numpy as np
from prefect import flow, get_run_logger
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from da3core.io.inputs import InputError, SceneInput, input_identity
from da3core.store import SceneStore
from da3core.streaming import (
    ChunkLink,
    find_loop_candidates,
    owned_frames,
    plan_chunks,
    plan_loop_closures,
    solve_chunk_transforms,
)
from da3core.streaming.chunk_cache import ChunkCache
from flows.config import BatchConfig, ReconstructConfig, digest
from flows.progress import report
from flows.runners import task_runner
from tasks.reconstruction import package_versions
from tasks.streaming import ChunkRecord, align_pair, infer_chunk, link_loop, span, write_chunk

CACHE_SUFFIX = ".chunks"  # <store>.chunks/<key>/: not a .tmp-/.old- sibling, so discard_leftovers keeps it


def chunk_cache(store: SceneStore, inference_hash: str, scene: SceneInput) -> ChunkCache:
    """The chunk cache of this inference of this input, beside ``store``."""
    key = digest({"inference": inference_hash, "input": input_identity(scene.manifest())})
    return ChunkCache(store.url + CACHE_SUFFIX, key, store.storage_options)


def stream_inference(
    name: str, scene: SceneInput, staged: SceneStore, cfg: ReconstructConfig, attrs: dict[str, Any], cache: ChunkCache
) -> None:
    """Infer a long scene chunk by chunk into ``staged`` (a store being built), resuming from ``cache``."""
    if scene.kind == "colmap":
        raise InputError(
            f"{scene.source} is a COLMAP dataset: its views already have poses; reconstruct it without "
            "streaming (streaming.enabled=false)"
        )
    if len(scene) <= cfg.streaming.overlap:
        raise InputError(
            f"{name} has {len(scene)} views, no more than streaming.overlap={cfg.streaming.overlap}; "
            "sample more views (input.fps, input.max_frames) or lower the overlap"
        )
    _check_one_size(scene, cfg)
    for other in cache.discard_others():
        get_run_logger().info("removed %s, chunks of a run with other settings or input", other)
    if cfg.force:  # force means recompute: the chunks a killed run finished too, not only the store
        cache.discard()
    # In a batch the scenes are what the runner spreads; a streaming scene's chunks then run in turn on its worker.
    runner: TaskRunner[Any] = ThreadPoolTaskRunner(max_workers=1) if isinstance(cfg, BatchConfig) else task_runner(cfg)
    run_chunks.with_options(task_runner=runner)(name, scene, staged, cfg, attrs, cache)


def _check_one_size(scene: SceneInput, cfg: ReconstructConfig) -> None:
    """Refuse, before any chunk runs, images that process to different sizes: one forward pass crops them to the
    least, but the chunks of a stream would each crop to their own and cannot be stitched."""
    if scene.kind != "images":
        return
    from PIL import Image

    from da3core.preprocess import processed_size

    sizes: dict[tuple[int, int], list[str]] = {}
    for path in scene.paths:
        with Image.open(path) as image:
            size = processed_size(image.height, image.width, cfg.processing.process_res, cfg.processing.method.value)
        sizes.setdefault(size, []).append(Path(path).name)
    if len(sizes) > 1:
        (common, most), (other, names) = sorted(sizes.items(), key=lambda kv: -len(kv[1]))[:2]
        raise InputError(
            f"streaming needs views of one size: {len(most)} of {len(scene)} process to {common[1]}x{common[0]} "
            f"but {names[0]} (and {len(names) - 1} more) to {other[1]}x{other[0]}; give images of one size and "
            "aspect ratio, or turn streaming off (one forward pass crops them to a common size)"
        )


@flow(name="reconstruct-chunks", log_prints=True, validate_parameters=False)
def run_chunks(
    name: str, scene: SceneInput, store: SceneStore, cfg: ReconstructConfig, attrs: dict[str, Any], cache: ChunkCache
) -> None:
    """Submit every chunk and neighbour alignment to this flow's task runner, close loops, write the chunks."""
    logger = get_run_logger()
    started = time.perf_counter()
    frames = plan_chunks(len(scene), cfg.streaming.chunk_size, cfg.streaming.overlap)
    loops_on = cfg.streaming.loop_closure and len(frames) > 2  # two chunks are already linked by their overlap
    logger.info(
        "%s: %d views in %d chunks of %d (overlap %d)%s",
        name,
        len(scene),
        len(frames),
        cfg.streaming.chunk_size,
        cfg.streaming.overlap,
        ", loop closure" if loops_on else "",
    )
    chunks = [infer_chunk.submit(name, f"chunk_{i:04d}", f, scene, cache, cfg, loops_on) for i, f in enumerate(frames)]
    # Futures as arguments: Prefect waits for them and passes their results (its type stubs only allow the values).
    aligned = [align_pair.submit(name, cache, a, b) for a, b in zip(chunks, chunks[1:])]  # type: ignore[call-overload]
    records: list[ChunkRecord] = [c.result() for c in chunks]
    sequential = [a.result() for a in aligned]
    report(0.55, f"{len(frames)} chunks inferred and aligned")
    links = close_loops(name, scene, cache, cfg, records, frames) if loops_on else []
    transforms = solve_chunk_transforms(sequential, [r.anchor for r in records], links)

    computed = [r for r in records if not r.info["reused"]]
    store.reset(
        {
            **attrs,
            "model": (computed or records)[0].info["model"],
            "versions": package_versions(),
            "inputs": scene.manifest(),
            "started_at": time.time(),
        }
    )
    sizes = []  # the written views' source sizes, when the input has them
    for i, (record, owned, transform) in enumerate(zip(records, owned_frames(frames), transforms)):
        written = write_chunk(name, cache, record, span(owned), transform, scene, store, first=i == 0)
        sizes += [] if written is None else [written]
    if len(records) > 1:  # one chunk wrote exactly what the normal mode writes
        # Streaming refuses views of different processed sizes, so none was cropped: the plain-resize mapping holds.
        store.update_attrs(
            source_names=scene.names,
            ref_view_idx=None,
            source_sizes=np.concatenate(sizes).tolist() if sizes else None,
            source_scale=None,
            source_offset=None,
        )
    store.record_stage("decode", sum(r.info["decode_seconds"] for r in computed))
    store.record_stage(
        "inference", sum(r.info["seconds"] for r in computed), ref_view_idx=records[0].info["ref_view_idx"]
    )
    store.record_stage(
        "streaming",
        time.perf_counter() - started,
        chunk_size=cfg.streaming.chunk_size,
        overlap=cfg.streaming.overlap,
        chunks=[_summary(r, t) for r, t in zip(records, transforms)],
        loops=[[link.i, link.j] for link in links],
    )
    logger.info(
        "%s: %d chunks (%d reused), %d loop links, written in one frame",
        name,
        len(records),
        len(records) - len(computed),
        len(links),
    )


def close_loops(
    name: str,
    scene: SceneInput,
    cache: ChunkCache,
    cfg: ReconstructConfig,
    records: list[ChunkRecord],
    frames: list[np.ndarray],
) -> list[ChunkLink]:
    """Loop links: revisits found from every frame's descriptor, each verified by inferring its two places together."""
    descriptors = np.concatenate([cache.descriptors(r.name, span(o)) for r, o in zip(records, owned_frames(frames))])
    candidates = find_loop_candidates(
        descriptors, min_gap=cfg.streaming.chunk_size, min_similarity=cfg.streaming.loop_min_similarity
    )
    plans = plan_loop_closures(candidates, frames)
    get_run_logger().info("%s: %d revisit candidates, %d loops to verify", name, len(candidates), len(plans))
    verified = [
        infer_chunk.submit(name, f"loop_{p.chunk_a:04d}_{p.chunk_b:04d}", p.frames, scene, cache, cfg, False)
        for p in plans
    ]
    linked = [
        link_loop.submit(name, cache, p, v, records[p.chunk_a], records[p.chunk_b])  # type: ignore[call-overload]
        for p, v in zip(plans, verified)
    ]
    return [link for link in (f.result() for f in linked) if link is not None]


def _summary(record: ChunkRecord, transform: Any) -> dict[str, Any]:
    """What the store records about one chunk: its views, whether it was reused, where and when it ran, its Sim(3)."""
    return {
        "name": record.name,
        "views": [int(record.frames[0]), int(record.frames[-1])],
        "reused": record.info["reused"],
        "finished_at": record.info["finished_at"],
        "worker": record.info["worker"],
        "sim3": transform.matrix().tolist(),
    }
