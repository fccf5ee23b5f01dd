"""Reconstruct one scene: ``python -m flows.reconstruct scene=<name|path|s3 url> export=glb+gs_video [overrides]``.

Runs as a Prefect flow without a server (the command serves Prefect's API itself when none is configured, see
:mod:`flows.runtime`). The flow's one parameter is the typed config (a form in Prefect's UI for deployments); the
command line composes it once from Hydra overrides. Outputs go to ``<storage.root>/<scene name>/``:
``scene.zarr`` and the exports. One run at a time per scene (``scene.zarr.lock``, see ``da3core.store.lock``);
``storage.lock_timeout`` seconds to wait for another.
"""

# Annotations stay objects (no `from __future__ import annotations`): a served or deployed run validates the
# flow's typed parameter from them in a fresh process, where a string annotation was left unresolved.

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import fsspec
from prefect import flow, get_run_logger

from da3core.export import parse_formats
from da3core.io.inputs import input_identity
from da3core.io.storage import is_remote, join_url
from da3core.store import SceneStore, store_lock
from da3core.store.lock import Lock
from flows.config import ReconstructConfig, config_hashes, resolved, validate
from flows.errors import run_cli
from flows.outcomes import scene_outcome
from flows.preflight import check_apart, check_model, check_output, check_scene, store_bytes
from flows.progress import report
from tasks.reconstruction import align_poses, export_format, infer, ingest

STORE_NAME = "scene.zarr"


@dataclass
class SceneResult:
    """What happened to one scene."""

    name: str
    store_url: str
    status: str  # "done" | "exported" (inference reused) | "skipped" (already complete)
    exports: dict[str, list[str]]
    seconds: float


def scene_name(source: str, is_dir: bool | None = None) -> str:
    """A scene's name: its folder's whole name (``scan.1``), or its file's stem (``walk`` for ``walk.mp4``).

    ``is_dir`` None: a local path is looked at, a URL is a folder if it ends with ``/``."""
    if is_dir is None:
        is_dir = source.endswith("/") or (not is_remote(source) and Path(source).is_dir())
    name = PurePosixPath(source.rstrip("/")).name
    return name if is_dir else PurePosixPath(name).stem


def resolve_scene(cfg: ReconstructConfig) -> tuple[str, str]:
    """(name, source) for ``cfg.scene``: a registered name, a path or a URL."""
    if cfg.scene in cfg.scenes:
        return cfg.scene, cfg.scenes[cfg.scene]
    source = cfg.scene if is_remote(cfg.scene) else str(Path(cfg.scene).expanduser())
    return scene_name(source), source


def export_dir_of(cfg: ReconstructConfig, name: str) -> str:
    """Where scene ``name`` is written: ``output_dir``, else ``<storage.root>/<name>``."""
    return cfg.output_dir or join_url(cfg.storage.root, name)


def reconstruct_scene(cfg: ReconstructConfig, name: str, source: str) -> SceneResult:
    """Run (or resume) one scene's tasks holding the scene lock; a complete store for the same config and input
    is left untouched, one for other settings is replaced only once the new inference is done."""
    export_dir = export_dir_of(cfg, name)
    check_apart(export_dir, source, "output_dir" if cfg.output_dir else "storage.root")  # before the lock file
    store = SceneStore(join_url(export_dir, STORE_NAME), dict(cfg.storage.options))
    with store_lock(store, cfg.storage.lock_timeout) as lock:
        for leftover in store.discard_leftovers():
            get_run_logger().info("removed %s, left by an interrupted run", leftover)
        return _reconstruct_locked(cfg, name, source, store, export_dir, lock)


