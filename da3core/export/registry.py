"""The export format registry: names, what each format needs and reads, and the ``export`` dispatcher.

``FORMATS`` answers every question about a format (its files, the prediction fields it needs, what a caller
must read from a store for it, the shared options it takes); adding a format is one entry here plus its writer
module. Writers are named as ``"module:function"`` and imported on first use, so listing the formats (a
command line's help) loads no writer and no torch.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import numbers
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from da3core.export.options import check_option_ranges
from da3core.export.target import ExportTarget
from da3core.prediction import Prediction

log = logging.getLogger(__name__)

GAUSSIAN_HINT = "run a giant or nested preset with infer_gs=True"
FEATURE_HINT = "pass export_feat_layers=[...] to inference"
CAMERA_HINT = "mono and metric presets predict none; export depth_vis, npz or mini_npz, or use an any-view preset"

# Options export() takes for every format that uses them, with the defaults the writers use (nerfstudio's own
# point budget, num_points, defaults to 200_000); only the ones a caller gives are passed on.
SHARED_DEFAULTS: dict[str, Any] = {
    "conf_thresh_percentile": 40.0,
    "num_max_points": 1_000_000,
    "show_cameras": True,
    "feat_vis_fps": 15,
    "render_exts": None,
    "render_ixts": None,
    "render_hw": None,
}
# Writer keywords that a writer sets itself and passes on (glb's glTF frame), never options.
INTERNAL = frozenset({"prediction", "target", "frame"})


def _function(ref: str) -> Callable[..., Any]:
    """``"da3core.export.glb:write_glb"`` -> the function (its module imported now)."""
    module, name = ref.split(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class ExportFormat:
    """One export format: its writer, the prediction fields it needs and the shared options it takes.

    Functions are ``"module:function"`` references, imported on first use.
    """

    name: str
    writer: str  # write(prediction, target, **options) -> written locations
    summary: str
    needs: tuple[str, ...] = ()  # Prediction fields ("features" = aux feat_layer_*)
    shared: dict[str, str] = field(default_factory=dict)  # shared option -> the writer's keyword
    forwards: tuple[str, ...] = ()  # where the writer's **options go: their keywords are valid options too
    checker: str | None = None  # validates option values before anything is written
    method_checker: str | None = None  # refuses a preprocessing (process_res_method) the format cannot invert
    # The writer for a prediction read a frame at a time (a long scene; same options); None: it needs every array.
    frame_writer: str | None = None
    hidden: tuple[str, ...] = ()  # forwarded keywords the writer sets from one of its own options
    prediction_checker: str | None = None  # refuses a prediction the writer cannot write (before any file)

    @property
    def accepted(self) -> set[str]:
        """The option names the writer takes: its keywords and those of the functions it forwards options to."""
        names = set()
        for fn in (self.write, *map(_function, self.forwards)):
            names |= {
                p.name
                for p in inspect.signature(fn).parameters.values()
                if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
            }
        return names - INTERNAL - set(self.hidden)

    @property
    def write(self) -> Callable[..., list[str]]:
        """The writer function."""
        return _function(self.writer)

    @property
    def reads_features(self) -> bool:
        """Whether the format needs the stored intermediate features (a store read can skip them otherwise)."""
        return "features" in self.needs

    @property
    def reads_gaussians(self) -> bool:
        """Whether the format needs the stored 3D Gaussians."""
        return "gaussians" in self.needs

    @property
    def point_cloud(self) -> bool:
        """Whether the format back-projects confident depth into points (and so uses confidence when there is one)."""
        return set(_POINT_NEEDS) <= set(self.needs)

    def check_options(self, options: dict[str, Any]) -> None:
        """Raise TypeError for an option the writer does not take, ValueError for a value it cannot use.

        Every option is checked for type and range: by the format's ``checker`` for the options in its
        signature, by :data:`~da3core.export.options.RULES` for the rest.
        """
        accepted = self.accepted
        unknown = sorted(set(options) - accepted)
        if unknown:
            raise TypeError(f"export format {self.name!r} has no option(s) {unknown}; valid: {sorted(accepted)}")
        owned = self.checked_by_checker
        check_option_ranges({k: v for k, v in options.items() if k not in owned})
        if self.checker is not None:
            _function(self.checker)(**options)

    @property
    def checked_by_checker(self) -> set[str]:
        """The options the format's ``checker`` validates (the named keywords of its signature)."""
        if self.checker is None:
            return set()
        params = inspect.signature(_function(self.checker)).parameters.values()
        return {p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}


