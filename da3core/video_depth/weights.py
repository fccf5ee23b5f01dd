"""Video Depth Anything checkpoints: resolve a source, load strictly, and write seeded random checkpoints.

Checkpoints are flat state dicts with the official keys (``pretrained.*``, ``head.*``) in a ``.pth``
(read with ``torch.load(weights_only=True)``) or a ``.safetensors`` file. Random checkpoints are only
written on request and are stamped: ``.safetensors`` files carry ``da3pipe_weights=random`` in their
metadata, ``.pth`` files get a sidecar ``<file>.json`` (holding the file's size, so a stale sidecar is ignored). The loader reports the stamp as
``model.random_weights``; it never substitutes random weights by itself.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from da3core.model.seeded_init import seeded_state_dict
from da3core.model.weights import WeightsError
from da3core.model.weights import hub_reachable as probe_hub
from da3core.video_depth.checkpoints import CHECKPOINTS, ENCODER_CONFIGS, CheckpointInfo, checkpoint_name
from da3core.video_depth.model import VideoDepthAnything
from da3core.video_depth.temporal import sinusoid_table

DEFAULT_CHECKPOINT_DIR = Path("checkpoints")
RANDOM_STAMP = "da3pipe_weights"
HUB_CHECK_SECONDS = 1.5
_SUFFIXES = (".pth", ".safetensors")


def write_random_checkpoint(path: str | os.PathLike, encoder: str = "vits", metric: bool = False,
                            seed: int = 0) -> Path:
    """Write an official-layout checkpoint of seeded random weights (``.pth`` or ``.safetensors``), stamped random."""
    path = Path(path)
    if path.suffix not in _SUFFIXES:
        raise ValueError(f"checkpoint path must end in .pth or .safetensors, got {path}")
    with torch.device("meta"):
        net = VideoDepthAnything(encoder, metric)
    state = seeded_state_dict(net, seed)
    for key, value in state.items():
        if key.endswith("pos_encoder.pe"):  # a fixed table, not a learned weight
            value.copy_(sinusoid_table(value.shape[-1], value.shape[1]))
    path.parent.mkdir(parents=True, exist_ok=True)
    stamp = {RANDOM_STAMP: "random", "seed": str(seed), "encoder": encoder, "metric": str(metric).lower()}
    tmp = path.with_name(path.name + ".partial")
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp), metadata={"format": "pt", **stamp})
    else:
        torch.save(state, tmp)
        # The size ties the stamp to this file: a checkpoint later saved over it is not taken for random.
        _sidecar(path).write_text(json.dumps({**stamp, "bytes": tmp.stat().st_size}, indent=2))
    tmp.replace(path)
    return path


def load_model(source: str | os.PathLike, encoder: str | None = None, metric: bool | None = None) -> VideoDepthAnything:
    """A model with strictly loaded weights, in eval mode on the CPU.

    ``source`` is a ``.pth``/``.safetensors`` file, a directory (holding the official file for ``encoder`` and
    ``metric``, or a single checkpoint), ``DIR/NAME`` with NAME a :data:`CHECKPOINTS` name, or a bare
    :data:`CHECKPOINTS` name or hub repo id (found in ``./checkpoints``, the Hugging Face cache, or downloaded
    when online). ``encoder`` defaults to the one the weights' shapes imply; ``metric`` to the file's stamp or
    name (``metric_...``).
    """
    file = resolve_checkpoint(source, encoder, metric)
    stamp = read_stamp(file)
    state = _read_state(file)
    implied = _encoder_of(state, file)
    if encoder is not None and encoder != implied:
        raise WeightsError(f"{file} holds a {implied} model, not {encoder}")
    if metric is None:
        metric = stamp.get("metric") == "true" if "metric" in stamp else file.name.startswith("metric_")
    with torch.device("meta"):
        model = VideoDepthAnything(implied, metric)
    check_keys(model, state, file)
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True, assign=True)
    model.random_weights = stamp.get(RANDOM_STAMP) == "random"
    model.weights_file = file
    return model.eval()


def resolve_checkpoint(source: str | os.PathLike, encoder: str | None = None, metric: bool | None = None) -> Path:
    """The local checkpoint file ``source`` names (see :func:`load_model`), downloading a hub one when online."""
    path = Path(source).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        return _file_in_dir(path, encoder, metric)
    for suffix in _SUFFIXES:
        if path.with_name(path.name + suffix).is_file():
            return path.with_name(path.name + suffix)
    by_repo = [i for i in CHECKPOINTS.values() if i.repo_id == str(source)]
    if by_repo:
        info, folder = by_repo[0], None
    elif path.name in CHECKPOINTS:
        info, folder = CHECKPOINTS[path.name], (None if str(path.parent) == "." else path.parent)
    else:
        raise WeightsError(f"checkpoint not found: {source}. Give a .pth/.safetensors file, a directory holding one, "
                           f"or one of {', '.join(CHECKPOINTS)}")
    local = (folder or DEFAULT_CHECKPOINT_DIR) / info.filename
    if local.is_file():
        return local
    return download_checkpoint(info, folder)


def download_checkpoint(info: CheckpointInfo, checkpoint_dir: str | os.PathLike | None) -> Path:
    """The checkpoint from the Hugging Face cache or hub (into ``checkpoint_dir`` if given); fails fast offline."""
    from huggingface_hub import hf_hub_download

    token = os.environ.get("HF_HUB_TOKEN") or None
    kwargs = {"local_dir": str(checkpoint_dir)} if checkpoint_dir is not None else {}
    if checkpoint_dir is None:
        try:  # a cached download works offline
            return Path(hf_hub_download(info.repo_id, info.filename, local_files_only=True, token=token))
        except Exception:  # noqa: BLE001 - any cache miss means "not available locally"
            pass
    if not hub_reachable():
        raise WeightsError(offline_guidance(info, checkpoint_dir))
    try:
        return Path(hf_hub_download(info.repo_id, info.filename, token=token, **kwargs))
    except Exception as exc:  # noqa: BLE001 - hub errors come in many types; all mean the same to the user
        raise WeightsError(f"cannot download {info.filename} from {info.repo_id}: {exc}. "
                           f"{offline_guidance(info, checkpoint_dir)}") from exc


def offline_guidance(info: CheckpointInfo, checkpoint_dir: str | os.PathLike | None) -> str:
    """How to supply a checkpoint by hand."""
    where = Path(checkpoint_dir or DEFAULT_CHECKPOINT_DIR) / info.filename
    return (f"the Hugging Face Hub is unreachable (offline or HF_HUB_OFFLINE=1), so {info.name} cannot be downloaded. "
            f"On a connected machine download {info.url} (licence {info.licence}) and put it at {where}, "
            f"or pass the file's path as the model source.")


def hub_reachable(timeout: float = HUB_CHECK_SECONDS) -> bool:
    """Whether huggingface.co answers within ``timeout`` seconds (name resolution included)."""
    result: list[bool] = []
    probe = threading.Thread(target=lambda: result.append(probe_hub(timeout)), daemon=True)
    probe.start()
    probe.join(timeout + 0.2)  # a hanging DNS lookup is not covered by the socket timeout
    return bool(result and result[0])


def read_stamp(file: Path) -> dict[str, str]:
    """The da3pipe stamp of a checkpoint (empty for official files)."""
    if file.suffix == ".safetensors":
        with safe_open(str(file), framework="pt") as f:
            return dict(f.metadata() or {})
    sidecar = _sidecar(file)
    stamp = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
    return stamp if stamp.get("bytes") == file.stat().st_size else {}


def check_keys(model: torch.nn.Module, state: dict[str, torch.Tensor], file: Path) -> None:
    """Raise a :class:`WeightsError` naming every missing, unexpected or wrongly shaped tensor."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
    problems = [f"{label} {len(keys)} tensors: {', '.join(keys)}"
                for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrongly shaped", wrong)) if keys]
    if problems:
        raise WeightsError(f"{file} does not match the {model.encoder} Video Depth Anything model: "
                           + "; ".join(problems))


def _read_state(file: Path) -> dict[str, torch.Tensor]:
    if file.suffix == ".safetensors":
        return load_file(str(file))
    try:
        state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # noqa: BLE001 - pickle and zip errors alike mean an unreadable file
        raise WeightsError(f"cannot read {file} as a PyTorch checkpoint: {exc}") from exc
    if not isinstance(state, dict):
        raise WeightsError(f"{file} does not hold a state dict (found {type(state).__name__})")
    return state


def _encoder_of(state: dict[str, torch.Tensor], file: Path) -> str:
    cls = state.get("pretrained.cls_token")
    blocks = len({k.split(".")[2] for k in state if k.startswith("pretrained.blocks.")})
    for name, cfg in ENCODER_CONFIGS.items():
        if cls is not None and cls.shape[-1] == cfg.embed_dim and blocks == cfg.depth:
            return name
    raise WeightsError(f"{file} is not a Video Depth Anything checkpoint (no pretrained.cls_token of a known width)")


def _file_in_dir(folder: Path, encoder: str | None, metric: bool | None) -> Path:
    if encoder is not None:
        for suffix in _SUFFIXES:
            candidate = folder / (checkpoint_name(encoder, bool(metric)) + suffix)
            if candidate.is_file():
                return candidate
    found = sorted(p for p in folder.iterdir() if p.suffix in _SUFFIXES)
    if len(found) == 1 and encoder is None:
        return found[0]
    wanted = checkpoint_name(encoder, bool(metric)) if encoder else "a single checkpoint (or pass encoder=)"
    raise WeightsError(f"{folder} holds {[p.name for p in found]}; expected {wanted}. "
                       "Download one with: python -m da3core.video_depth.download_weights --model NAME")


def _sidecar(file: Path) -> Path:
    return file.with_name(file.name + ".json")
