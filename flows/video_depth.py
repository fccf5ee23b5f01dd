"""Video depth: ``python -m flows.video_depth video=<path|s3 url> [encoder=vits streaming=true target_fps=15 ...]``.

Runs Video Depth Anything as a Prefect flow and writes, next to the video (``videos/mice.mp4`` →
``videos/mice/``) or in ``output_dir``: ``depth.zarr`` (depth per frame, frame indices, timestamps,
scale and provenance) and Annolid's outputs (``depth.ndjson`` always, the rest by ``save_*``).
One run at a time per output folder (``depth.zarr.lock``; ``storage.lock_timeout`` seconds to wait for another).
The store is built beside the old one and swapped in when inference succeeds (``da3core.store``), so a failed
run never damages a previous result. Every output is staged under a hidden name and published only after the swap,
while the new store is unmarked; outputs of the previous result this run does not rewrite are then removed (the
store lists what it owns, ``output_files``), and the completion marker is written last. So a killed run leaves
the old complete result or an unmarked store, never a marked store beside another run's outputs; the next run
removes the staging files it left.
"""

# Annotations stay objects (no `from __future__ import annotations`): a served or deployed run validates the
# flow's typed parameter from them in a fresh process, where a string annotation was left unresolved.

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from prefect import flow, get_run_logger

from da3core.export.target import ExportTarget
from da3core.io.storage import check_writable, is_remote, join_url
from da3core.store import SceneStore, store_lock
from da3core.store.lock import Lock
from da3core.video_depth.outputs import (
    OutputOptions,
    default_output_dir,
    output_entries,
    output_locations,
    remove_leftovers,
    remove_outputs,
)
from flows.config import VideoDepthConfig, annolid_overrides, config_hashes, load_config, resolved, validate_video_depth
from flows.errors import run_cli
from flows.outcomes import video_outcome
from flows.preflight import check_output, check_video, check_video_model
from flows.progress import progress_to, report
from tasks.model_cache import local_weights_identity
from tasks.video_depth import SECOND_PASS, VideoJob, estimate, export_second_pass, output_options, probe

STORE_NAME = "depth.zarr"


@dataclass
class VideoDepthResult:
    """What happened to one video."""

    video: str
    store_url: str
    output_dir: str
    status: str  # "done" | "skipped" (a complete store for this config and video exists)
    outputs: dict[str, list[str]]  # Annolid's result keys (output_dir, depth_ndjson, npz, ...) -> locations
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
    report(0.0, "probing the video")
    job = probe(source, cfg)
    check_writable(output_dir, options, "output_dir")  # after the probe: a missing video leaves no empty output folder
    weights = local_weights_identity(cfg.weights, cfg.weights == "random")  # contents, as a file can be replaced
    inference_hash, full_hash = config_hashes(cfg, video_sha256=job.sha256, **weights)
    store = SceneStore(join_url(output_dir, STORE_NAME), options)
    target = ExportTarget(output_dir, options)
    with store_lock(store, cfg.storage.lock_timeout) as lock:
        for leftover in [*store.discard_leftovers(), *remove_leftovers(target)]:
            logger.info("removed %s, left by an interrupted run", leftover)
        if not cfg.force and store.is_complete(full_hash):
            logger.info("%s is complete for this config and video (%s); skipping", store.url, full_hash)
            outputs = output_locations(target, job.name, output_options(cfg), store.attrs()["n_frames"])
            return VideoDepthResult(
                job.name,
                store.url,
                output_dir,
                "skipped",
                {"output_dir": [output_dir], **outputs},
                time.perf_counter() - started,
            )
        previous = store.attrs() if store.exists() else {}
        owned = output_entries(job.name, output_options(cfg))
        # What earlier runs wrote and this one does not rewrite. The new store lists it until it is removed, so a
        # run killed before that still leaves the list to the next one.
        stale = sorted((owned_by(previous) | set(previous.get("stale_outputs", []))) - set(owned))
        attrs = {
            "scene": Path(job.name).stem,
            "source": source,
            "config": run,
            "config_hash": full_hash,
            "inference_hash": inference_hash,
            "inputs": {"kind": "video", "files": [{"path": source, "sha256": job.sha256}]},
            "output_files": owned,
            "stale_outputs": stale,
        }
        streamed = swap_in(store, lock, job, output_dir, cfg, attrs)
        report(0.9, "writing the outputs")
        futures = [
            export_second_pass.submit(kind, store, output_dir, job, cfg, streamed["depth_range"])
            for kind in SECOND_PASS
            if getattr(cfg, kind)
        ]
        outputs = {"output_dir": [output_dir], **streamed["outputs"]}
        for future in futures:
            outputs.update(future.result())
        for removed in remove_outputs(target, stale):
            logger.info("removed %s, an output of an earlier run that this config does not write", removed)
        counts = {kind: len(paths) for kind, paths in outputs.items()}  # counts: lists can be long
        store.update_attrs(outputs=counts, stale_outputs=[])
        lock.check()
        store.mark_complete(full_hash)
    seconds = time.perf_counter() - started
    report(1.0, "done")
    logger.info("%s: %d frames in %.2fs -> %s", job.name, len(job.indices), seconds, output_dir)
    return VideoDepthResult(job.name, store.url, output_dir, "done", outputs, seconds)


