"""Every flag of the ``da3`` inference commands, declared once: its option, default, help and Hydra override.

The Typer commands (:mod:`flows.cli`), the :class:`InferenceOptions` they fill and the overrides they turn
into (:func:`flows.cli_run.overrides_for`) are all built from :data:`FLAGS`, so adding a flag is one entry here.
Light on purpose: ``da3 --help`` imports it without torch or Prefect.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, make_dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, Optional, TypeAlias

from da3core.export.registry import FORMATS, check_option_ranges
from da3core.model.presets import PRESETS, has_gaussian_head
from flows.schema import Device, RefViewStrategy, ResizeMethod, Weights

MODEL, PROCESSING, EXPORT, BACKEND = "Model", "Processing", "Export", "Backend"
INFERENCE_COMMANDS = ("auto", "image", "images", "video", "colmap")


@dataclass(frozen=True)
class OverrideContext:
    """What a flag's overrides may depend on besides its own value."""

    formats: list[str]  # the chosen export formats
    backend: bool  # overrides for a backend job: only the work, not this machine's paths, devices or model files


Overrides = Callable[[Any, OverrideContext], list[str]]


@dataclass(frozen=True)
class Flag:
    """One option: ``--name`` (Typer declaration), default, help, which commands take it, and its overrides."""

    name: str  # the InferenceOptions field
    type: Any  # the value's type (an Enum for a fixed set of choices)
    default: Any
    help: str
    panel: str
    decls: tuple[str, ...] = ()  # Typer's option declarations; default --<name with dashes>
    commands: tuple[str, ...] = INFERENCE_COMMANDS  # others leave the field None (no such flag)
    overrides: Overrides | None = None  # None: the flag steers the command itself (no config key)
    extra: dict[str, Any] = field(default_factory=dict)  # more typer.Option keywords (envvar, show_default)

    @property
    def option_decls(self) -> tuple[str, ...]:
        """The Typer declarations of the option."""
        return self.decls or (f"--{self.name.replace('_', '-')}",)


def hydra_quote(value: str) -> str:
    """``value`` as a single-quoted Hydra override value that reads back verbatim (no interpolation)."""
    # Hydra unescapes backslashes only before a quote, before '${' and at the end of a quoted string.
    escaped = re.sub(r"(\\*)('|\$\{|$)", lambda m: m.group(1) * 2 + ("\\" + m.group(2) if m.group(2) else ""), value)
    return f"'{escaped}'"


def hydra_value(value: str) -> str:
    """``value`` as an override value: bare when Hydra reads it back as this same string, else quoted."""
    bare = re.fullmatch(r"[\w./~+-]+", value) and not re.fullmatch(
        r"[-+]?[\d.e_+-]*|true|false|null|inf|nan", value, flags=re.IGNORECASE
    )
    return value if bare else hydra_quote(value)


