"""Checks a command line runs before Prefect starts: every mistake that shows without running the flow is one line
at once, with no flow run created. The flows meet the same mistakes again if they get that far (a deployment's run,
a remote input), and report them as user errors from inside the run.

What is checked: the device, the weights (present locally, cached, or the hub reachable; nothing is downloaded), the
input (what it is, every image's header, the video's streams, the COLMAP model), and the output location (writable,
and locally enough free space for the smallest result the run can write).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from da3core.errors import UserError
from da3core.io.storage import check_free_space, check_writable, is_remote

if TYPE_CHECKING:
    from flows.schema import InputConfig, ModelConfig, VideoDepthConfig


class OutputError(UserError, ValueError):
    """An output location the run must not write to."""


# The store holds depth and confidence (float32) and the processed image per view: at least 2 bytes per processed
# pixel even after compression, and the processed image has at most process_res**2 pixels.
MIN_STORE_BYTES_PER_PIXEL = 2


def check_device(requested: str, key: str = "model.device") -> None:
    """An accelerator asked for by name exists here (DeviceError naming ``key`` otherwise)."""
    if requested in ("auto", "cpu"):  # always resolve; asking torch would load it, a second, in runs that skip
        return
    from tasks.model_cache import pick_device

    pick_device(requested, key)


def check_model(model: ModelConfig) -> None:
    """The device exists here and pretrained weights can be had (model.path, else the preset's hub id)."""
    from da3core.model.model_dir import check_model_source
    from da3core.model.presets import get_preset

    check_device(model.device.value)
    if model.weights.value == "pretrained":
        check_model_source(model.path or get_preset(model.preset).hub_id)


def check_video_model(cfg: VideoDepthConfig) -> None:
    """The device exists here and the Video Depth Anything checkpoint can be had (nothing downloaded)."""
    from da3core.video_depth.loading import resolve_checkpoint
    from tasks.model_cache import official_vda_checkpoint

    check_device(cfg.device.value, "device")
    if cfg.weights != "random":
        resolve_checkpoint(
            cfg.weights or official_vda_checkpoint(cfg.encoder, cfg.metric), cfg.encoder, cfg.metric, download=False
        )


def check_scene(source: str, input_cfg: InputConfig) -> int | None:
    """Classify a local input as the flow will (image headers, video streams, COLMAP model); its view count.

    None for a remote input, which the flow fetches and checks itself.
    """
    from da3core.io.inputs import discover_scene

    if is_remote(source):
        return None
    scene = discover_scene(
        source,
        tuple(input_cfg.image_extensions),
        input_cfg.sparse_subdir,
        input_cfg.fps,
        input_cfg.max_frames,
        hash_files=False,
    )
    return len(scene)


def check_input_cameras(kind: str, preset: str) -> None:
    """Refuse a COLMAP dataset, whose cameras condition the model, for a preset that takes no cameras."""
    from da3core.io.inputs import InputError
    from da3core.model.presets import PRESETS

    if kind == "colmap" and not PRESETS[preset].net.any_view:
        raise InputError(
            f"the scene is a COLMAP dataset, whose cameras condition the model, but {preset} takes no cameras; "
            "use an any-view preset (model=da3-large), or give its images/ folder as the scene"
        )


def _normal(location: str) -> str:
    from pathlib import Path

    return location.rstrip("/") if is_remote(location) else str(Path(location).expanduser().resolve())


def _under(path: str, folder: str) -> str | None:
    """``path`` relative to ``folder`` ("" when equal), None when it lies elsewhere (both normalised)."""
    if path == folder:
        return ""
    prefix = folder.rstrip("/") + "/"
    return path[len(prefix) :] if path.startswith(prefix) else None


def check_apart(output: str, source: str, what: str) -> None:
    """Refuse an output folder that is the input folder or lies inside it: the exports (a COLMAP model, scene.jpg)
    would overwrite the input's own files or join it as views."""
    if _under(_normal(output), _normal(source)) is not None:
        raise OutputError(
            f"{what}={output} is the input or lies inside it ({source}): the outputs would overwrite or join the "
            f"input's files; choose an output folder outside the input"
        )


def check_outside_dataset(output_root: str, dataset: str) -> None:
    """Refuse a batch's storage.root inside its dataset (but for a hidden or ``_`` folder, which is no scene): the
    next run would take the outputs for scenes."""
    rel = _under(_normal(output_root), _normal(dataset))
    if rel is not None and not rel.startswith((".", "_")):
        raise OutputError(
            f"storage.root={output_root} is the dataset folder {dataset} or lies inside it: the next run would "
            "take its outputs for scenes; choose a folder outside it (or one inside whose name starts with '_')"
        )


def check_output(location: str, storage_options: dict[str, Any], what: str, needed_bytes: int = 0) -> None:
    """``location`` can be written (a probe file) and, locally, has ``needed_bytes`` free."""
    check_writable(location, storage_options, what)
    check_free_space(location, needed_bytes, what)


def store_bytes(n_views: int | None, pixels_per_view: int) -> int:
    """The least a complete store of ``n_views`` views of ``pixels_per_view`` processed pixels takes (0: unknown)."""
    return (n_views or 0) * pixels_per_view * MIN_STORE_BYTES_PER_PIXEL


def check_video(source: str, cfg: VideoDepthConfig) -> int:
    """Open a local video as the flow will (no video stream, empty or damaged files fail here); the least its store
    takes in bytes (0 for a remote video, which the flow fetches and checks itself)."""
    from da3core.io import video as video_io
    from tasks.video_depth import check_local_video

    check_local_video(source)
    if is_remote(source):
        return 0
    meta = video_io.probe_video(source)
    if meta.n_frames <= 0:
        raise video_io.VideoError(f"{source} has no video frames; check the file is a complete, readable video")
    n = len(
        video_io.sample_frame_indices(
            meta.n_frames,
            meta.fps if meta.fps > 0 else 30.0,
            cfg.target_fps,
            cfg.max_frames if cfg.max_frames > 0 else None,
            integer_stride=True,
        )
    )
    height, width = video_io.fit_max_res(meta.height, meta.width, cfg.max_res)
    return store_bytes(n, height * width)
