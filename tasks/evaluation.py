"""Prefect tasks of the benchmark: lay a benchmark scene out as reconstruct-flow input, score a prediction, write
the reports.

A benchmark scene becomes an input the reconstruct tasks read unchanged: an image folder (``unposed``) or a COLMAP
dataset carrying the GT cameras (``posed``), with file names prefixed by the benchmark's frame order (the reader
sorts by name, and the order picks the reference view). The copy lives in the local cache, keyed by the dataset's
location; files whose source is unchanged (size and mtime or ETag) are not fetched again. Evaluations running at
once on one dataset share that copy: they stage it in turn (a lock beside it), and every file in it is replaced
whole, only when its content changed, so a run reading it never sees a half-written or missing file.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from da3core.evaluation.benchmark import ground_truth_depth, pose_accuracy_curve, score_scene
from da3core.evaluation.datasets import BenchScene
from da3core.evaluation.summary import BenchmarkResults, summary_text, table_csv, table_json
from da3core.io.storage import cache_root
from da3core.store import SceneStore

SOURCES_FILE = ".sources.json"  # staged name -> [source, size, version]: what each staged copy was made from


def staged_names(bench: BenchScene) -> list[str]:
    """The staged file name of every frame: its benchmark position, then its own name."""
    return [f"{i:05d}_{posixpath.basename(f)}" for i, f in enumerate(bench.image_files)]


def staging_folder(bench: BenchScene, kind: str) -> Path:
    """Where ``bench`` is laid out for inference ``kind``: stable per dataset location, scene and kind."""
    key = hashlib.sha256(bench.reader.store.root.encode()).hexdigest()[:16]
    return cache_root().parent / "benchmark" / key / bench.dataset / bench.name.replace("/", "-") / kind


def _sync_images(bench: BenchScene, folder: Path) -> None:
    """Copy the frames under their staged names (atomically, unchanged ones kept); delete any other file there."""
    fs = bench.reader.store.fs
    folder.mkdir(parents=True, exist_ok=True)
    record_file = folder / SOURCES_FILE
    previous = json.loads(record_file.read_text()) if record_file.is_file() else {}
    record = {}
    for name, source in zip(staged_names(bench), bench.image_files):
        info = fs.info(source)
        version = info.get("ETag") or info.get("mtime") or info.get("LastModified")
        record[name] = [source, info.get("size"), str(version)]
        if previous.get(name) != record[name] or not (folder / name).is_file():
            partial = folder / f".{name}.tmp-{uuid.uuid4().hex[:8]}"
            fs.get_file(source, str(partial))
            os.replace(partial, folder / name)  # a reader never sees a half-copied frame
    for stale in set(os.listdir(folder)) - set(record) - {SOURCES_FILE}:
        if (folder / stale).is_file():
            (folder / stale).unlink()
    partial = folder / f"{SOURCES_FILE}.tmp-{uuid.uuid4().hex[:8]}"
    partial.write_text(json.dumps(record))
    os.replace(partial, record_file)


def _write_cameras(model_dir: Path, images: Path, bench: BenchScene) -> None:
    """A COLMAP model of the GT cameras (one PINHOLE camera per frame, COLMAP's +0.5 pixel convention)."""
    import pycolmap
    from PIL import Image

    from da3core.geometry import intrinsics_to_colmap

    rec = pycolmap.Reconstruction()
    for i, name in enumerate(staged_names(bench)):
        with Image.open(images / name) as im:
            width, height = im.size
        K = intrinsics_to_colmap(np.asarray(bench.intrinsics[i], np.float64))
        ext = np.asarray(bench.extrinsics[i], np.float64)
        camera = pycolmap.Camera.create_from_model_name(i + 1, "PINHOLE", float(K[0, 0]), width, height)
        camera.params = [K[0, 0], K[1, 1], K[0, 2], K[1, 2]]
        rec.add_camera_with_trivial_rig(camera)
        rec.add_image_with_trivial_frame(
            pycolmap.Image(name=name, camera_id=i + 1, image_id=i + 1),
            pycolmap.Rigid3d(pycolmap.Rotation3d(ext[:3, :3]), ext[:3, 3]),
        )
    model_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=model_dir.parent, prefix=f".{model_dir.name}.tmp-") as written:
        rec.write_binary(written)
        for file in sorted(Path(written).iterdir()):
            target = model_dir / file.name
            if not target.is_file() or target.read_bytes() != file.read_bytes():
                os.replace(file, target)


