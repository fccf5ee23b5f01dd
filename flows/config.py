"""Hydra configuration: compose conf/ with overrides into the typed schemas (flows.schema), validate, hash.

Every run composes its config once (``load_config``) and hands the typed object on: CLI → flow → tasks →
backend jobs. Flows use Hydra's compose API (no @hydra.main: it would take over logging and the working
directory), so they also run inside a backend, a notebook or another flow.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import threading
from collections.abc import Callable
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any, cast, get_type_hints

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from da3core.errors import UserError
from da3core.model.presets import PRESETS
from flows.schema import (
    BatchConfig,
    Device,
    EvaluateConfig,
    InputConfig,
    Predictor,
    ReconstructConfig,
    RefViewStrategy,
    ResizeMethod,
    VideoDepthConfig,
    Weights,
    register,
)

__all__ = [
    "BatchConfig",
    "ConfigError",
    "Device",
    "EvaluateConfig",
    "ReconstructConfig",
    "RefViewStrategy",
    "ResizeMethod",
    "VideoDepthConfig",
    "Weights",
    "composed_data",
    "config_hashes",
    "load_config",
    "print_config",
    "resolved",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = REPO_ROOT / "conf"
OmegaConf.register_new_resolver("da3.repo", lambda: str(REPO_ROOT), replace=True)
register()


class ConfigError(UserError, ValueError):
    """A bad config key or value; the message names the key and the allowed values."""


# Hydra's compose API initialises a process-wide singleton: concurrent compositions (the backend's request
# threads validating jobs while its worker runs a flow) must take turns.
_COMPOSE_LOCK = threading.Lock()

# Sections whose keys are open (per-format options, fsspec options, catalog names): a bare override of a key in
# them adds or replaces it, as ``++`` does, where Hydra would demand ``+`` for a key the YAML does not hold.
OPEN_SECTIONS = ("exporters.", "storage.options.", "scenes.", "datasets.")


# key=~ or key=~/...: a shell's home, which a shell that does not expand it after `=` (zsh) or quoting leaves as
# written, and which Hydra's lexer refuses; expanded here as bash would.
HOME_VALUE = re.compile(r"^(\+{0,2}[\w.@/-]+)=(~(?:/.*)?)$")


def expand_home(override: str) -> str:
    """``key=~/x`` as ``key=<home>/x`` (quoted for Hydra where needed); any other override as given."""
    from flows.cli_flags import hydra_value

    match = HOME_VALUE.match(override)
    return f"{match[1]}={hydra_value(os.path.expanduser(match[2]))}" if match else override


def _compose(config_name: str, overrides: list[str] | None) -> DictConfig:
    overrides = [expand_home(o) for o in overrides or []]
    overrides = [f"++{o}" if o.startswith(OPEN_SECTIONS) else o for o in overrides]
    with _COMPOSE_LOCK, initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name=config_name):
        return compose(config_name=config_name, overrides=overrides)


def load_config(
    config_name: str, overrides: list[str] | None = None, inspect: Callable[[dict[str, Any]], None] | None = None
) -> Any:
    """Compose ``conf/<config_name>.yaml`` with Hydra overrides into its typed dataclass and validate it.

    A ``defaults_file=<yaml>`` override (video_depth) puts the file's ``video_depth_anything:`` section (Annolid's
    settings) under the other overrides: the command line wins over the file, the file over conf/. ``inspect``
    gets the composition first, as :func:`composed_data` gives it, and may refuse it by raising (before the
    typed config exists, and without a second composition).
    """
    overrides = [expand_home(o) for o in overrides or []]
    files = [o for o in overrides if o.startswith("defaults_file=")]
    try:
        if files and config_name == "video_depth":  # elsewhere Hydra refuses the unknown key
            from hydra.core.override_parser.overrides_parser import OverridesParser

            path = OverridesParser.create().parse_override(files[-1]).value()
            overrides = annolid_overrides(read_defaults_file(str(path))) + overrides
        composed = _compose(config_name, overrides)
        if inspect is not None:
            inspect(cast(dict[str, Any], OmegaConf.to_container(composed, resolve=False, enum_to_str=True)))
        obj = OmegaConf.to_object(composed)
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(describe_config_error(exc)) from exc
    _validator(config_name)(obj)
    return obj


def _validator(config_name: str) -> Callable[[Any], None]:
    validators: dict[str, Callable[[Any], None]] = {"video_depth": validate_video_depth, "evaluate": validate_evaluate}
    return validators.get(config_name, validate)


# Annolid's names for video_depth keys that are spelled differently here, and its GUI-only settings (ignored).
ANNOLID_NAMES = {"input_video": "video", "max_len": "max_frames", "checkpoint_root": "weights"}
ANNOLID_GUI_ONLY = ("show_preview",)


def read_defaults_file(path: str) -> dict[str, Any]:
    """The ``video_depth_anything:`` section of an Annolid settings file (e.g. ~/.labelmerc), or the whole file."""
    import yaml

    file = Path(path).expanduser()
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"config error at defaults_file: cannot read {file}: {str(exc).splitlines()[0]}") from exc
    section = data.get("video_depth_anything", data) if isinstance(data, dict) else None
    if not isinstance(section, dict):
        raise ConfigError(f"config error at defaults_file: {file} holds no video_depth_anything: mapping")
    return section


def annolid_overrides(options: dict[str, Any]) -> list[str]:
    """Hydra overrides for video_depth from options in Annolid's names (``max_len``, ``checkpoint_root``, ...)."""
    if options.get("include_region_labels"):
        raise ConfigError(
            "config error at include_region_labels: region labels from Annolid tracking results are "
            "not supported; set it to false"
        )
    return [
        f"{ANNOLID_NAMES.get(key, key)}={_override_value(value)}"
        for key, value in options.items()
        if key not in ANNOLID_GUI_ONLY and key != "include_region_labels"
    ]


