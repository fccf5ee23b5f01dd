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
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import fsspec
from prefect import flow, get_run_logger

from da3core.export import parse_formats
from da3core.export.nerfstudio import check_source_names
from da3core.io.inputs import input_identity
from da3core.io.storage import is_remote, join_url
from da3core.store import SceneStore, store_lock
from da3core.store.lock import Lock
from flows.config import ReconstructConfig, config_hashes, resolved, validate
from flows.errors import run_cli
from flows.outcomes import scene_outcome
from flows.preflight import check_apart, check_input_cameras, check_model, check_output, check_scene, store_bytes
from flows.progress import report
from tasks.model_cache import local_weights_identity
from tasks.reconstruction import align_poses, export_format, infer, ingest

STORE_NAME = "scene.zarr"
EXPORT_STAGING = ".da3-exports-"  # <export dir>/.da3-exports-<run>/: a run's exports until they are published


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
    """Where scene ``name`` is written: ``output_dir``, else ``<storage.root>/<name>`` (``~`` expanded locally)."""
    location = cfg.output_dir or join_url(cfg.storage.root, name)
    return location if is_remote(location) else str(Path(location).expanduser())


def reconstruct_scene(cfg: ReconstructConfig, name: str, source: str) -> SceneResult:
    """Run (or resume) one scene's tasks holding the scene lock; a complete store for the same config and input
    is left untouched, one for other settings is replaced only once the new inference is done."""
    export_dir = export_dir_of(cfg, name)
    check_apart(export_dir, source, "output_dir" if cfg.output_dir else "storage.root")  # before the lock file
    store = SceneStore(join_url(export_dir, STORE_NAME), dict(cfg.storage.options))
    with store_lock(store, cfg.storage.lock_timeout) as lock:
        for leftover in store.discard_leftovers() + discard_export_staging(export_dir, dict(cfg.storage.options)):
            get_run_logger().info("removed %s, left by an interrupted run", leftover)
        return _reconstruct_locked(cfg, name, source, store, export_dir, lock)


def _reconstruct_locked(
    cfg: ReconstructConfig, name: str, source: str, store: SceneStore, export_dir: str, lock: Lock
) -> SceneResult:
    logger = get_run_logger()
    started = time.perf_counter()
    run = resolved(cfg)
    # Weights at a local path can be replaced under the same name: their contents key the result (and the chunks).
    weights = local_weights_identity(cfg.model.path, cfg.model.weights.value == "random")
    inference_hash, full_hash = config_hashes(cfg, **weights)
    formats = parse_formats(cfg.export)
    options = dict(cfg.storage.options)
    report(0.05, "reading input")
    scene = ingest(name, source, cfg.input, options)  # lists and hashes the files, once
    check_input_cameras(scene.kind, cfg.model.preset)
    if "nerfstudio" in formats:  # its image names come from the input's: a clash is known before inference
        check_source_names(scene.names)
    previous = store.attrs() if store.exists() else {}
    same_input = input_identity(previous.get("inputs")) == scene.identity()
    if not cfg.force and same_input and store.is_complete(full_hash):
        logger.info("scene %s is complete for this config (%s) and input; skipping", name, full_hash)
        _discard_cache(cfg, store, inference_hash, scene)  # a run killed after its swap may have left it
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
        _discard_cache(cfg, store, inference_hash, scene)  # its chunks are in the store (a run killed after its swap)
        result = store
    else:
        if previous and not same_input:
            logger.info("scene %s: the input differs from the stored one (source or content); recomputing", name)
        valid, stale = set(), valid | stale
        result = _infer_staged(cfg, name, scene, source, store, run, (inference_hash, full_hash), stale, lock)

    # Every export is written into a hidden folder first, from the new result: until the result is published,
    # a failure (a bug, a full disk) or a kill leaves the earlier result and its files as they were.
    staging = join_url(export_dir, f"{EXPORT_STAGING}{uuid.uuid4().hex[:12]}")
    exports, seconds = {}, {}
    try:
        report(0.75, f"exporting {'+'.join(formats)}")
        for i, fmt in enumerate(formats):
            exports[fmt], seconds[fmt] = export_format(
                name, result, fmt, staging, {fmt: dict(cfg.exporters.get(fmt, {}))}
            )
            report(0.75 + 0.2 * (i + 1) / len(formats), f"exported {fmt}")
        lock.check()
    except BaseException:
        _remove_tree(staging, options)
        if result is not store:
            result.discard()
        raise
    written = {_relative(path, staging) for paths in exports.values() for path in paths}
    # Publish: the store (unmarked, listing what is about to be in place) first, then the files, then the marker.
    if reuse:
        store.update_attrs(complete=None, config=run, config_hash=full_hash, export_files=sorted(valid | written))
    else:
        result.update_attrs(export_files=sorted(written))
        store.replace_with(result)
        _discard_cache(cfg, store, inference_hash, scene)  # the chunks are in the store now
    publish_exports(staging, export_dir, options)
    for fmt, paths in exports.items():
        store.record_stage(f"export_{fmt}", seconds[fmt], files=len(paths))
    valid |= written
    remove_exports(export_dir, stale - valid, options)  # e.g. depth_vis of views no longer there
    store.update_attrs(stale_exports=[])
    lock.check()
    store.mark_complete(full_hash)
    total = time.perf_counter() - started
    logger.info("scene %s finished in %.2fs -> %s", name, total, export_dir)
    final = {fmt: [join_url(export_dir, _relative(p, staging)) for p in paths] for fmt, paths in exports.items()}
    return SceneResult(name, store.url, "exported" if reuse else "done", final, total)


