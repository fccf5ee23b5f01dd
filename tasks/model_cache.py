"""One model per (weights, device, precision) per worker process, loaded on first use and reused."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from da3core.errors import DeviceError
from da3core.io.inputs import sha256_file
from da3core.model.presets import get_preset

if TYPE_CHECKING:  # the schemas live with the flows' config; tasks only read them
    from flows.schema import ModelConfig, VideoDepthConfig

log = logging.getLogger(__name__)
_LOCK = threading.Lock()
_CACHE: dict[tuple, tuple[tuple, LoadedModel]] = {}  # what is loaded -> (version of its weights file, model)
_SHA_LOCK = threading.Lock()
_SHA: dict[tuple, str] = {}  # (real path, size, mtime, inode) -> sha256: a weights file is hashed once per process


def weights_sha256(file: Path) -> str:
    """A weights file's sha256, computed once per process for each version of the file."""
    stat = file.stat()
    key = (str(file.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino)
    with _SHA_LOCK:
        if key not in _SHA:
            _SHA[key] = sha256_file(file)
        return _SHA[key]


def local_weights_identity(path: str | None, random: bool) -> dict[str, str]:
    """``{"weights_sha256": ...}`` for weights a local path holds (a model dir or a checkpoint file), whose contents
    can change under the same name, so results must be keyed on them; {} for random weights or a hub name."""
    from da3core.model.model_dir import WEIGHTS_FILE

    if random or not path:
        return {}
    local = Path(path).expanduser()
    file = local / WEIGHTS_FILE if local.is_dir() else local
    return {"weights_sha256": weights_sha256(file)} if file.is_file() else {}


@dataclass
class LoadedModel:
    """A model on its device and what the stores record about it."""

    model: Any
    info: dict[str, Any]  # preset, source, weights kind, sha256, device, precision
    lock: threading.Lock  # one forward at a time per model (threads share the device)


def pick_device(requested: str, key: str = "model.device") -> str:
    """``auto`` → cuda, then mps, then cpu; an explicit device must be available (else DeviceError naming ``key``)."""
    import torch

    if requested == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"{key}=cuda but CUDA is not available on this machine; use {key}=auto or cpu")
    if requested == "mps" and not torch.backends.mps.is_available():
        raise DeviceError(f"{key}=mps but MPS is not available on this machine; use {key}=auto or cpu")
    return requested


def random_model_dir(preset: str, seed: int) -> Path:
    """A cached model dir of seeded random weights for ``preset`` (written once per machine, stamped random)."""
    from da3core.api import write_random_model_dir

    target = _random_weights_root() / f"{preset}-seed{seed}"
    if not (target / "model.safetensors").is_file():
        write_random_model_dir(preset, target, seed=seed)
    return target


def random_vda_checkpoint(encoder: str, metric: bool, seed: int) -> Path:
    """A cached checkpoint of seeded random Video Depth Anything weights (written once per machine, stamped random)."""
    from da3core.video_depth import write_random_checkpoint

    target = _random_weights_root() / f"{'metric_' if metric else ''}vda_{encoder}-seed{seed}.safetensors"
    if not target.is_file():
        write_random_checkpoint(target, encoder=encoder, metric=metric, seed=seed)  # atomic: temp file + rename
    return target


def _random_weights_root() -> Path:
    from da3core.io.storage import cache_root

    return cache_root().parent / "random-weights"  # stamped in the weights files (older caches were not)


def official_vda_checkpoint(encoder: str, metric: bool) -> str:
    """The official checkpoint name for an encoder and kind, e.g. ``video_depth_anything_vits``."""
    from da3core.video_depth.checkpoints import checkpoint_name

    return checkpoint_name(encoder, metric)


def get_model(model: ModelConfig) -> LoadedModel:
    """The DA3 model for a ``model`` config section; loads it at most once per process."""
    from da3core import DepthAnything3

    device = pick_device(model.device.value)
    weights, precision = model.weights.value, model.precision.value

    def load() -> tuple[Any, str, dict[str, Any]]:
        if weights == "random":
            source = str(random_model_dir(model.preset, model.seed))
            log.warning(
                "model.weights=random: %s has UNTRAINED seeded weights (seed %d); outputs are not "
                "meaningful reconstructions",
                model.preset,
                model.seed,
            )
        else:
            source = model.path or get_preset(model.preset).hub_id
        net = DepthAnything3.from_pretrained(source)
        if net.preset != model.preset:
            raise RuntimeError(
                f"{source} holds {net.preset} weights but model.preset is {model.preset}; use model={net.preset}"
            )
        net = net.to(device).eval().set_precision(precision)
        return net, source, {"preset": model.preset, "precision": net.precision}

    version = tuple(local_weights_identity(model.path, weights == "random").values())  # a file replaced in place
    return _cached(("da3", model.preset, model.path, weights, model.seed, device, precision), version, load, device)


def get_video_depth_model(cfg: VideoDepthConfig) -> LoadedModel:
    """The Video Depth Anything model for a video_depth config; loads it at most once per process."""
    from da3core.video_depth import load_model

    device = pick_device(cfg.device.value, "device")

    def load() -> tuple[Any, str, dict[str, Any]]:
        if cfg.weights == "random":
            source = str(random_vda_checkpoint(cfg.encoder, cfg.metric, cfg.seed))
            log.warning(
                "weights=random: Video Depth Anything %s has UNTRAINED seeded weights (seed %d); depth is "
                "not meaningful",
                cfg.encoder,
                cfg.seed,
            )
        else:
            source = cfg.weights or official_vda_checkpoint(cfg.encoder, cfg.metric)
        net = load_model(source, encoder=cfg.encoder, metric=cfg.metric).to(device).eval()
        return net, source, {"name": "video-depth-anything", "encoder": net.encoder, "metric": bool(net.metric)}

    version = tuple(local_weights_identity(cfg.weights, cfg.weights == "random").values())
    return _cached(("vda", cfg.encoder, cfg.metric, cfg.weights, cfg.seed, device), version, load, device)


def _cached(
    key: tuple, version: tuple, load: Callable[[], tuple[Any, str, dict[str, Any]]], device: str
) -> LoadedModel:
    """The model under ``key``, loaded once per ``version`` of its weights file (a newer version replaces the older
    in memory); ``info`` records what the stores say about its weights."""
    from da3core.weights import read_stamp

    with _LOCK:
        if _CACHE.get(key, (None,))[0] != version:
            _CACHE.pop(key, None)  # one version kept: the old weights are freed once no running job holds them
            model, source, info = load()
            weights_file = Path(model.weights_file) if model.weights_file else None
            stamp = read_stamp(weights_file) if weights_file and weights_file.is_file() else {}
            info.update(
                source=source,
                weights="random" if model.random_weights else "pretrained",
                seed=int(stamp["seed"]) if model.random_weights and "seed" in stamp else None,
                weights_sha256=weights_sha256(weights_file) if weights_file and weights_file.is_file() else None,
                device=device,
            )
            if model.random_weights:
                info["note"] = "untrained random weights: outputs are not meaningful"
            _CACHE[key] = (version, LoadedModel(model, info, threading.Lock()))
        return _CACHE[key][1]
