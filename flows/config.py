"""Typed Hydra configuration: dataclass schemas for conf/, composition from overrides, validation, hashing.

Flows compose the config with Hydra's compose API (no @hydra.main: it would take over logging and
the working directory), so a flow's only parameter is a JSON-friendly list of override strings.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Optional

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.errors import HydraException
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from da3core.model.presets import PRESETS

REPO_ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = REPO_ROOT / "conf"
OmegaConf.register_new_resolver("da3.repo", lambda: str(REPO_ROOT), replace=True)


class ConfigError(ValueError):
    """A bad config key or value; the message names the key and the allowed values."""


class ResizeMethod(Enum):
    upper_bound_resize = "upper_bound_resize"
    upper_bound_crop = "upper_bound_crop"
    lower_bound_resize = "lower_bound_resize"
    lower_bound_crop = "lower_bound_crop"


class RefViewStrategy(Enum):
    first = "first"
    middle = "middle"
    saddle_balanced = "saddle_balanced"
    saddle_sim_range = "saddle_sim_range"


class Device(Enum):
    auto = "auto"  # cuda, then mps, then cpu
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


class Precision(Enum):
    auto = "auto"  # the model's documented default for the device
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


class Weights(Enum):
    pretrained = "pretrained"  # model.path, else the preset's hub id
    random = "random"  # seeded random init for smoke runs; stamped into every output


class Runner(Enum):
    thread = "thread"
    dask = "dask"


@dataclass
class ModelConfig:
    preset: str = MISSING  # chosen with model=<preset>; its model card (hub id) comes from da3core.model.presets
    path: Optional[str] = None  # local model dir (config.json + model.safetensors) or a hub id
    weights: Weights = Weights.pretrained
    seed: int = 0  # for weights=random
    device: Device = Device.auto
    precision: Precision = Precision.auto


@dataclass
class ProcessingConfig:
    process_res: int = 504
    method: ResizeMethod = ResizeMethod.upper_bound_resize


@dataclass
class PoseConfig:
    use_ray_pose: bool = False
    align_to_input_ext_scale: bool = True


@dataclass
class InputConfig:
    fps: float = 1.0  # video sampling rate; <= 0 keeps every frame
    max_frames: Optional[int] = None  # the first N views of a folder or video; None or <= 0: all
    image_extensions: list[str] = field(default_factory=lambda: ["png", "jpg", "jpeg", "webp", "bmp", "tiff", "tif"])
    sparse_subdir: str = ""  # COLMAP model folder; empty tries sparse/0 then sparse


@dataclass
class StorageConfig:
    root: str = "outputs"  # local folder or fsspec URL (s3://bucket/prefix)
    options: dict[str, Any] = field(default_factory=dict)  # fsspec storage options, e.g. client_kwargs.endpoint_url
    lock_timeout: float = 0.0  # seconds to wait while another run writes the same scene; 0 fails at once naming it


@dataclass
class ReconstructConfig:
    scene: str = "sample"  # a name from `scenes`, a path, or an s3:// URL
    export: str = "glb"  # formats joined by '+', e.g. glb+gs_video
    model: ModelConfig = field(default_factory=ModelConfig)
    processing: ProcessingConfig = field(default_factory=ProcessingConfig)
    ref_view_strategy: RefViewStrategy = RefViewStrategy.saddle_balanced
    pose: PoseConfig = field(default_factory=PoseConfig)
    infer_gs: bool = False
    export_feat_layers: list[int] = field(default_factory=list)
    input: InputConfig = field(default_factory=InputConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    output_dir: Optional[str] = None  # the scene's output folder; default <storage.root>/<scene name>
    exporters: dict[str, Any] = field(default_factory=dict)  # per-format options, exporters.<format>.<key>
    force: bool = False  # recompute even when a complete store for the same config exists
    scenes: dict[str, str] = field(default_factory=dict)
    datasets: dict[str, str] = field(default_factory=dict)


@dataclass
class BatchConfig(ReconstructConfig):
    dataset: str = MISSING  # a name from `datasets`, a folder, or an s3:// prefix
    concurrency: int = 1  # scenes processed at once
    runner: Runner = Runner.thread
    dask_address: Optional[str] = None  # existing scheduler; None starts a local cluster
    dask_workers: int = 2


@dataclass
class VideoStorageConfig:
    options: dict[str, Any] = field(default_factory=dict)  # fsspec options for s3:// videos and output folders
    lock_timeout: float = 0.0  # seconds to wait while another run writes the same output; 0 fails at once naming it


@dataclass
class VideoDepthConfig:
    """Video Depth Anything on one video; option names follow Annolid's ``run_video_depth_anything``."""

    video: str = MISSING  # a video path or an s3:// URL
    output_dir: Optional[str] = None  # default: next to the video (videos/mice.mp4 -> videos/mice/)
    encoder: str = "vits"  # vits | vitb | vitl
    metric: bool = False  # metric checkpoints output metres; relative ones output relative disparity
    weights: Optional[str] = None  # checkpoint file/dir or name; "random" = seeded random weights (smoke runs)
    seed: int = 0  # for weights=random
    device: Device = Device.auto
    fp32: bool = False  # full precision on CUDA too (off CUDA inference always runs in fp32)
    input_size: int = 518  # network input short side
    max_res: int = 1280  # cap on the processed frame's long side; <= 0 keeps the source size
    target_fps: float = -1  # frame stride round(fps / target_fps); <= 0 keeps every frame
    max_frames: int = -1  # Annolid's max_len; <= 0: all
    streaming: bool = True  # one frame at a time (Annolid's default) instead of 32-frame windows
    windows_per_batch: int = 1  # windowed mode: windows per forward pass
    grayscale: bool = False
    save_depth_video: bool = False  # <stem>_vis.mp4
    save_depth_frames: bool = False  # depth_frames/depth_00000.png
    save_point_clouds: bool = False  # point_clouds/point_0000.csv
    save_npz: bool = False  # <stem>_depths.npz
    save_exr: bool = False  # <stem>_depths_exr/frame_00000.exr
    focal_length_x: float = 470.4  # point-cloud intrinsics, pixels of the processed frame
    focal_length_y: float = 470.4
    storage: VideoStorageConfig = field(default_factory=VideoStorageConfig)
    force: bool = False  # recompute even when a complete store for the same config and video exists