_POINT_NEEDS = ("intrinsics", "extrinsics", "processed_images")
_PERCENTILE = {"conf_thresh_percentile": "conf_thresh_percentile"}
_POINT_SHARED = {**_PERCENTILE, "num_max_points": "num_max_points"}
_POINTS = "da3core.export.points:confident_points"
_LONG = "da3core.export.long_scene:"
FORMATS: dict[str, ExportFormat] = {
    f.name: f
    for f in (
        ExportFormat(
            "mini_npz",
            "da3core.export.npz:write_mini_npz",
            "exports/mini_npz/results.npz: depth, conf, cameras",
            frame_writer="da3core.export.npz:write_mini_npz",
        ),
        ExportFormat(
            "npz",
            "da3core.export.npz:write_npz",
            "exports/npz/results.npz: images, depth, conf, cameras",
            needs=("processed_images",),
            frame_writer="da3core.export.npz:write_npz",
        ),
        ExportFormat(
            "glb",
            "da3core.export.glb:write_glb",
            "scene.glb points + camera frustums, scene.jpg, depth_vis/",
            needs=_POINT_NEEDS,
            shared={**_POINT_SHARED, "show_cameras": "show_cameras"},
            forwards=("da3core.export.glb:build_scene", _POINTS),
            frame_writer=_LONG + "write_glb_frames",
        ),
        ExportFormat(
            "depth_vis",
            "da3core.export.depth_vis:write_depth_vis",
            "depth_vis/NNNN.jpg image | depth",
            needs=("processed_images",),
            frame_writer="da3core.export.depth_vis:write_depth_vis",
        ),
        ExportFormat(
            "feat_vis",
            "da3core.export.feat_vis:write_feat_vis",
            "feat_vis/: PCA of intermediate features, JPEGs + mp4",
            needs=("processed_images", "features"),
            shared={"feat_vis_fps": "fps"},
            checker="da3core.export.feat_vis:check_feat_vis_options",
        ),
        ExportFormat(
            "gs_ply",
            "da3core.export.gs_ply:write_gs_ply",
            "gs_ply/0000.ply 3DGS PLY (INRIA layout)",
            needs=("gaussians",),
            checker="da3core.export.gs_ply:check_gs_ply_options",
        ),
        ExportFormat(
            "gs_video",
            "da3core.export.gs_video:write_gs_video",
            "gs_video/0000_<trajectory>.mp4 Gaussian fly-through",
            needs=("gaussians", "intrinsics", "extrinsics"),
            shared={"render_exts": "extrinsics", "render_ixts": "intrinsics", "render_hw": "out_image_hw"},
            checker="da3core.export.gs_video:check_gs_video_options",
        ),
        ExportFormat(
            "colmap",
            "da3core.export.colmap:write_colmap",
            "sparse/0/*.bin COLMAP model at the source resolution",
            needs=_POINT_NEEDS,
            shared=_POINT_SHARED,
            checker="da3core.export.colmap:check_colmap_options",
            method_checker="da3core.export.colmap:check_colmap_options",
            frame_writer=_LONG + "write_colmap_frames",
        ),
        ExportFormat(
            "nerfstudio",
            "da3core.export.nerfstudio:write_nerfstudio",
            "nerfstudio/: transforms.json, images, points3D.ply",
            needs=_POINT_NEEDS,
            # --num-max-points caps the seed points too; the writer's own name for the budget is num_points.
            shared={**_PERCENTILE, "num_max_points": "num_points"},
            forwards=(_POINTS,),
            frame_writer=_LONG + "write_nerfstudio_frames",
            hidden=("num_max_points",),
            prediction_checker="da3core.export.nerfstudio:check_prediction_names",
        ),
        ExportFormat(
            "ply",
            "da3core.export.ply:write_ply",
            "points.ply coloured point cloud",
            needs=_POINT_NEEDS,
            shared=_POINT_SHARED,
            forwards=(_POINTS,),
            frame_writer=_LONG + "write_ply_frames",
        ),
    )
}


def reads_frames(prediction: Prediction) -> bool:
    """Whether ``prediction``'s arrays are read a frame at a time (a long scene from its store), not held in memory."""
    return not isinstance(prediction.depth, np.ndarray)


def parse_formats(spec: str | Sequence[str]) -> list[str]:
    """Format names from ``"a-b-c"``, ``"a+b+c"`` or a list; order kept, duplicates dropped, unknown names rejected."""
    items = [spec] if isinstance(spec, str) else list(spec)
    names = [n.strip() for item in items for n in re.split(r"[-+,]", str(item)) if n.strip()]
    unknown = [n for n in names if n not in FORMATS]
    if unknown:
        meant = [m for item in items if (m := str(item).strip().replace("-", "_")) in FORMATS and m not in names]
        hint = f" ('-' separates formats: did you mean {', '.join(meant)}?)" if meant else ""
        raise ValueError(f"unknown export format(s) {', '.join(map(repr, unknown))}{hint}; valid: {', '.join(FORMATS)}")
    return list(dict.fromkeys(names))


