"""Reconstruct one scene: ``python -m flows.reconstruct scene=<name|path|s3 url> export=glb+gs_video [overrides]``.

Runs as a Prefect flow without a server (Prefect starts a temporary local API when none is
configured). Outputs go to ``<storage.root>/<scene name>/``: ``scene.zarr`` and the exports.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from prefect import flow, get_run_logger

from da3core.export import parse_formats
from da3core.io.remote import is_remote
from da3core.store import SceneStore, join_url
from flows.config import ReconstructConfig, config_hashes, load_config, resolved
from flows.errors import run_cli
from flows.progress import report
from flows.storage import check_storage
from tasks.reconstruction import align_poses, export_format, infer, ingest


@dataclass
class SceneResult:
    """What happened to one scene."""

    name: str
    store_url: str
    status: str  # "done" | "exported" (inference reused) | "skipped" (already complete)
    exports: dict[str, list[str]]
    seconds: float


def scene_name(source: str) -> str:
    """A scene's name: the file stem or folder name of its source."""
    return PurePosixPath(source.rstrip("/")).stem if not source.endswith("/") else PurePosixPath(source).name


def resolve_scene(cfg: ReconstructConfig) -> tuple[str, str]:
    """(name, source) for ``cfg.scene``: a registered name, a path or a URL."""
    if cfg.scene in cfg.scenes:
        return cfg.scene, cfg.scenes[cfg.scene]
    source = cfg.scene if is_remote(cfg.scene) else str(Path(cfg.scene).expanduser())
    return scene_name(source), source


def reconstruct_scene(cfg: ReconstructConfig, name: str, source: str) -> SceneResult:
    """Run (or resume) one scene's tasks; a complete store for the same config is left untouched."""
    logger = get_run_logger()
    started = time.perf_counter()
    run = resolved(cfg)
    inference_hash, full_hash = config_hashes(cfg)
    export_dir = cfg.output_dir or join_url(cfg.storage.root, name)
    store = SceneStore(join_url(export_dir, "scene.zarr"), dict(cfg.storage.options))
    formats = parse_formats(cfg.export)

    if not cfg.force and store.is_complete(full_hash):
        logger.info("scene %s is complete for this config (%s); skipping", name, full_hash)
        return SceneResult(name, store.url, "skipped", {}, time.perf_counter() - started)
    reuse = not cfg.force and store.exists() and store.attrs().get("stages", {}).get("align", {}).get(
        "inference_hash") == inference_hash
    if reuse:
        logger.info("scene %s: inference is up to date (%s); re-exporting only", name, inference_hash)
        store.update_attrs(complete=None, config=run, config_hash=full_hash)
    else:
        report(0.05, "reading input")
        scene = ingest(name, source, run["input"], dict(cfg.storage.options))
        report(0.15, f"inference on {len(scene)} views")
        attrs = {"scene": name, "source": source, "config": run, "config_hash": full_hash,
                 "inference_hash": inference_hash}
        store = infer(name, scene, store, run, attrs)
        report(0.7, "aligning poses")
        store = align_poses(name, scene, store, run, inference_hash)

    report(0.75, f"exporting {'+'.join(formats)}")
    # Called in turn, not submitted: inside a batch's scene task a nested submit would wait for a worker
    # slot held by that very scene task (deadlock at concurrency=1).
    exports = {}
    for i, fmt in enumerate(formats):
        exports[fmt] = export_format(name, store, fmt, export_dir, _export_options(run, fmt))
        report(0.75 + 0.2 * (i + 1) / len(formats), f"exported {fmt}")
    store.mark_complete(full_hash)
    seconds = time.perf_counter() - started
    logger.info("scene %s finished in %.2fs -> %s", name, seconds, export_dir)
    return SceneResult(name, store.url, "exported" if reuse else "done", exports, seconds)


def _export_options(run: dict[str, Any], fmt: str) -> dict[str, Any]:
    """Keyword arguments for ``da3core.export.export`` for one format."""
    return {fmt: dict(run["exporters"].get(fmt, {}))}


@flow(name="reconstruct", log_prints=True)
def reconstruct(overrides: list[str] | None = None) -> SceneResult:
    """Reconstruct one scene from Hydra-style overrides (``scene=... export=glb+gs_video ...``)."""
    cfg = load_config("reconstruct", overrides)
    name, source = resolve_scene(cfg)
    return reconstruct_scene(cfg, name, source)


def main(argv: list[str]) -> int:
    """Command-line entry: validate config and storage before starting the flow; one-line errors."""
    def run() -> None:
        cfg = load_config("reconstruct", argv)
        check_storage(cfg.storage.root, dict(cfg.storage.options))
        result = reconstruct(argv)
        print(f"{result.name}: {result.status} in {result.seconds:.1f}s -> {result.store_url}")

    return run_cli(run, argv, "reconstruct")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
