"""Video depth: ``python -m flows.video_depth video=<path|s3 url> [encoder=vits streaming=true target_fps=15 ...]``.

Runs Video Depth Anything as a Prefect flow and writes, next to the video (``videos/mice.mp4`` →
``videos/mice/``) or in ``output_dir``: ``depth.zarr`` (depth per frame, frame indices, timestamps,
scale and provenance) and Annolid's outputs (``depth.ndjson`` always, the rest by ``save_*``).
One run at a time per output folder (``depth.zarr.lock``; ``storage.lock_timeout`` seconds to wait for another).
The store is built beside the old one and swapped in when inference succeeds (``da3core.store``), so a failed
run never damages a previous result; the completion marker is written last.
"""

# Annotations stay objects (no `from __future__ import annotations`): a served or deployed run validates the
# flow's typed parameter from them in a fresh process, where a string annotation was left unresolved.

import sys
import time
from dataclasses import dataclass
from pathlib import Path

from prefect import flow, get_run_logger

from da3core.io.storage import check_writable, is_remote
from da3core.io.storage import join_url
from da3core.store import SceneStore, store_lock
from da3core.video_depth.outputs import default_output_dir
from flows.config import VideoDepthConfig, config_hashes, resolved, validate_video_depth
from flows.errors import run_cli
from flows.preflight import check_output, check_video, check_video_model
from tasks.video_depth import SECOND_PASS, estimate, export_second_pass, probe

STORE_NAME = "depth.zarr"


@dataclass
class VideoDepthResult:
    """What happened to one video."""

    video: str
    store_url: str
    output_dir: str
    status: str  # "done" | "skipped" (a complete store for this config and video exists)
    outputs: dict[str, list[str]]  # Annolid's result keys (depth_ndjson, npz, ...) -> locations; empty when skipped
    seconds: float


def resolve_paths(cfg: VideoDepthConfig) -> tuple[str, str]:
    """(video source, output folder) with ``~`` expanded and the Annolid default folder filled in."""
    video = cfg.scenes.get(cfg.video, cfg.video)  # a name from the catalog, a path or a URL
    source = video if is_remote(video) else str(Path(video).expanduser())
    return source, cfg.output_dir or default_output_dir(source)


def process_video(cfg: VideoDepthConfig) -> VideoDepthResult:
    """Probe, then (holding the output's lock) stream the depth into a staged store and the per-frame outputs,
    swap the store in, and write the second-pass outputs."""
    logger = get_run_logger()
    started = time.perf_counter()
    run = resolved(cfg)
    source, output_dir = resolve_paths(cfg)
    options = dict(cfg.storage.options)
    job = probe(source, cfg)
    check_writable(output_dir, options, "output_dir")  # after the probe: a missing video leaves no empty output folder
    inference_hash, full_hash = config_hashes(cfg, video_sha256=job.sha256)
    store = SceneStore(join_url(output_dir, STORE_NAME), options)
    with store_lock(store, cfg.storage.lock_timeout) as lock:
        for leftover in store.discard_leftovers():
            logger.info("removed %s, left by an interrupted run", leftover)
        if not cfg.force and store.is_complete(full_hash):
            logger.info("%s is complete for this config and video (%s); skipping", store.url, full_hash)
            return VideoDepthResult(job.name, store.url, output_dir, "skipped", {}, time.perf_counter() - started)
        attrs = {"scene": Path(job.name).stem, "source": source, "config": run, "config_hash": full_hash,
                 "inference_hash": inference_hash, "inputs": {"kind": "video", "files": [{"path": source,
                                                                                          "sha256": job.sha256}]}}
        with store.replacement() as staged:
            streamed = estimate(job, staged, output_dir, cfg, attrs)
            lock.check()
        futures = [export_second_pass.submit(kind, store, output_dir, job, cfg, streamed["depth_range"])
                   for kind in SECOND_PASS if getattr(cfg, kind)]
        outputs = {"output_dir": [output_dir], **streamed["outputs"]}
        for future in futures:
            outputs.update(future.result())
        store.update_attrs(outputs={kind: len(paths) for kind, paths in outputs.items()})  # counts: lists can be long
        lock.check()
        store.mark_complete(full_hash)
    seconds = time.perf_counter() - started
    logger.info("%s: %d frames in %.2fs -> %s", job.name, len(job.indices), seconds, output_dir)
    return VideoDepthResult(job.name, store.url, output_dir, "done", outputs, seconds)


@flow(name="video-depth", log_prints=True)
def video_depth(cfg: VideoDepthConfig) -> VideoDepthResult:
    """Depth for one video (``cfg`` as composed by ``load_config("video_depth", overrides)``)."""
    validate_video_depth(cfg)  # a deployment's parameters arrive typed but unchecked
    return process_video(cfg)


def run(cfg: VideoDepthConfig) -> None:
    """What the command line does with a composed config: check video, model and output before Prefect starts, run
    the flow, print one line."""
    source, output_dir = resolve_paths(cfg)
    needed = check_video(source, cfg)
    check_video_model(cfg)
    check_output(output_dir, dict(cfg.storage.options), "output_dir", needed)
    result = video_depth(cfg)
    print(f"{result.video}: {result.status} in {result.seconds:.1f}s -> {result.output_dir}")


def main(argv: list[str]) -> int:
    """Command-line entry: compose and validate the config once, check the video, run; one-line errors."""
    return run_cli("video_depth", argv, run)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