def stage(bench: BenchScene, kind: str, on_wait: Callable[[Path], None] | None = None) -> Path:
    """Lay ``bench`` out as reconstruct-flow input for ``kind`` (unposed: image folder; posed: COLMAP dataset) in
    its staging folder, holding the folder's lock (``on_wait`` is told when another evaluation holds it)."""
    from filelock import FileLock, Timeout

    folder = staging_folder(bench, kind)
    folder.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(folder.parent / f".{folder.name}.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if on_wait is not None:
            on_wait(folder)
        lock.acquire()
    try:
        if kind == "posed":
            _sync_images(bench, folder / "images")
            _write_cameras(folder / "sparse" / "0", folder / "images", bench)
        else:
            _sync_images(bench, folder)
    finally:
        lock.release()
    return folder


@task(name="stage-input", task_run_name="stage-{kind}-{name}", cache_policy=NO_CACHE)
def stage_input(name: str, bench: BenchScene, kind: str) -> str:
    """Lay ``bench`` out as reconstruct-flow input for ``kind`` (see :func:`stage`)."""
    started = time.perf_counter()
    logger = get_run_logger()
    folder = stage(bench, kind, lambda f: logger.info("%s: waiting for another evaluation staging %s", name, f))
    logger.info(
        "staged %s (%d frames, %s) in %.2fs -> %s", name, len(bench), kind, time.perf_counter() - started, folder
    )
    return str(folder)


@task(name="score", task_run_name="score-{mode}-{name}", cache_policy=NO_CACHE)
def score(
    name: str, bench: BenchScene, mode: str, store: SceneStore | None
) -> tuple[dict[str, float], list[float] | None, float]:
    """(metrics, pose accuracy curve or None, seconds) of ``mode`` for the prediction in ``store`` (None: the GT)."""
    started = time.perf_counter()
    if store is None:
        extrinsics, intrinsics = bench.extrinsics, bench.intrinsics
        depth = None if mode == "pose" else ground_truth_depth(bench)
    else:
        attrs = store.attrs()
        if attrs.get("source_names") != staged_names(bench):
            raise ValueError(
                f"the store {store.url} holds other frames than {bench.dataset}/{bench.name}; rerun with force=true"
            )
        if mode == "metric_depth" and not attrs.get("is_metric"):
            get_run_logger().warning(
                "%s: metric_depth of a model whose depth is not metric (preset %s)",
                name,
                attrs.get("model", {}).get("preset"),
            )
        extrinsics, intrinsics = store.read_array("extrinsics"), store.read_array("intrinsics")
        depth = None if mode == "pose" else store.read_array("depth")
    metrics = score_scene(bench, mode, depth, intrinsics, extrinsics)
    curve = pose_accuracy_curve(extrinsics, bench.extrinsics) if mode == "pose" else None
    seconds = time.perf_counter() - started
    get_run_logger().info("%s %s in %.2fs: %s", name, mode, seconds, {k: round(v, 4) for k, v in metrics.items()})
    return {k: float(v) for k, v in metrics.items()}, curve, seconds


@task(name="write-reports", cache_policy=NO_CACHE, retries=1)
def write_reports(results: BenchmarkResults, out: str, storage_options: dict[str, Any]) -> list[str]:
    """``metric_results/<dataset>_<mode>.{json,csv}``, ``summary.txt``, ``summary.json`` and ``report.html`` under
    ``out``, each published atomically."""
    from da3core.evaluation.html_report import html_report
    from da3core.export.target import ExportTarget

    target = ExportTarget(out, storage_options)
    summary = summary_text(results)
    files = {
        "summary.txt": summary + "\n",
        "summary.json": json.dumps(results.to_json(), indent=2),
        "report.html": html_report(results, summary),
    }
    for key, table in results.tables().items():
        files[f"metric_results/{key}.json"] = table_json(table)
        files[f"metric_results/{key}.csv"] = table_csv(table)
    for relpath, text in files.items():
        with target.staged(relpath) as local:
            local.write_text(text, encoding="utf-8")
    return [target.url(relpath) for relpath in files]