def split_list(text: str) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``."""
    return [t.strip() for t in text.split(",") if t.strip()]


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return str(value.value if isinstance(value, Enum) else value)


def key(name: str) -> Overrides:
    """The flag sets config key ``name`` to its value."""
    return lambda value, ctx: [f"{name}={_text(value)}"]


def _layers(value: str, ctx: OverrideContext) -> list[str]:
    try:
        layers = [int(t) for t in split_list(value)]
    except ValueError:
        from flows.cli_run import CliError

        raise CliError(f"--export-feat expects comma-separated layer indices such as 5,11; got {value!r}") from None
    return [f"export_feat_layers=[{','.join(map(str, layers))}]"]


def _extensions(value: str) -> list[str]:
    """``--image-extensions`` as lower-case extensions without dots; anything else is a CliError (spliced into a
    Hydra list, a bracket or ``${...}`` would be read as Hydra syntax)."""
    given = split_list(value)
    bad = next((e for e in given if not re.fullmatch(r"\.?[A-Za-z0-9_-]+", e)), None)
    exts = [e.lstrip(".").lower() for e in given]
    if bad is not None or not exts:
        from flows.cli_run import CliError

        what = f"{bad!r} is not a file extension" if bad is not None else "no extension given"
        raise CliError(f"--image-extensions {value!r}: {what}; give extensions such as png,jpg,tif")
    return exts


def shared_export(option: str) -> Overrides:
    """An option of every chosen format that takes it (da3core.export's shared options), under that format's name."""

    def overrides(value: Any, ctx: OverrideContext) -> list[str]:
        value = float(value) if option == "conf_thresh_percentile" else value
        try:
            check_option_ranges({option: value})
        except ValueError as exc:
            from flows.cli_run import CliError

            raise CliError(f"--{option.replace('_', '-')} {value}: {exc}") from None
        return [
            f"+exporters.{fmt}.{FORMATS[fmt].shared[option]}={_text(value)}"
            for fmt in ctx.formats
            if option in FORMATS[fmt].shared
        ]

    return overrides


def _local(overrides: Overrides) -> Overrides:
    """Only for a run on this machine (a backend uses its own paths and devices)."""
    return lambda value, ctx: [] if ctx.backend else overrides(value, ctx)


_GS_PRESETS = ", ".join(p for p in PRESETS if has_gaussian_head(p))
FLAGS: tuple[Flag, ...] = (
    Flag(
        "model_dir",
        Optional[str],
        None,
        "Local model dir (config.json + model.safetensors) or Hugging Face hub "
        "id; default: --preset's model card, else the default preset's.",
        MODEL,
    ),
    Flag(
        "preset",
        Optional[str],
        None,
        f"DA3 preset ({', '.join(PRESETS)}); read from the model dir's config.json or the hub id when omitted.",
        MODEL,
        extra={"show_default": "from --model-dir"},
    ),
    Flag(
        "weights",
        Weights,
        Weights.pretrained,
        "pretrained, or seeded random weights for smoke runs (stamped into every output).",
        MODEL,
    ),
    Flag(
        "device", Device, Device.auto, "auto = cuda, else mps, else cpu.", MODEL, overrides=_local(key("model.device"))
    ),
    Flag("export_dir", str, "debug", "Where the zarr store and exports go.", EXPORT),
    Flag("export_format", str, "glb", f"Formats joined by '-' or '+': {' '.join(FORMATS)}.", EXPORT),
    Flag(
        "auto_cleanup",
        bool,
        False,
        "Replace a non-empty export dir without asking (else: ask on a terminal, fail otherwise).",
        EXPORT,
    ),
    Flag(
        "conf_thresh_percentile",
        float,
        40.0,
        "Drop points below this confidence percentile (glb, ply, colmap, nerfstudio).",
        EXPORT,
        overrides=shared_export("conf_thresh_percentile"),
    ),
    Flag(
        "num_max_points",
        int,
        1_000_000,
        "Point budget (glb, ply, colmap, nerfstudio).",
        EXPORT,
        overrides=shared_export("num_max_points"),
    ),
    Flag(
        "show_cameras",
        bool,
        True,
        "Draw camera frustums in the GLB.",
        EXPORT,
        decls=("--show-cameras/--no-show-cameras",),
        overrides=shared_export("show_cameras"),
    ),
    Flag("feat_vis_fps", int, 15, "Frame rate of the feat_vis video.", EXPORT, overrides=shared_export("feat_vis_fps")),
    Flag(
        "export_feat",
        str,
        "",
        "Backbone layers to export as features, comma-separated (e.g. 5,11; for feat_vis).",
        EXPORT,
        overrides=_layers,
    ),
    Flag(
        "process_res",
        int,
        504,
        "Processing resolution (multiple of 14).",
        PROCESSING,
        overrides=key("processing.process_res"),
    ),
    Flag(
        "process_res_method",
        ResizeMethod,
        ResizeMethod.upper_bound_resize,
        "How images are resized to the processing resolution.",
        PROCESSING,
        overrides=key("processing.method"),
    ),
    Flag(
        "ref_view_strategy",
        RefViewStrategy,
        RefViewStrategy.saddle_balanced,
        "How the reference view is chosen.",
        PROCESSING,
        overrides=key("ref_view_strategy"),
    ),
    Flag(
        "use_ray_pose",
        bool,
        False,
        "Cameras from the ray map, not the camera head.",
        PROCESSING,
        overrides=key("pose.use_ray_pose"),
    ),
    Flag(
        "infer_gs",
        bool,
        False,
        f"Predict 3D Gaussians ({_GS_PRESETS}; for gs_ply and gs_video).",
        PROCESSING,
        overrides=key("infer_gs"),
    ),
    Flag(
        "fps",
        float,
        1.0,
        "Video frames sampled per second (<= 0: every frame).",
        PROCESSING,
        commands=("auto", "video"),
        overrides=key("input.fps"),
    ),
    Flag(
        "image_extensions",
        str,
        "png,jpg,jpeg",
        "Image extensions to read, comma-separated.",
        PROCESSING,
        commands=("images",),
        overrides=lambda value, ctx: [f"input.image_extensions=[{','.join(_extensions(value))}]"],
    ),
    Flag(
        "sparse_subdir",
        str,
        "",
        "COLMAP model folder (sparse/1, or 1 as upstream); empty tries sparse/0, then sparse.",
        PROCESSING,
        commands=("auto", "colmap"),
        overrides=lambda value, ctx: [f"input.sparse_subdir={hydra_value(value)}"],
    ),
    Flag(
        "align_to_input_ext_scale",
        bool,
        True,
        "Keep the input poses' scale (else only their frame).",
        PROCESSING,
        decls=("--align-to-input-ext-scale/--no-align-to-input-ext-scale",),
        commands=("auto", "colmap"),
        overrides=key("pose.align_to_input_ext_scale"),
    ),
    Flag("use_backend", bool, False, "Run on a da3 backend instead of here.", BACKEND),
    Flag("backend_url", str, "http://localhost:8008", "The backend's address.", BACKEND),
    Flag(
        "backend_token",
        Optional[str],
        None,
        "Bearer token of the backend.",
        BACKEND,
        extra={"envvar": "DA3_BACKEND_TOKEN", "show_default": False},
    ),
)

if TYPE_CHECKING:  # built from FLAGS at run time, so type checkers see its fields as Any
    InferenceOptions: TypeAlias = Any
else:
    InferenceOptions = make_dataclass(
        "InferenceOptions",
        [
            (
                f.name,
                Any,
                None
                if f.commands != INFERENCE_COMMANDS
                else (f.default.value if isinstance(f.default, Enum) else f.default),
            )
            for f in FLAGS
        ],
        frozen=True,
    )
    InferenceOptions.__module__ = __name__
    InferenceOptions.__doc__ = (
        "The flag values of an inference command (FLAGS' defaults, enums as their values); "
        "None means the command has no such flag."
    )