ConfigStore.instance().store(name="reconstruct_schema", node=ReconstructConfig)
ConfigStore.instance().store(name="batch_schema", node=BatchConfig)
ConfigStore.instance().store(name="video_depth_schema", node=VideoDepthConfig)
# The `model` group is the preset registry itself: `model=<preset>` selects one; nothing is repeated in YAML.
for _preset in PRESETS:
    ConfigStore.instance().store(group="model", name=_preset, node=ModelConfig(preset=_preset))

# Hydra's compose API initialises a process-wide singleton: concurrent compositions (the backend's request
# threads validating jobs while its worker runs a flow) must take turns.
_COMPOSE_LOCK = threading.Lock()

# Keys that change what inference computes (the rest only changes where or how things are written).
_INFERENCE_KEYS = ("model", "processing", "ref_view_strategy", "pose", "infer_gs", "export_feat_layers", "input")


def _compose(config_name: str, overrides: list[str] | None) -> DictConfig:
    with _COMPOSE_LOCK, initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name=config_name):
        return compose(config_name=config_name, overrides=list(overrides or []))


def load_config(config_name: str, overrides: list[str] | None = None) -> Any:
    """Compose ``conf/<config_name>.yaml`` with Hydra overrides into its typed dataclass and validate it."""
    try:
        obj = OmegaConf.to_object(_compose(config_name, overrides))
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(describe_config_error(exc)) from exc
    (validate_video_depth if isinstance(obj, VideoDepthConfig) else validate)(obj)
    return obj


def composed_data(config_name: str, overrides: list[str] | None = None) -> dict[str, Any]:
    """The composed config as plain data with interpolations left as written (to compare two compositions)."""
    try:
        return OmegaConf.to_container(_compose(config_name, overrides), resolve=False, enum_to_str=True)
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(describe_config_error(exc)) from exc