def _override_value(value: Any) -> str:
    """A Python value in Hydra override syntax (strings quoted verbatim, so paths with '=' or ',' stay one value)."""
    from flows.cli_flags import hydra_quote

    if isinstance(value, (bool, type(None))):
        return json.dumps(value)  # true, false, null
    return repr(value) if isinstance(value, (int, float)) else hydra_quote(str(value))


def print_config(config_name: str, argv: list[str]) -> None:
    """``--cfg [job|all] [overrides]``: print the composed config (``???`` marks a value still to be given)."""
    if argv[:1] == ["hydra"]:
        raise ConfigError(
            "--cfg hydra: these flows compose their config with Hydra's compose API and have no Hydra "
            "runtime config; use --cfg or --cfg job"
        )
    overrides = argv[1:] if argv[:1] in (["job"], ["all"]) else argv
    try:
        cfg = _compose(config_name, overrides)
        if OmegaConf.missing_keys(cfg):  # still printable: check what is there, show the rest as ???
            _validator(config_name)(cfg)
            text = OmegaConf.to_yaml(cfg)
        else:
            text = OmegaConf.to_yaml(resolved(load_config(config_name, overrides)))
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(describe_config_error(exc)) from exc
    print(text, end="")


def composed_data(config_name: str, overrides: list[str] | None = None) -> dict[str, Any]:
    """The composed config as plain data with interpolations left as written (to compare two compositions)."""
    try:
        return cast(
            dict[str, Any], OmegaConf.to_container(_compose(config_name, overrides), resolve=False, enum_to_str=True)
        )
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(describe_config_error(exc)) from exc