def owned_by(attrs: dict[str, Any]) -> set[str]:
    """The output entries a store's run wrote: its ``output_files``, or for a store from before that list, what its
    config writes."""
    if "output_files" in attrs:
        return set(attrs["output_files"])
    if "name" not in attrs.get("video", {}) or not isinstance(attrs.get("config"), dict):
        return set()
    fields = OutputOptions.__dataclass_fields__
    options = OutputOptions(**{k: v for k, v in attrs["config"].items() if k in fields})
    return set(output_entries(attrs["video"]["name"], options))


def swap_in(
    store: SceneStore, lock: Lock, job: VideoJob, output_dir: str, cfg: VideoDepthConfig, attrs: dict[str, Any]
) -> dict[str, Any]:
    """Infer into a staged store and staged per-frame outputs, swap the store in (unmarked), then publish the outputs.

    Publishing waits for the swap: before it, the previous complete store still stands and must keep its outputs.
    """
    staged_outputs = None
    try:
        with store.replacement() as staged:
            report(0.05, f"depth of {len(job.indices)} frames")
            streamed = estimate(job, staged, output_dir, cfg, attrs)
            staged_outputs = streamed["staged"]
            lock.check()
        staged_outputs.publish()
    except BaseException:
        if staged_outputs is not None:
            staged_outputs.discard()
        raise
    return streamed


@flow(name="video-depth", log_prints=True)
def video_depth(cfg: VideoDepthConfig) -> VideoDepthResult:
    """Depth for one video (``cfg`` as composed by ``load_config("video_depth", overrides)``); ends ``Cached`` when a
    complete store was reused, and publishes an artifact naming the outputs."""
    validate_video_depth(cfg)  # a deployment's parameters arrive typed but unchecked
    return video_outcome(process_video(cfg), dict(cfg.storage.options))


def run_video_depth_anything(
    input_video: str,
    output_dir: Optional[str] = None,
    encoder: Optional[str] = None,
    input_size: Optional[int] = None,
    max_res: Optional[int] = None,
    max_len: Optional[int] = None,
    target_fps: Optional[float] = None,
    metric: Optional[bool] = None,
    fp32: Optional[bool] = None,
    grayscale: Optional[bool] = None,
    save_npz: Optional[bool] = None,
    save_exr: Optional[bool] = None,
    focal_length_x: Optional[float] = None,
    focal_length_y: Optional[float] = None,
    checkpoint_root: Optional[str] = None,
    progress_callback: Optional[Callable[[int], None]] = None,
    preview_callback: None = None,
    streaming: Optional[bool] = None,
    save_depth_video: Optional[bool] = None,
    save_depth_frames: Optional[bool] = None,
    save_point_clouds: Optional[bool] = None,
    include_region_labels: bool = False,
    *,
    weights: Optional[str] = None,
    device: Optional[str] = None,
    force: Optional[bool] = None,
    defaults_file: Optional[str] = None,
) -> dict[str, list[str]]:
    """Annolid's ``run_video_depth_anything``: its parameters and result keys, run as the video-depth flow.

    A parameter left at None takes its value from ``defaults_file`` (an Annolid settings file's
    ``video_depth_anything:`` section), else Annolid's default (conf/video_depth.yaml). The result maps
    ``output_dir``, ``depth_ndjson``, ``depth_visualization``, ``depth_frames``, ``point_cloud_csv``, ``npz``,
    ``exr`` (those written) and ``depth_zarr`` to locations; it is the same when a complete earlier run is reused.
    Works from plain Python and inside another Prefect flow (as a subflow); errors raise, one line each.
    """
    if preview_callback is not None:
        raise ValueError("preview_callback is not supported: read depth.ndjson (or depth.zarr) as frames complete")
    given = {
        key: value
        for key, value in locals().items()
        if value is not None and key not in ("progress_callback", "preview_callback")
    }
    cfg = load_config("video_depth", annolid_overrides(given))
    preflight(cfg)
    percent = progress_callback or (lambda _: None)
    with progress_to(lambda fraction, _message: percent(int(round(fraction * 100)))):
        result = video_depth(cfg)
    return {"depth_zarr": [result.store_url], **result.outputs}


def preflight(cfg: VideoDepthConfig) -> None:
    """Check video, model and output before Prefect starts (one-line user errors)."""
    source, output_dir = resolve_paths(cfg)
    needed = check_video(source, cfg)
    check_video_model(cfg)
    check_output(output_dir, dict(cfg.storage.options), "output_dir", needed)


def run(cfg: VideoDepthConfig) -> None:
    """What the command line does with a composed config: the checks, the flow, one line."""
    preflight(cfg)
    result = video_depth(cfg)
    print(f"{result.video}: {result.status} in {result.seconds:.1f}s -> {result.output_dir}")


def main(argv: list[str]) -> int:
    """Command-line entry: compose and validate the config once, check the video, run; one-line errors."""
    return run_cli("video_depth", argv, run)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