def _infer_staged(
    cfg: ReconstructConfig,
    name: str,
    scene: Any,
    source: str,
    store: SceneStore,
    run: dict[str, Any],
    hashes: tuple[str, str],
    stale: set[str],
    lock: Lock,
) -> SceneStore:
    """Infer and align the scene into a store built beside ``store`` (swapped in later, with the exports)."""
    inference_hash, full_hash = hashes
    attrs = {
        "scene": name,
        "source": source,
        "config": run,
        "config_hash": full_hash,
        "inference_hash": inference_hash,
        "export_files": [],
        "stale_exports": sorted(stale),
    }
    staged = store.staging()
    try:
        report(0.15, f"inference on {len(scene)} views")
        if cfg.streaming.enabled:  # its loop closure's libraries (faiss, gtsam) load for streaming runs only
            from flows.streaming import chunk_cache, stream_inference

            stream_inference(name, scene, staged, cfg, attrs, chunk_cache(store, inference_hash, scene))
        else:
            infer(name, scene, staged, cfg, attrs)
        report(0.7, "aligning poses")
        align_poses(name, scene, staged, cfg.pose, inference_hash)
        lock.check()
    except BaseException:
        staged.discard()
        raise
    return staged


def _discard_cache(cfg: ReconstructConfig, store: SceneStore, inference_hash: str, scene: Any) -> None:
    """Delete the streaming chunk cache of the inference now in ``store`` (other keys may still be resumed)."""
    if cfg.streaming.enabled:
        from flows.streaming import chunk_cache

        chunk_cache(store, inference_hash, scene).discard()


def publish_exports(staging: str, export_dir: str, storage_options: dict[str, Any]) -> None:
    """Move every file of the export ``staging`` folder to the same place under ``export_dir``, then remove it
    (locally each move is one atomic rename; on object stores a copy and a delete)."""
    fs, root = fsspec.core.url_to_fs(staging, **storage_options)
    _, target = fsspec.core.url_to_fs(export_dir, **storage_options)
    root, target = root.rstrip("/"), target.rstrip("/")
    files = sorted(fs.find(root)) if fs.exists(root) else []
    for file in files:
        dest = target + file[len(root) :]
        if is_remote(export_dir):
            fs.mv(file, dest)
        else:
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            os.replace(file, dest)
    _remove_tree(staging, storage_options)


def _remove_tree(location: str, storage_options: dict[str, Any]) -> None:
    fs, path = fsspec.core.url_to_fs(location, **storage_options)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def discard_export_staging(export_dir: str, storage_options: dict[str, Any]) -> list[str]:
    """Delete the export staging folders killed runs left in ``export_dir``; call it holding the scene lock."""
    fs, root = fsspec.core.url_to_fs(export_dir, **storage_options)
    try:
        entries = fs.ls(root, detail=False, refresh=True)
    except (FileNotFoundError, NotADirectoryError):
        return []
    leftovers = [e for e in entries if e.rstrip("/").rsplit("/", 1)[-1].startswith(EXPORT_STAGING)]
    for entry in leftovers:
        fs.rm(entry, recursive=True)
    return leftovers


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
