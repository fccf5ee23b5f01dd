"""Video Depth Anything checkpoints: resolve a source, load strictly, and write seeded random checkpoints.

Checkpoints are flat state dicts with the official keys (``pretrained.*``, ``head.*``) in a ``.pth`` or a
``.safetensors`` file; loading, hub access and the random-weights stamp are da3core.weights'. The loader
reports the stamp as ``model.random_weights``; it never substitutes random weights by itself.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch

from da3core.model.seeded_init import seeded_state_dict
from da3core.video_depth.checkpoints import CHECKPOINTS, ENCODER_CONFIGS, CheckpointInfo, checkpoint_name
from da3core.video_depth.model import VideoDepthAnything
from da3core.video_depth.temporal import sinusoid_table
from da3core.weights import (
    CHECKPOINT_SUFFIXES,
    WeightsError,
    check_hub_file,
    hub_file,
    is_random,
    load_strict,
    open_checkpoint,
    random_stamp,
    read_stamp,
    write_checkpoint,
)

DEFAULT_CHECKPOINT_DIR = Path("checkpoints")


def write_random_checkpoint(
    path: str | os.PathLike, encoder: str = "vits", metric: bool = False, seed: int = 0
) -> Path:
    """Write an official-layout checkpoint of seeded random weights (``.pth`` or ``.safetensors``), stamped random."""
    with torch.device("meta"):
        net = VideoDepthAnything(encoder, metric)
    state = seeded_state_dict(net, seed)
    for key, value in state.items():
        if key.endswith("pos_encoder.pe"):  # a fixed table, not a learned weight
            value.copy_(sinusoid_table(value.shape[-1], value.shape[1]))
    return write_checkpoint(state, path, random_stamp(seed, encoder=encoder, metric=str(metric).lower()))


def load_model(source: str | os.PathLike, encoder: str | None = None, metric: bool | None = None) -> VideoDepthAnything:
    """A model with strictly loaded weights, in eval mode on the CPU.

    ``source`` is a ``.pth``/``.safetensors`` file, a directory (holding the official file for ``encoder`` and
    ``metric``, or a single checkpoint), ``DIR/NAME`` with NAME a :data:`CHECKPOINTS` name, or a bare
    :data:`CHECKPOINTS` name or hub repo id (found in ``./checkpoints``, the Hugging Face cache, or downloaded
    when online). ``encoder`` defaults to the one the weights' shapes imply; ``metric`` to the file's stamp or
    name (``metric_...``).
    """
    file = resolve_checkpoint(source, encoder, metric)
    if file is None:  # resolve_checkpoint returns None only with download=False
        raise WeightsError(f"no checkpoint file for {source}")
    stamp = read_stamp(file)
    with open_checkpoint(file) as state:
        implied = _encoder_of(state, file)
    if encoder is not None and encoder != implied:
        raise WeightsError(f"{file} holds a {implied} model, not {encoder}")
    stamped = None if "metric" not in stamp else stamp["metric"] == "true"
    if metric is not None and stamped is not None and metric != stamped:
        kind = "metric depth" if stamped else "relative disparity"
        raise WeightsError(f"{file} holds a {kind} model (its stamp says so), not metric={metric}; drop metric=")
    if metric is None:
        metric = stamped if stamped is not None else file.name.startswith("metric_")
    with torch.device("meta"):
        model = VideoDepthAnything(implied, metric)
    load_strict(model, file, what=f"the {implied} Video Depth Anything model")
    model.random_weights = is_random(stamp)
    model.weights_file = file
    return model.eval()


def resolve_checkpoint(
    source: str | os.PathLike, encoder: str | None = None, metric: bool | None = None, download: bool = True
) -> Path | None:
    """The local checkpoint file ``source`` names (see :func:`load_model`), downloading a hub one when online.

    ``download=False`` checks instead: WeightsError where resolving would fail, None for a hub file to fetch.
    """
    path = Path(source).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        return _file_in_dir(path, encoder, metric)
    for suffix in CHECKPOINT_SUFFIXES:
        if path.with_name(path.name + suffix).is_file():
            return path.with_name(path.name + suffix)
    by_repo = [i for i in CHECKPOINTS.values() if i.repo_id == str(source)]
    if by_repo:
        info, folder = by_repo[0], None
    elif path.name in CHECKPOINTS:
        info, folder = CHECKPOINTS[path.name], (None if str(path.parent) == "." else path.parent)
    else:
        raise WeightsError(
            f"checkpoint not found: {source}. Give a .pth/.safetensors file, a directory holding one, "
            f"or one of {', '.join(CHECKPOINTS)}"
        )
    local = (folder or DEFAULT_CHECKPOINT_DIR) / info.filename
    if local.is_file():
        return local
    if not download:
        check_hub_file(info.repo_id, info.filename, offline_guidance(info, folder), cache=folder is None)
        return None
    return download_checkpoint(info, folder)


def download_checkpoint(info: CheckpointInfo, checkpoint_dir: str | os.PathLike | None) -> Path:
    """The checkpoint from the Hugging Face cache or hub (into ``checkpoint_dir`` if given); fails fast offline."""
    return hub_file(info.repo_id, info.filename, checkpoint_dir, guidance=offline_guidance(info, checkpoint_dir))


def offline_guidance(info: CheckpointInfo, checkpoint_dir: str | os.PathLike | None) -> str:
    """How to supply a checkpoint by hand."""
    where = Path(checkpoint_dir or DEFAULT_CHECKPOINT_DIR) / info.filename
    return (
        f"On a connected machine download {info.url} (licence {info.licence}) and put it at {where}, "
        "or pass the file's path as the model source."
    )


def _encoder_of(state: Mapping[str, torch.Tensor], file: Path) -> str:
    cls = state.get("pretrained.cls_token")
    blocks = len({k.split(".")[2] for k in state if k.startswith("pretrained.blocks.")})
    for name, cfg in ENCODER_CONFIGS.items():
        if cls is not None and cls.shape[-1] == cfg.embed_dim and blocks == cfg.depth:
            return name
    raise WeightsError(f"{file} is not a Video Depth Anything checkpoint (no pretrained.cls_token of a known width)")


def _file_in_dir(folder: Path, encoder: str | None, metric: bool | None) -> Path:
    if encoder is not None:
        for suffix in CHECKPOINT_SUFFIXES:
            candidate = folder / (checkpoint_name(encoder, bool(metric)) + suffix)
            if candidate.is_file():
                return candidate
    found = sorted(p for p in folder.iterdir() if p.suffix in CHECKPOINT_SUFFIXES)
    if len(found) == 1 and encoder is None:
        return found[0]
    wanted = checkpoint_name(encoder, bool(metric)) if encoder else "a single checkpoint (or pass encoder=)"
    raise WeightsError(
        f"{folder} holds {[p.name for p in found]}; expected {wanted}. "
        "Download one with: python -m da3core.video_depth.download_weights --model NAME"
    )
