"""What a backend client may ask for: well-formed requests, overrides checked on the composed config, paths
confined to the job's input, and per-job size caps.

Overrides are judged by what they do, not by how they are spelled: the client's overrides are composed over
the server's own (input, output location, pinned model) and compared with the server's config alone. Only
client keys may differ, no changed value may hold an interpolation, and a value naming a path must resolve
inside the job's input. Hydra's parser runs first only to refuse, before anything is composed, the keys and
config groups a client may never set (``hydra.*``, ``local=``, package renames), so that composition never
reads a file the client named.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from da3core.errors import UserError
from flows.backend.limits import JobLimits
from flows.config import ReconstructConfig, composed_data, load_config

# Top-level config keys a client may set: what to compute and export. Input, output location, storage and
# the model are the server's (a client cannot read or write elsewhere, nor switch the resident model).
CLIENT_KEYS = (
    "export",
    "processing",
    "ref_view_strategy",
    "pose",
    "infer_gs",
    "export_feat_layers",
    "input",
    "exporters",
    "force",
)
# Client keys whose value names a path: resolved (links and ``..`` included) and confined to the job's input.
# A changed value anywhere else that looks like a path is refused.
PATH_KEYS = ("input.sparse_subdir",)
MAX_OVERRIDES, MAX_TEXT = 256, 4096  # per request; characters per override or path


class JobRequestError(UserError, ValueError):
    """A job request the server refuses (bad override, path outside the allowed roots, over a cap)."""


def _has_control(text: str) -> bool:
    return any(ord(c) < 32 or ord(c) == 127 for c in text)


def _plain_text(text: str) -> str:
    if _has_control(text):
        raise ValueError("control characters (NUL, newline, ...) are not accepted")
    return text


Text = Annotated[str, Field(min_length=1, max_length=MAX_TEXT), AfterValidator(_plain_text)]
Overrides = Annotated[list[Text], Field(max_length=MAX_OVERRIDES)]
_OVERRIDES = TypeAdapter(Overrides)


class PathJob(BaseModel):
    """The JSON body of a job on a server-side path."""

    model_config = ConfigDict(extra="forbid", strict=True)
    path: Text
    overrides: Overrides = []


def _one_line(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()[:3])


def parse_path_job(body: Any) -> PathJob:
    """The decoded JSON body as a PathJob, else JobRequestError naming the bad field."""
    try:
        return PathJob.model_validate(body)
    except ValidationError as exc:
        raise JobRequestError(
            f"bad job body ({_one_line(exc)}); send {{'path': str, 'overrides': [str, ...]}}"
        ) from None


def check_overrides(overrides: Any, model: dict[str, str]) -> list[str]:
    """The client's overrides if well-formed and aimed at keys a client may set (checked again once composed).

    ``model`` maps ``model`` and ``model.weights`` to the service's values: restating them is accepted,
    naming another model is refused.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        overrides = _OVERRIDES.validate_python(overrides)
    except ValidationError as exc:
        raise JobRequestError(f"bad overrides ({_one_line(exc)}); send key=value strings") from None
    for item in overrides:
        try:
            (parsed,) = OverridesParser.create().parse_overrides([item])
        except HydraException as exc:
            raise JobRequestError(f"override {item!r} is not a Hydra override: {str(exc).splitlines()[0]}") from None
        key = parsed.key_or_group
        top = re.split(r"[./]", key, maxsplit=1)[0]
        if top in ("scene", "output_dir"):
            raise JobRequestError(
                f"override {item!r}: the backend sets {top} itself (to the uploaded input and the job's workspace)"
            )
        if (key == "model" and parsed.value() != model["model"]) or key.startswith("model/"):
            raise _model_error(item, model)
        if "/" in key or parsed.package is not None:
            raise JobRequestError(
                f"override {item!r}: config-group and package (@) overrides are not accepted by the backend"
            )
        if top not in (*CLIENT_KEYS, "model"):
            raise JobRequestError(
                f"override {item!r}: key {key!r} is fixed by the backend; a client may set {', '.join(CLIENT_KEYS)}"
            )
    return overrides


def _model_error(item: str, model: dict[str, str]) -> JobRequestError:
    return JobRequestError(
        f"override {item!r}: this backend runs {model['model']} with {model['model.weights']} "
        "weights and cannot switch models"
    )


_ABSENT = object()