def check_formats(
    formats: Sequence[str],
    *,
    has_conf: bool,
    has_gaussians: bool,
    has_features: bool,
    has_cameras: bool = True,
    process_res_method: str | None = None,
    options: dict[str, Any] | None = None,
) -> None:
    """Fail before inference when a format needs data the model will not produce (or a preprocessing it cannot use).

    ``options``: the keyword arguments :func:`export` will get (shared options and per-format dicts), checked
    now so that a misspelt or out-of-range option fails before inference rather than after it.
    """
    names = parse_formats(formats)
    for name in names:
        fmt = FORMATS[name]
        if fmt.reads_gaussians and not has_gaussians:
            raise ValueError(f"export format {name!r} needs 3D Gaussians: {GAUSSIAN_HINT}")
        if fmt.reads_features and not has_features:
            raise ValueError(f"export format {name!r} needs intermediate features: {FEATURE_HINT}")
        if not has_cameras and {"intrinsics", "extrinsics"} & set(fmt.needs):
            raise ValueError(f"export format {name!r} needs camera poses: {CAMERA_HINT}")
        if fmt.method_checker is not None and process_res_method is not None:
            _function(fmt.method_checker)(process_res_method)
        if not has_conf and fmt.point_cloud:
            log.info("%s: this model gives no confidence, so every valid non-sky pixel becomes a point", name)
    if options is not None:
        plan_options(names, options)


def check_feature_layers(layers: Sequence[int], preset: str) -> None:
    """Refuse ``export_feat_layers`` that are not blocks of ``preset``'s backbone (they would silently be absent)."""
    from da3core.model.presets import VIT_SIZES, get_preset

    depth = VIT_SIZES[get_preset(preset).net.vit].depth
    bad = [
        layer
        for layer in layers
        if isinstance(layer, bool) or not isinstance(layer, numbers.Integral) or not 0 <= layer < depth
    ]
    if bad:
        raise ValueError(
            f"export_feat_layers {bad} are not blocks of {preset}'s backbone; choose layers from 0 to {depth - 1}"
        )


def plan_options(names: Sequence[str], kwargs: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each format's writer options from :func:`export`'s keywords, checked by the format (nothing is written)."""
    unknown = sorted(k for k in kwargs if k not in FORMATS and k not in SHARED_DEFAULTS)
    if unknown:
        raise TypeError(f"unknown export option(s) {unknown}; per-format options go in a dict under the format name")
    # Shared options are checked under their own names (a bad num_max_points is not reported as nerfstudio's
    # num_points); one not given is left to each writer's default.
    shared = {k: v for k, v in kwargs.items() if k in SHARED_DEFAULTS}
    check_option_ranges(shared)
    plan = {}
    for name in names:
        fmt = FORMATS[name]
        plan[name] = {fmt.shared[k]: shared[k] for k in fmt.shared if k in shared} | dict(kwargs.get(name) or {})
        fmt.check_options(plan[name])
    return plan


def _check_prediction(name: str, prediction: Prediction) -> None:
    from da3core.export.feat_vis import feature_layers

    for need in FORMATS[name].needs:
        missing = not feature_layers(prediction) if need == "features" else getattr(prediction, need) is None
        if missing:
            what = "aux['feat_layer_*']" if need == "features" else need
            hint = {"gaussians": f"; {GAUSSIAN_HINT}", "features": f"; {FEATURE_HINT}"}.get(need, "")
            raise ValueError(f"export format {name!r} needs prediction.{what}, which this prediction lacks{hint}")
    checker = FORMATS[name].prediction_checker
    if checker is not None:
        _function(checker)(prediction)


def export(
    prediction: Prediction,
    formats: str | Sequence[str],
    export_dir: str | os.PathLike,
    storage_options: dict[str, Any] | None = None,
    **kwargs: Any,
) -> dict[str, list[str]]:
    """Write each format into ``export_dir`` (local path or fsspec URL); returns the written locations per format.

    ``kwargs[<format>]`` is a dict of that format's options; the shared options (``SHARED_DEFAULTS``) go to
    the formats that use them, and a per-format option wins over a shared one. Every check that needs no
    writing (names, prediction fields, options, a writable ``export_dir``) runs before the first file.
    """
    if not isinstance(export_dir, (str, os.PathLike)) or not str(export_dir):
        raise TypeError(f"export_dir must be a folder path or URL, got {export_dir!r}")
    names = parse_formats(formats)
    lazy = reads_frames(prediction)
    for name in names:
        _check_prediction(name, prediction)
        if lazy and FORMATS[name].frame_writer is None:
            raise ValueError(
                f"export format {name!r} needs every array of the prediction in memory; a long scene "
                f"exports {', '.join(n for n, f in FORMATS.items() if f.frame_writer)}"
            )
    plan = plan_options(names, kwargs)
    target = ExportTarget(export_dir, storage_options)
    target.check_writable()
    written = {}
    for name, options in plan.items():
        start = time.perf_counter()
        frame_writer = FORMATS[name].frame_writer
        write = _function(frame_writer) if lazy and frame_writer else FORMATS[name].write
        written[name] = write(prediction, target, **options)
        log.info("exported %s (%d files) in %.2f s", name, len(written[name]), time.perf_counter() - start)
    return written