def describe_config_error(exc: BaseException) -> str:
    """Hydra/OmegaConf errors as one line: the offending key, the problem and the allowed values."""
    cause = exc.__cause__ or exc
    lines = [ln.strip() for ln in str(cause).splitlines() if ln.strip()]
    full_key = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("full_key:")), None)
    head = lines[0] if lines else cause.__class__.__name__
    if "Available options" in str(exc):
        options = [
            ln
            for ln in lines[lines.index(next(x for x in lines if x.startswith("Available options"))) + 1 :]
            if not ln.startswith(("Config search path", "provider="))
        ]
        head = f"{head}; available: {', '.join(options)}"
    if head.startswith("Key '") and "not in" in head:
        head += " (check the spelling; see `--cfg` for all keys)"
    if "is not a ListConfig" in head:
        head += " (write a list in brackets, e.g. key=[a,b] or key=[a])"
    if head.startswith("LexerNoViableAltException: "):
        written = head.removeprefix("LexerNoViableAltException: ")
        head = f"cannot read the override {written}: quote its value, key='...' (or key=\"...\" if it holds a ')"
    if head.startswith("Ambiguous value for argument"):
        head += " (a comma makes a sweep: add -m for one job per value, or quote the value)"
    if head.startswith("Cannot convert 'list' to string"):
        head += " (give one value" + (
            "; join several formats with +, e.g. export=glb+ply)" if full_key == "export" else ")"
        )
    for wrong, fix in (
        ("to Integer", "a whole number"),
        ("to Float", "a number"),
        ("valid bool (type str)", "true or false"),
    ):
        if head.endswith(wrong):
            head += f" (write {fix})"
    return f"config error at {full_key}: {head}" if full_key else f"config error: {head}"


def check_numbers(value: Any, key: str = "") -> None:
    """Refuse a NaN or infinite number anywhere in a config (``storage.lock_timeout=inf``, wait for ever, excepted):
    every range check would let NaN through, as no comparison with it holds."""
    if is_dataclass(value):
        for f in fields(value):
            check_numbers(getattr(value, f.name), f"{key}.{f.name}" if key else f.name)
    elif isinstance(value, dict):
        for name, item in value.items():
            check_numbers(item, f"{key}.{name}")
    elif isinstance(value, (list, tuple)):
        for item in value:
            check_numbers(item, key)
    elif isinstance(value, float) and not math.isfinite(value) and not (key.endswith("lock_timeout") and value > 0):
        raise ConfigError(f"config error at {key}: {value} is not a number; give a finite value")


def validate(cfg: ReconstructConfig) -> None:
    """Checks the schema cannot express: value ranges and export formats against the model."""
    from da3core.export import FORMATS, check_feature_layers, check_formats, parse_formats
    from da3core.model.presets import has_gaussian_head

    check_numbers(cfg)
    if cfg.model.preset not in PRESETS:
        raise ConfigError(
            f"config error at model.preset: unknown preset '{cfg.model.preset}'; "
            f"available: {', '.join(sorted(PRESETS))}"
        )
    _check_lock_timeout(cfg.storage.lock_timeout)
    # a DictConfig (--cfg with values still to give) has the key even while its value is missing
    is_batch = "dataset" in cfg.keys() if isinstance(cfg, DictConfig) else hasattr(cfg, "dataset")
    if is_batch and cfg.output_dir:  # batch: one folder for every scene would keep only the last
        raise ConfigError(
            f"config error at output_dir: a batch writes each scene to <storage.root>/<scene>; set "
            f"storage.root={cfg.output_dir} instead of output_dir"
        )
    for key in ("concurrency", "dask_workers"):  # batch only
        if getattr(cfg, key, 1) < 1:
            raise ConfigError(f"config error at {key}: {getattr(cfg, key)}; use 1 or more")
    if cfg.processing.process_res < 14:
        raise ConfigError(
            f"config error at processing.process_res: {cfg.processing.process_res} is below one patch (14)"
        )
    if cfg.infer_gs and not has_gaussian_head(cfg.model.preset):
        with_head = " or ".join(f"model={p}" for p in PRESETS if has_gaussian_head(p))
        raise ConfigError(f"config error at infer_gs: preset {cfg.model.preset} has no Gaussian head; use {with_head}")
    try:
        check_feature_layers(cfg.export_feat_layers, cfg.model.preset)
    except ValueError as exc:
        raise ConfigError(f"config error at export_feat_layers: {exc}") from exc
    try:
        formats = parse_formats(cfg.export)
        check_formats(
            formats,
            has_conf=PRESETS[cfg.model.preset].has_conf,
            has_gaussians=cfg.infer_gs,
            has_features=bool(cfg.export_feat_layers),
            has_cameras=PRESETS[cfg.model.preset].net.any_view,
            process_res_method=cfg.processing.method.value,
        )
    except ValueError as exc:
        raise ConfigError(f"config error at export: {exc}") from exc
    if cfg.streaming.enabled:
        _check_streaming(cfg)
    unknown = set(cfg.exporters) - set(formats)
    if unknown:
        raise ConfigError(f"config error at exporters: options for {sorted(unknown)} but export={cfg.export}")
    for name, options in cfg.exporters.items():
        try:
            FORMATS[name].check_options(dict(options))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"config error at exporters.{name}: {exc}") from exc