def _differences(base: Any, job: Any, key: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, job value) of every leaf where ``job`` differs from ``base`` (lists compare whole)."""
    if isinstance(base, dict) or isinstance(job, dict):
        base = base if isinstance(base, dict) else {}
        job = job if isinstance(job, dict) else {}
        for name in sorted({*base, *job}, key=str):
            yield from _differences(base.get(name, _ABSENT), job.get(name, _ABSENT), f"{key}.{name}" if key else name)
    elif base != job:
        yield key, job


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, dict):
        for item in (*value.keys(), *value.values()):
            yield from _strings(item)


def _looks_like_path(text: str) -> bool:
    return "/" in text or "\\" in text or text.startswith("~") or text in (".", "..")


def confine(source: Path, value: str, key: str) -> None:
    """Refuse ``value`` unless ``source / value`` resolves inside ``source`` (checked before any file is read)."""
    root = source.resolve()
    if not (root / value).resolve().is_relative_to(root):
        raise JobRequestError(f"{key}={value!r} must name a folder inside the job's input")


def check_composed(base: dict[str, Any], job: dict[str, Any], source: Path, model: dict[str, str]) -> None:
    """Refuse a job config differing from the server's outside client keys, by interpolations or by paths."""
    for key, value in _differences(base, job):
        top = key.split(".", 1)[0]
        shown = "(removed)" if value is _ABSENT else repr(value)
        if top == "model":
            raise _model_error(f"{key}={shown}", model)
        if top not in CLIENT_KEYS:
            raise JobRequestError(
                f"the overrides change {key}, which the backend sets itself; a client may set {', '.join(CLIENT_KEYS)}"
            )
        texts = list(_strings(value))
        if any("${" in t for t in texts):
            raise JobRequestError(f"{key}={shown}: interpolations are not accepted by the backend")
        if any(_has_control(t) for t in texts):
            raise JobRequestError(f"{key}={shown}: control characters are not accepted")
        if key in PATH_KEYS and isinstance(value, str):
            confine(source, value, key)
        elif any(_looks_like_path(t) for t in texts):
            raise JobRequestError(
                f"{key}={shown} looks like a path; only {', '.join(PATH_KEYS)} may name one (inside the job's input)"
            )


def _view_sizes(cfg: ReconstructConfig, source: Path, roots: list[Path]) -> list[tuple[int, int]]:
    """(height, width) of every view the flow will read; unreadable images count as 0 (the job fails on them).

    Every file read must resolve (links included) inside one of ``roots``: a link in a folder of images must
    not bring a file from elsewhere on the server into the job."""
    from PIL import Image

    from da3core.io import video as video_io
    from da3core.io.inputs import discover_scene

    try:
        scene = discover_scene(
            source,
            image_extensions=tuple(cfg.input.image_extensions),
            sparse_subdir=cfg.input.sparse_subdir,
            fps=cfg.input.fps,
            max_frames=cfg.input.max_frames,
        )
        files = [Path(scene.source)] if scene.kind == "video" else [Path(p) for p in scene.paths]
        for file in files:
            if not any(file.resolve().is_relative_to(root) for root in roots):
                raise JobRequestError(f"input file {file.name!r} is a link to a file outside the job's input")
        if scene.kind == "video":
            meta = video_io.probe_video(scene.source)
            return [(meta.height, meta.width)] * len(scene)
    except UserError as exc:  # InputError, VideoError
        raise JobRequestError(str(exc)) from None
    sizes = []
    for path in scene.paths:
        try:
            with Image.open(path) as image:  # reads the header only
                sizes.append((image.height, image.width))
        except (OSError, ValueError, Image.DecompressionBombError):
            sizes.append((0, 0))
    return sizes


def processed_pixels(height: int, width: int, process_res: int, method: str) -> int:
    """Pixels of one view after resizing (da3core.preprocess's rule, before rounding sides to the 14-pixel patch)."""
    if not height or not width:
        return 0
    scale = process_res / (max(height, width) if method.startswith("upper") else min(height, width))
    return max(1, round(height * scale)) * max(1, round(width * scale))


def check_size(cfg: ReconstructConfig, source: Path, limits: JobLimits, roots: list[Path]) -> None:
    """Refuse a job over the resolution, processed-pixel or input-pixel caps, or reading outside ``roots``."""
    res, method = cfg.processing.process_res, cfg.processing.method.value
    if res > limits.max_process_res:
        raise JobRequestError(
            f"processing.process_res={res} is over this backend's cap of {limits.max_process_res} (--max-process-res)"
        )
    sizes = _view_sizes(cfg, source, roots)
    processed = sum(processed_pixels(h, w, res, method) for h, w in sizes)
    if processed > limits.max_pixels:
        raise JobRequestError(
            f"the job needs {processed:,} processed pixels ({len(sizes)} views at process_res "
            f"{res}), over this backend's cap of {limits.max_pixels:,} (--max-pixels); use fewer "
            "views or a lower processing.process_res"
        )
    decoded = sum(h * w for h, w in sizes)
    if decoded > limits.max_input_pixels:
        raise JobRequestError(
            f"the job's {len(sizes)} input views hold {decoded:,} pixels, over this backend's cap "
            f"of {limits.max_input_pixels:,} (--max-input-pixels); downscale them or send fewer"
        )


def check_job(
    client: list[str], server: list[str], source: Path, model: dict[str, str], limits: JobLimits, roots: list[Path]
) -> ReconstructConfig:
    """Every check of a job before it is queued (composed overrides, the typed config's values, the size caps, the
    input files inside ``roots``); returns the config the worker will run."""
    base = composed_data("reconstruct", server)
    cfg = load_config("reconstruct", [*server, *client], inspect=lambda job: check_composed(base, job, source, model))
    check_size(cfg, source, limits, roots)
    return cfg