def describe_config_error(exc: BaseException) -> str:
    """Hydra/OmegaConf errors as one line: the offending key, the problem and the allowed values."""
    cause = exc.__cause__ or exc
    lines = [ln.strip() for ln in str(cause).splitlines() if ln.strip()]
    full_key = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("full_key:")), None)
    head = lines[0] if lines else cause.__class__.__name__
    if "Available options" in str(exc):
        options = [ln for ln in lines[lines.index(next(l for l in lines if l.startswith("Available options"))) + 1:]
                   if not ln.startswith(("Config search path", "provider="))]
        head = f"{head}; available: {', '.join(options)}"
    if head.startswith("Key '") and "not in" in head:
        head += " (check the spelling; see `--cfg` for all keys)"
    return f"config error at {full_key}: {head}" if full_key else f"config error: {head}"


def validate(cfg: ReconstructConfig) -> None:
    """Checks the schema cannot express: value ranges and export formats against the model."""
    from da3core.export import FORMATS, check_feature_layers, check_formats, parse_formats
    from da3core.model.presets import has_gaussian_head

    if cfg.model.preset not in PRESETS:
        raise ConfigError(f"config error at model.preset: unknown preset '{cfg.model.preset}'; "
                          f"available: {', '.join(sorted(PRESETS))}")
    _check_lock_timeout(cfg.storage.lock_timeout)
    if cfg.processing.process_res < 14:
        raise ConfigError(f"config error at processing.process_res: {cfg.processing.process_res} is below one patch (14)")
    if cfg.infer_gs and not has_gaussian_head(cfg.model.preset):
        with_head = " or ".join(f"model={p}" for p in PRESETS if has_gaussian_head(p))
        raise ConfigError(f"config error at infer_gs: preset {cfg.model.preset} has no Gaussian head; use {with_head}")
    try:
        check_feature_layers(cfg.export_feat_layers, cfg.model.preset)
    except ValueError as exc:
        raise ConfigError(f"config error at export_feat_layers: {exc}") from exc
    try:
        formats = parse_formats(cfg.export)
        check_formats(formats, has_conf=PRESETS[cfg.model.preset].has_conf, has_gaussians=cfg.infer_gs,
                      has_features=bool(cfg.export_feat_layers), process_res_method=cfg.processing.method.value)
    except ValueError as exc:
        raise ConfigError(f"config error at export: {exc}") from exc
    unknown = set(cfg.exporters) - set(formats)
    if unknown:
        raise ConfigError(f"config error at exporters: options for {sorted(unknown)} but export={cfg.export}")
    for name, options in cfg.exporters.items():
        try:
            FORMATS[name].check_options(dict(options))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"config error at exporters.{name}: {exc}") from exc


def validate_video_depth(cfg: VideoDepthConfig) -> None:
    """Value checks for the video_depth config: encoder name and numeric ranges."""
    from da3core.video_depth import ENCODERS

    if cfg.encoder not in ENCODERS:
        raise ConfigError(f"config error at encoder: unknown encoder '{cfg.encoder}'; available: {', '.join(ENCODERS)}")
    _check_lock_timeout(cfg.storage.lock_timeout)
    if cfg.input_size < 14:
        raise ConfigError(f"config error at input_size: {cfg.input_size} is below one patch (14)")
    if cfg.windows_per_batch < 1:
        raise ConfigError(f"config error at windows_per_batch: {cfg.windows_per_batch}; use 1 or more")
    if min(cfg.focal_length_x, cfg.focal_length_y) <= 0:
        raise ConfigError("config error at focal_length_x/focal_length_y: focal lengths must be positive pixels")


def _check_lock_timeout(seconds: float) -> None:
    if seconds < 0:
        raise ConfigError(f"config error at storage.lock_timeout: {seconds}; use 0 (fail at once) or a number of seconds")


def resolved(cfg: ReconstructConfig) -> dict[str, Any]:
    """The config as plain JSON-ready data (enums as strings)."""
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True, enum_to_str=True)


def config_hashes(cfg: ReconstructConfig) -> tuple[str, str]:
    """(inference hash, full hash): the first covers what inference computes, the second adds the exports."""
    data = resolved(cfg)
    inference = {k: data[k] for k in _INFERENCE_KEYS}
    inference["model"] = {k: v for k, v in data["model"].items() if k not in ("device",)}
    max_frames = data["input"]["max_frames"]  # None, 0 and -1 all mean every frame: one hash
    inference["input"] = {**data["input"], "max_frames": max_frames if max_frames and max_frames > 0 else None}
    full = {**inference, "export": data["export"], "exporters": data["exporters"]}
    digest = lambda d: hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]  # noqa: E731
    return digest(inference), digest(full)