def _check_streaming(cfg: ReconstructConfig) -> None:
    """What streaming needs: a valid chunking, cameras to align chunks with, and outputs it can stitch."""
    from da3core.streaming import StreamingInputError, check_chunking
    from da3core.synthetic.long_paths import PATHS

    try:
        check_chunking(cfg.streaming.chunk_size, cfg.streaming.overlap)
    except StreamingInputError as exc:
        raise ConfigError(f"config error at streaming: {exc}") from exc
    if not PRESETS[cfg.model.preset].net.any_view:
        raise ConfigError(
            f"config error at streaming.enabled: preset {cfg.model.preset} predicts no cameras to align "
            "chunks with; use an any-view preset such as model=da3-large"
        )
    if cfg.infer_gs or cfg.export_feat_layers:
        raise ConfigError(
            "config error at streaming.enabled: chunks are not stitched into one set of Gaussians or "
            "features; drop infer_gs / export_feat_layers or turn streaming off"
        )
    predictors = ["model", *(f"synthetic:{path}" for path in PATHS)]
    if cfg.streaming.predictor not in predictors:
        raise ConfigError(
            f"config error at streaming.predictor: unknown predictor '{cfg.streaming.predictor}'; "
            f"available: {', '.join(predictors)}"
        )
    if not -1.0 <= cfg.streaming.loop_min_similarity <= 1.0:
        raise ConfigError(
            f"config error at streaming.loop_min_similarity: {cfg.streaming.loop_min_similarity} is "
            "not a cosine similarity; use a value in [-1, 1]"
        )


def validate_video_depth(cfg: VideoDepthConfig) -> None:
    """Value checks for the video_depth config: encoder name and numeric ranges."""
    from da3core.video_depth import ENCODERS

    check_numbers(cfg)
    if cfg.encoder not in ENCODERS:
        raise ConfigError(f"config error at encoder: unknown encoder '{cfg.encoder}'; available: {', '.join(ENCODERS)}")
    _check_lock_timeout(cfg.storage.lock_timeout)
    if cfg.input_size < 14:
        raise ConfigError(f"config error at input_size: {cfg.input_size} is below one patch (14)")
    if cfg.windows_per_batch < 1:
        raise ConfigError(f"config error at windows_per_batch: {cfg.windows_per_batch}; use 1 or more")
    if min(cfg.focal_length_x, cfg.focal_length_y) <= 0:
        raise ConfigError("config error at focal_length_x/focal_length_y: focal lengths must be positive pixels")


def reconstruct_config(cfg: EvaluateConfig, output_dir: str, posed: bool) -> ReconstructConfig:
    """The reconstruct-flow config that predicts one benchmark scene (its stores hash exactly as that flow's)."""
    return ReconstructConfig(
        scene="benchmark",
        export="",
        model=cfg.model,
        processing=cfg.processing,
        ref_view_strategy=cfg.ref_view_strategy,
        pose=cfg.pose,
        input=InputConfig(sparse_subdir="sparse/0" if posed else ""),
        storage=cfg.storage,
        output_dir=output_dir,
        force=cfg.force,
    )


