"""Reconstruct every scene of a dataset: ``python -m flows.batch dataset=<name|folder|s3 prefix> [overrides]``.

Every subfolder (image folder or COLMAP dataset) and every video directly under the dataset root is
a scene. Scenes run concurrently (threads, or Dask workers with ``runner=dask``); one failing scene
does not stop the others; complete scenes are skipped and half-written ones are redone.
"""

# Annotations stay objects (no `from __future__ import annotations`): a served or deployed run validates the
# flow's typed parameter from them in a fresh process, where a string annotation was left unresolved.

import sys
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import fsspec
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from da3core.io.inputs import VIDEO_EXTENSIONS, InputError
from da3core.io.storage import is_remote, list_children
from flows.config import BatchConfig, validate
from flows.errors import EXIT_BUG, EXIT_USER_ERROR, is_user_error, run_cli, user_message
from flows.outcomes import batch_outcome, scene_outcome
from flows.preflight import check_apart, check_model, check_output, check_outside_dataset
from flows.reconstruct import SceneResult, export_dir_of, reconstruct_scene, scene_name
from flows.runners import task_runner


@dataclass
class BatchReport:
    """Per-scene outcome of a batch run."""

    results: list[SceneResult]
    failures: dict[str, str]  # scene name -> one-line reason
    bugs: list[str] = field(default_factory=list)  # failed scenes whose error was not a user error

    def summary(self) -> str:
        """Human-readable lines: one per scene."""
        lines = [f"{r.name}: {r.status} ({r.seconds:.1f}s)" for r in self.results]
        lines += [f"{name}: FAILED: {reason}" for name, reason in self.failures.items()]
        return "\n".join(lines)


def discover_dataset(root: str, storage_options: dict[str, Any]) -> list[tuple[str, str]]:
    """(name, source) of every scene under ``root``: subfolders and videos; hidden entries are ignored."""
    try:
        children = list_children(root, storage_options)
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise InputError(f"dataset not found or not a folder: {root}") from exc
    scenes: dict[str, str] = {}
    for child in children:
        base = PurePosixPath(child.rstrip("/")).name
        suffix = PurePosixPath(base).suffix.lower().lstrip(".")
        if base.startswith((".", "_")):
            continue
        is_dir = _is_dir(child, storage_options)
        if not (is_dir or suffix in VIDEO_EXTENSIONS):
            continue
        name = scene_name(child, is_dir)
        if name in scenes:  # e.g. a folder `walk` and a video `walk.mp4`: one result would replace the other
            raise InputError(
                f"scenes {scenes[name]} and {child} of dataset {root} would both be written as {name!r}; "
                "rename one of them"
            )
        scenes[name] = child
    if not scenes:
        raise InputError(f"no scenes in dataset {root}: expected subfolders (images or COLMAP) or videos")
    return list(scenes.items())


def _is_dir(path: str, storage_options: dict[str, Any]) -> bool:
    if not is_remote(path):
        return Path(path).is_dir()
    fs, p = fsspec.core.url_to_fs(path, **storage_options)
    return fs.isdir(p)


@task(name="scene", task_run_name="scene-{name}", cache_policy=NO_CACHE)
def scene_task(cfg: BatchConfig, name: str, source: str) -> SceneResult:
    """One scene of the batch (its own tasks run nested, on the same worker); ``Cached`` when skipped."""
    return scene_outcome(reconstruct_scene(cfg, name, source), dict(cfg.storage.options))


@flow(name="batch", log_prints=True)
def batch(cfg: BatchConfig) -> BatchReport:
    """Reconstruct all scenes of ``cfg.dataset`` on ``cfg.runner``; failures are collected, not raised."""
    validate(cfg)  # a deployment's parameters arrive typed but unchecked
    root = cfg.datasets.get(cfg.dataset, cfg.dataset)
    check_outside_dataset(cfg.storage.root, root)
    scenes = discover_dataset(root, dict(cfg.storage.options))
    get_run_logger().info(
        "dataset %s: %d scenes, concurrency %d (%s runner)", root, len(scenes), cfg.concurrency, cfg.runner.value
    )
    # The scenes run in a subflow that owns the task runner, so a served or deployed run honours runner=dask
    # and concurrency exactly like the command line.
    report = run_scenes.with_options(task_runner=task_runner(cfg))(cfg, scenes)
    batch_outcome(root, report)
    return report


@flow(name="batch-scenes", log_prints=True)
def run_scenes(cfg: BatchConfig, scenes: list[tuple[str, str]]) -> BatchReport:
    """Submit every scene to this flow's task runner and collect the outcomes in order."""
    logger = get_run_logger()
    futures = [(name, scene_task.submit(cfg, name, source)) for name, source in scenes]
    results, failures, bugs = [], {}, []
    for i, (name, fut) in enumerate(futures, 1):
        try:
            results.append(fut.result())
            logger.info("[%d/%d] %s: %s", i, len(futures), name, results[-1].status)
        except Exception as exc:  # isolate scene failures; the report carries the reason
            failures[name] = user_message(exc)
            bugs += [] if is_user_error(exc) else [name]
            logger.error("[%d/%d] %s failed: %s", i, len(futures), name, failures[name])
    return BatchReport(results, failures, bugs)


def main(argv: list[str]) -> int:
    """Command-line entry: compose the config once, check model, dataset and storage first; if scenes failed, exit 2
    when each failure was a user error and 1 when one was a bug."""
    outcome = {"code": 0}

    def run(cfg: BatchConfig) -> None:
        check_model(cfg.model)
        root = cfg.datasets.get(cfg.dataset, cfg.dataset)
        check_outside_dataset(cfg.storage.root, root)
        for name, source in discover_dataset(root, dict(cfg.storage.options)):
            check_apart(export_dir_of(cfg, name), source, "storage.root")
        check_output(cfg.storage.root, dict(cfg.storage.options), "storage.root")
        report = batch(cfg)
        print(report.summary())
        if report.failures:  # sticky across the jobs of a multirun, where a bug outranks a user error
            code = EXIT_BUG if report.bugs else EXIT_USER_ERROR
            outcome["code"] = EXIT_BUG if EXIT_BUG in (code, outcome["code"]) else code
        if report.failures:
            print(
                f"error: {len(report.failures)} of {len(report.results) + len(report.failures)} scenes failed",
                file=sys.stderr,
            )

    code = run_cli("batch", argv, run)
    return code or outcome["code"]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