def _reconstruct_locked(
    cfg: ReconstructConfig, name: str, source: str, store: SceneStore, export_dir: str, lock: Lock
) -> SceneResult:
    logger = get_run_logger()
    started = time.perf_counter()
    run = resolved(cfg)
    inference_hash, full_hash = config_hashes(cfg)
    formats = parse_formats(cfg.export)
    report(0.05, "reading input")
    scene = ingest(name, source, cfg.input, dict(cfg.storage.options))  # lists and hashes the files, once
    previous = store.attrs() if store.exists() else {}
    same_input = input_identity(previous.get("inputs")) == scene.identity()
    if not cfg.force and same_input and store.is_complete(full_hash):
        logger.info("scene %s is complete for this config (%s) and input; skipping", name, full_hash)
        return SceneResult(name, store.url, "skipped", {}, time.perf_counter() - started)
    reuse = (
        not cfg.force
        and same_input
        and previous.get("stages", {}).get("align", {}).get("inference_hash") == inference_hash
    )
    # Exported files the store lists: still valid for its inference, or stale (from an inference it replaced).
    valid, stale = set(previous.get("export_files", [])), set(previous.get("stale_exports", []))
    if reuse:
        logger.info("scene %s: inference is up to date (%s); re-exporting only", name, inference_hash)
        store.update_attrs(complete=None, config=run, config_hash=full_hash)  # unmarked before any export changes
    else:
        if previous and not same_input:
            logger.info("scene %s: the input differs from the stored one (source or content); recomputing", name)
        valid, stale = set(), valid | stale
        attrs = {
            "scene": name,
            "source": source,
            "config": run,
            "config_hash": full_hash,
            "inference_hash": inference_hash,
            "export_files": [],
            "stale_exports": sorted(stale),
        }
        cache = None
        if cfg.streaming.enabled:  # its loop closure's libraries (faiss, gtsam) load for streaming runs only
            from flows.streaming import chunk_cache, stream_inference

            cache = chunk_cache(store, inference_hash, scene)
        with store.replacement() as staged:  # built beside the old store, swapped in after inference and alignment
            report(0.15, f"inference on {len(scene)} views")
            if cache is not None:
                stream_inference(name, scene, staged, cfg, attrs, cache)
            else:
                infer(name, scene, staged, cfg, attrs)
            report(0.7, "aligning poses")
            align_poses(name, scene, staged, cfg.pose, inference_hash)
            lock.check()
        if cache is not None:  # the chunks are in the store now
            cache.discard()

    report(0.75, f"exporting {'+'.join(formats)}")
    # Called in turn, not submitted: inside a batch's scene task a nested submit would wait for a worker
    # slot held by that very scene task (deadlock at concurrency=1).
    exports = {}
    for i, fmt in enumerate(formats):
        exports[fmt] = export_format(name, store, fmt, export_dir, {fmt: dict(cfg.exporters.get(fmt, {}))})
        valid |= {_relative(path, export_dir) for path in exports[fmt]}
        store.update_attrs(export_files=sorted(valid))
        report(0.75 + 0.2 * (i + 1) / len(formats), f"exported {fmt}")
    remove_exports(export_dir, stale - valid, dict(cfg.storage.options))  # e.g. depth_vis of views no longer there
    store.update_attrs(stale_exports=[])
    lock.check()
    store.mark_complete(full_hash)
    seconds = time.perf_counter() - started
    logger.info("scene %s finished in %.2fs -> %s", name, seconds, export_dir)
    return SceneResult(name, store.url, "exported" if reuse else "done", exports, seconds)


def _relative(location: str, export_dir: str) -> str:
    """An exported file's path relative to the export dir (how the store lists it)."""
    if is_remote(export_dir):
        return location[len(export_dir.rstrip("/")) + 1 :]
    return Path(os.path.relpath(location, export_dir)).as_posix()


def remove_exports(export_dir: str, relpaths: set[str], storage_options: dict[str, Any]) -> None:
    """Delete files of an earlier export set (relative paths inside ``export_dir``; never the store) and, locally,
    the folders they leave empty."""
    fs, root = fsspec.core.url_to_fs(export_dir, **storage_options)
    root = root.rstrip("/")
    for rel in sorted(relpaths):
        parts = PurePosixPath(rel).parts
        if not parts or PurePosixPath(rel).is_absolute() or ".." in parts or parts[0].startswith(STORE_NAME):
            continue  # the list comes from store attributes: never follow it outside the export set
        try:
            fs.rm_file(f"{root}/{rel}")
        except FileNotFoundError:
            pass
        folder = os.path.dirname(f"{root}/{rel}")
        while not is_remote(export_dir) and folder != root and os.path.isdir(folder) and not os.listdir(folder):
            os.rmdir(folder)
            folder = os.path.dirname(folder)


@flow(name="reconstruct", log_prints=True)
def reconstruct(cfg: ReconstructConfig) -> SceneResult:
    """Reconstruct one scene (``cfg`` as composed by ``load_config("reconstruct", overrides)``); ends ``Cached`` when
    a complete store was reused, and publishes an artifact naming the outputs."""
    validate(cfg)  # a deployment's parameters arrive typed but unchecked
    name, source = resolve_scene(cfg)
    return scene_outcome(reconstruct_scene(cfg, name, source), dict(cfg.storage.options))


def run(cfg: ReconstructConfig) -> None:
    """What the command line does with a composed config: check model, input and output before Prefect starts, run
    the flow, print one line."""
    name, source = resolve_scene(cfg)
    check_model(cfg.model)
    n_views = check_scene(source, cfg.input)
    check_apart(export_dir_of(cfg, name), source, "output_dir" if cfg.output_dir else "storage.root")
    check_output(
        export_dir_of(cfg, name),
        dict(cfg.storage.options),
        "output_dir" if cfg.output_dir else "storage.root",
        store_bytes(n_views, cfg.processing.process_res**2),
    )
    result = reconstruct(cfg)
    print(f"{result.name}: {result.status} in {result.seconds:.1f}s -> {result.store_url}")


def main(argv: list[str]) -> int:
    """Command-line entry: compose and validate the config once, check storage, run; one-line errors."""
    return run_cli("reconstruct", argv, run)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