def validate_evaluate(cfg: EvaluateConfig) -> None:
    """Dataset names, modes, worker counts, the model settings (as the reconstruct flow checks them) and open3d."""
    from da3core.choices import BENCHMARK_DATASETS

    check_numbers(cfg)
    unknown = [name for name in cfg.benchmark if name not in BENCHMARK_DATASETS]
    if unknown or not cfg.benchmark:
        problem = f"unknown dataset {unknown[0]!r}" if unknown else "empty"
        raise ConfigError(f"config error at benchmark: {problem}; choose from [{','.join(BENCHMARK_DATASETS)}]")
    if not cfg.modes:
        raise ConfigError("config error at modes: empty; e.g. modes=[pose,recon_unposed,recon_posed]")
    if cfg.concurrency < 1 or cfg.dask_workers < 1:
        raise ConfigError("config error at concurrency/dask_workers: use 1 or more")
    if cfg.predictor is Predictor.model:
        validate(reconstruct_config(cfg, "unused", posed=False))
    if any(mode.value.startswith("recon") for mode in cfg.modes):
        try:
            import open3d  # noqa: F401  (TSDF fusion and the GT meshes and clouds)
        except ImportError:
            raise ConfigError(
                "config error at modes: recon_unposed/recon_posed need open3d, which is not installed; "
                "pip install -e .[eval] (or leave the recon modes out)"
            ) from None


def _check_lock_timeout(seconds: float) -> None:
    if seconds < 0:
        raise ConfigError(
            f"config error at storage.lock_timeout: {seconds}; use 0 (fail at once) or a number of seconds"
        )


def resolved(cfg: Any) -> dict[str, Any]:
    """A typed config (any flow's) as plain JSON-ready data (enums as strings).

    Its values were resolved when it was typed: a ``${`` still in one is literal text (a folder named so), never
    an interpolation to resolve again."""
    return cast(dict[str, Any], OmegaConf.to_container(OmegaConf.structured(cfg), resolve=False, enum_to_str=True))


def hashed_part(schema: type, data: dict[str, Any], affects: tuple[str, ...], inherited: str = "outputs") -> dict:
    """The keys of ``data`` whose schema mark (flows.schema) is one of ``affects``; sections pass theirs down."""
    hints = get_type_hints(schema)
    out = {}
    for f in fields(schema):
        mark = f.metadata.get("affects", inherited)
        if is_dataclass(hints[f.name]) and isinstance(data[f.name], dict):
            part = hashed_part(hints[f.name], data[f.name], affects, mark)
            if part:
                out[f.name] = part
        elif mark in affects:
            out[f.name] = data[f.name]
    return out


def digest(data: Any) -> str:
    """A short, stable hash of JSON-ready data."""
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def config_hashes(cfg: Any, **extra: Any) -> tuple[str, str]:
    """(inference hash, full hash) of a flow config: what inference computes, and that plus what is written from it.

    ``extra`` joins both (e.g. the content hash of the input the config is applied to).
    """
    data = resolved(cfg)
    inference = {**extra, **hashed_part(type(cfg), data, ("inference",))}
    if "input" in inference:  # None, 0 and -1 all mean every frame: one hash
        max_frames = inference["input"]["max_frames"]
        inference["input"]["max_frames"] = max_frames if max_frames and max_frames > 0 else None
    streaming = inference.get("streaming")  # reconstruct's section (video depth's `streaming` is a plain switch)
    if isinstance(streaming, dict) and not streaming.get("enabled", True):  # its keys change nothing while off
        del inference["streaming"]
    full = {**inference, **hashed_part(type(cfg), data, ("outputs",))}
    return digest(inference), digest(full)
