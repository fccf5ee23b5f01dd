"""Prefect tasks of one scene's reconstruction: ingest → inference → pose alignment → exports.

Tasks hand each other a store location (URL + storage options) and small manifests, never big arrays.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from da3core.errors import is_user_error
from da3core.io.inputs import SceneInput, discover_scene, load_views
from da3core.io.storage import is_remote, localize
from da3core.store import SceneStore
from tasks.model_cache import get_model

if TYPE_CHECKING:  # the schemas live with the flows' config; tasks only read them
    from flows.schema import InputConfig, PoseConfig, ReconstructConfig

_PACKAGES = ("da3pipe", "torch", "numpy", "prefect", "hydra-core", "zarr", "pycolmap", "trimesh", "gsplat")


def retry_unless_user_error(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect retry condition: a user error (bad input, full disk, missing weights) fails at once, others retry."""
    return not is_user_error(state.result(raise_on_failure=False))


def package_versions() -> dict[str, str]:
    """Versions of the packages that shape the outputs."""
    out = {}
    for name in _PACKAGES:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "not installed"
    return out


@task(name="ingest", task_run_name="ingest-{name}", cache_policy=NO_CACHE)
def ingest(name: str, source: str, input_cfg: InputConfig, storage_options: dict[str, Any]) -> SceneInput:
    """Find the scene's views (image, folder, video frames at input.fps, COLMAP cameras) and hash its files.

    The manifest's ``source`` is the resolved local path or the URL, so the skip decision sees where input came from.
    """
    started = time.perf_counter()
    local = localize(source, storage_options)
    scene = discover_scene(
        local, tuple(input_cfg.image_extensions), input_cfg.sparse_subdir, input_cfg.fps, input_cfg.max_frames
    )
    scene.source = source if is_remote(source) else str(Path(source).resolve())  # where it came from, canonical
    get_run_logger().info(
        "ingest %s: %d %s views in %.2fs", name, len(scene), scene.kind, time.perf_counter() - started
    )
    return scene


@task(name="inference", task_run_name="inference-{name}", cache_policy=NO_CACHE)
def infer(name: str, scene: SceneInput, store: SceneStore, cfg: ReconstructConfig, attrs: dict[str, Any]) -> SceneStore:
    """Decode the views, run the model (pose-conditioned for COLMAP input), write them to ``store`` (a staged one)."""
    logger = get_run_logger()
    started = time.perf_counter()
    views = load_views(scene)
    decoded = time.perf_counter()
    loaded = get_model(cfg.model)
    with loaded.lock:
        forward_started = time.perf_counter()
        result = loaded.model.infer(
            views,
            extrinsics=scene.extrinsics,
            intrinsics=scene.intrinsics,
            infer_gs=cfg.infer_gs,
            use_ray_pose=cfg.pose.use_ray_pose,
            ref_view_strategy=cfg.ref_view_strategy.value,
            process_res=cfg.processing.process_res,
            process_res_method=cfg.processing.method.value,
            export_feat_layers=list(cfg.export_feat_layers) or None,
        )
        model_seconds = time.perf_counter() - forward_started
    pred = result.prediction
    pred.source_names = scene.names
    # Only now, with every view decoded and inferred, is the store written: bad input leaves nothing behind.
    store.reset(
        {
            **attrs,
            "model": loaded.info,
            "versions": package_versions(),
            "inputs": scene.manifest(),
            "worker": {"host": socket.gethostname(), "pid": os.getpid()},
            "started_at": time.time(),
        }
    )
    frame_index = scene.frame_indices if scene.frame_indices is not None else np.arange(len(scene))
    stamps = None if scene.timestamps is None else np.asarray(scene.timestamps, dtype=np.float64)
    store.write_prediction(pred, frame_index=np.asarray(frame_index), timestamps=stamps)
    if scene.extrinsics is not None:  # the input cameras, intrinsics in processed pixels (used by align_poses)
        store.write_array(
            "input_extrinsics",
            scene.extrinsics[:, :3, :4].astype(np.float32),
            ["frame", "ext_row", "ext_col"],
            chunk0=len(pred),
        )
        store.write_array("input_intrinsics", result.input_intrinsics, ["frame", "k_row", "k_col"], chunk0=len(pred))
    store.record_stage("decode", decoded - started)
    store.record_stage("inference", model_seconds, ref_view_idx=pred.ref_view_idx)
    logger.info(
        "inference %s: %d views at %dx%d in %.2fs (decode %.2fs), reference view %s",
        name,
        len(pred),
        pred.depth.shape[2],
        pred.depth.shape[1],
        model_seconds,
        decoded - started,
        pred.ref_view_idx,
    )
    return store


@task(name="align-poses", task_run_name="align-poses-{name}", cache_policy=NO_CACHE)
def align_poses(name: str, scene: SceneInput, store: SceneStore, pose: PoseConfig, inference_hash: str) -> SceneStore:
    """Sim(3)-align the predicted cameras to the input poses (COLMAP input), rewriting depth and cameras."""
    from da3core.pose_align import align_prediction_to_input

    started = time.perf_counter()
    info: dict[str, Any] = {"inference_hash": inference_hash, "aligned": False}
    if scene.extrinsics is not None:
        pred = store.read_prediction(features=False, gaussians=False)
        aligned = align_prediction_to_input(
            pred,
            store.read_array("input_extrinsics"),
            store.read_array("input_intrinsics"),
            pose.align_to_input_ext_scale,
        )
        store.write_array("depth", aligned.depth, ["frame", "y", "x"])
        store.write_array(
            "extrinsics",
            np.asarray(aligned.extrinsics, np.float32)[:, :3, :4],
            ["frame", "ext_row", "ext_col"],
            chunk0=len(aligned),
        )
        store.write_array(
            "intrinsics", np.asarray(aligned.intrinsics, np.float32), ["frame", "k_row", "k_col"], chunk0=len(aligned)
        )
        info.update(aligned=True, align_to_input_ext_scale=pose.align_to_input_ext_scale)
    store.record_stage("align", time.perf_counter() - started, **info)
    get_run_logger().info("align %s: %s", name, "aligned to input poses" if info["aligned"] else "no input poses")
    return store


@task(
    name="export",
    task_run_name="export-{fmt}-{name}",
    cache_policy=NO_CACHE,
    retries=1,
    retry_condition_fn=retry_unless_user_error,
)
def export_format(
    name: str, store: SceneStore, fmt: str, export_dir: str, options: dict[str, Any]
) -> tuple[list[str], float]:
    """Write one export format from the store (no inference needed); its files and seconds. A scene streamed in
    several chunks is read a frame at a time (da3core.export.long_scene), any other scene at once, as inferred.

    Nothing is written to the store: the caller records the timing once the exports are published."""
    from da3core.export import FORMATS, export

    started = time.perf_counter()
    long_scene = len(store.attrs().get("stages", {}).get("streaming", {}).get("chunks", [])) > 1
    pred = store.read_prediction(
        features=FORMATS[fmt].reads_features, gaussians=FORMATS[fmt].reads_gaussians, lazy=long_scene
    )
    written = export(pred, [fmt], export_dir, storage_options=store.storage_options, **options)
    paths, seconds = written.get(fmt, []), time.perf_counter() - started
    get_run_logger().info("export %s %s: %d files in %.2fs", name, fmt, len(paths), seconds)
    return paths, seconds
