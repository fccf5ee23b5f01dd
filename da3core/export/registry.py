"""The export format registry: names, what each format needs, and the ``export`` dispatcher."""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from da3core.export.colmap import write_colmap
from da3core.export.depth_vis import write_depth_vis
from da3core.export.feat_vis import feature_layers, write_feat_vis
from da3core.export.glb import write_glb
from da3core.export.gs_ply import write_gs_ply
from da3core.export.gs_video import write_gs_video
from da3core.export.nerfstudio import write_nerfstudio
from da3core.export.npz import write_mini_npz, write_npz
from da3core.export.ply import write_ply
from da3core.export.target import ExportTarget
from da3core.prediction import Prediction

log = logging.getLogger(__name__)

GAUSSIAN_HINT = "run a giant or nested preset with infer_gs=True"
FEATURE_HINT = "pass export_feat_layers=[...] to inference"

# Options shared by export() and the per-format keyword each maps to.
SHARED_DEFAULTS: dict[str, Any] = {
    "conf_thresh_percentile": 40.0, "num_max_points": 1_000_000, "show_cameras": True, "feat_vis_fps": 15,
    "render_exts": None, "render_ixts": None, "render_hw": None,
}


@dataclass(frozen=True)
class ExportFormat:
    """One export format: its writer, the prediction fields it needs and the shared options it takes."""

    name: str
    write: Callable[..., list[str]]
    needs: tuple[str, ...]
    shared: dict[str, str]  # shared option -> the writer's keyword
    summary: str


_POINTS = ("intrinsics", "extrinsics", "processed_images")
FORMATS: dict[str, ExportFormat] = {f.name: f for f in (
    ExportFormat("mini_npz", write_mini_npz, (), {}, "exports/mini_npz/results.npz: depth, conf, cameras"),
    ExportFormat("npz", write_npz, ("processed_images",), {}, "exports/npz/results.npz: images, depth, conf, cameras"),
    ExportFormat("glb", write_glb, _POINTS,
                 {"conf_thresh_percentile": "conf_thresh_percentile", "num_max_points": "num_max_points",
                  "show_cameras": "show_cameras"}, "scene.glb point cloud + cameras, scene.jpg, depth_vis/"),
    ExportFormat("depth_vis", write_depth_vis, ("processed_images",), {}, "depth_vis/NNNN.jpg image | depth"),
    ExportFormat("feat_vis", write_feat_vis, ("processed_images", "features"), {"feat_vis_fps": "fps"},
                 "feat_vis/: PCA of intermediate features, JPEGs + mp4"),
    ExportFormat("gs_ply", write_gs_ply, ("gaussians",), {}, "gs_ply/0000.ply 3DGS PLY (INRIA layout)"),
    ExportFormat("gs_video", write_gs_video, ("gaussians", "intrinsics", "extrinsics"),
                 {"render_exts": "render_exts", "render_ixts": "render_ixts", "render_hw": "render_hw"},
                 "gs_video/0000_<trajectory>.mp4 Gaussian fly-through"),
    ExportFormat("colmap", write_colmap, _POINTS,
                 {"conf_thresh_percentile": "conf_thresh_percentile", "num_max_points": "num_max_points"},
                 "sparse/0/*.bin COLMAP model at the source resolution"),
    ExportFormat("nerfstudio", write_nerfstudio, _POINTS, {"conf_thresh_percentile": "conf_thresh_percentile"},
                 "nerfstudio/: transforms.json, images, points3D.ply"),
    ExportFormat("ply", write_ply, _POINTS,
                 {"conf_thresh_percentile": "conf_thresh_percentile", "num_max_points": "num_max_points"},
                 "points.ply coloured point cloud"),
)}


def parse_formats(spec: str | Sequence[str]) -> list[str]:
    """Format names from ``"a-b-c"``, ``"a+b+c"`` or a list; order kept, duplicates dropped, unknown names rejected."""
    items = [spec] if isinstance(spec, str) else list(spec)
    names = [n.strip() for item in items for n in re.split(r"[-+,]", str(item)) if n.strip()]
    unknown = [n for n in names if n not in FORMATS]
    if unknown:
        raise ValueError(f"unknown export format(s) {', '.join(map(repr, unknown))}; valid: {', '.join(FORMATS)}")
    return list(dict.fromkeys(names))


def check_formats(formats: Sequence[str], *, has_conf: bool, has_gaussians: bool, has_features: bool) -> None:
    """Fail before inference when a format needs data the model will not produce."""
    for name in parse_formats(formats):
        needs = FORMATS[name].needs
        if "gaussians" in needs and not has_gaussians:
            raise ValueError(f"export format {name!r} needs 3D Gaussians: {GAUSSIAN_HINT}")
        if "features" in needs and not has_features:
            raise ValueError(f"export format {name!r} needs intermediate features: {FEATURE_HINT}")
        if not has_conf and name in ("glb", "colmap", "ply", "nerfstudio"):
            log.info("%s: no confidence from this model; every valid non-sky pixel becomes a point", name)


def _check_prediction(name: str, prediction: Prediction) -> None:
    for need in FORMATS[name].needs:
        if need == "features":
            missing = not feature_layers(prediction)
        else:
            missing = getattr(prediction, need) is None
        if missing:
            hint = {"gaussians": f"; {GAUSSIAN_HINT}", "features": f"; {FEATURE_HINT}"}.get(need, "")
            raise ValueError(f"export format {name!r} needs prediction.{need if need != 'features' else 'aux feat_layer_*'}"
                             f", which this prediction lacks{hint}")


def export(
    prediction: Prediction,
    formats: str | Sequence[str],
    export_dir: str | os.PathLike,
    storage_options: dict[str, Any] | None = None,
    **kwargs: Any,
) -> dict[str, list[str]]:
    """Write each format into ``export_dir`` (local or fsspec URL); returns the written locations per format.

    ``kwargs[<format>]`` is a dict of that format's options; the shared options of ``SHARED_DEFAULTS`` go to the
    formats that use them (a per-format option wins over a shared one).
    """
    names = parse_formats(formats)
    unknown = sorted(k for k in kwargs if k not in FORMATS and k not in SHARED_DEFAULTS)
    if unknown:
        raise TypeError(f"unknown export option(s) {unknown}; per-format options go in a dict under the format name")
    shared = {k: kwargs.get(k, v) for k, v in SHARED_DEFAULTS.items()}
    for name in names:
        _check_prediction(name, prediction)
    target = ExportTarget(export_dir, storage_options)
    target.check_writable()
    written = {}
    for name in names:
        fmt = FORMATS[name]
        options = {fmt.shared[k]: shared[k] for k in fmt.shared} | dict(kwargs.get(name) or {})
        start = time.perf_counter()
        written[name] = fmt.write(prediction, target, **options)
        log.info("exported %s (%d files) in %.2f s", name, len(written[name]), time.perf_counter() - start)
    return written
