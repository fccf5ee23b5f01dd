"""One model per (weights, device, precision) per worker process, loaded on first use and reused."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from da3core.io.inputs import sha256_file
from da3core.model.presets import get_preset

log = logging.getLogger(__name__)
_LOCK = threading.Lock()
_CACHE: dict[tuple, "LoadedModel"] = {}


@dataclass
class LoadedModel:
    """A model on its device and what the stores record about it."""

    model: Any
    info: dict[str, Any]  # preset, source, weights kind, sha256, device, precision
    lock: threading.Lock  # one forward at a time per model (threads share the device)


def pick_device(requested: str) -> str:
    """``auto`` → cuda, then mps, then cpu; an explicit device must be available."""
    import torch

    if requested == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("model.device=cuda but CUDA is not available; use model.device=auto or cpu")
    if requested == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError("model.device=mps but MPS is not available; use model.device=auto or cpu")
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
    from da3core.io.remote import cache_root

    return cache_root().parent / "random-weights"  # stamped in the weights files (older caches were not)


def official_vda_checkpoint(encoder: str, metric: bool) -> str:
    """The official checkpoint name for an encoder and kind, e.g. ``video_depth_anything_vits``."""
    from da3core.video_depth.checkpoints import checkpoint_name

    return checkpoint_name(encoder, metric)


def get_model(model_cfg: dict[str, Any]) -> LoadedModel:
    """The DA3 model for a resolved ``model`` config section; loads it at most once per process."""
    from da3core import DepthAnything3

    preset, seed = model_cfg["preset"], model_cfg["seed"]
    device = pick_device(model_cfg["device"])

    def load() -> tuple[Any, str, dict[str, Any]]:
        if model_cfg["weights"] == "random":
            source = str(random_model_dir(preset, seed))
            log.warning("model.weights=random: %s has UNTRAINED seeded weights (seed %d); outputs are not "
                        "meaningful reconstructions", preset, seed)
        else:
            source = model_cfg.get("path") or get_preset(preset).hub_id
        model = DepthAnything3.from_pretrained(source)
        if model.preset != preset:
            raise RuntimeError(f"{source} holds {model.preset} weights but model.preset is {preset}; "
                               f"use model={model.preset}")
        model = model.to(device).eval()
        model.set_precision(model_cfg["precision"])
        return model, source, {"preset": preset, "precision": model.precision}

    key = ("da3", preset, model_cfg.get("path"), model_cfg["weights"], seed, device, model_cfg["precision"])
    return _cached(key, load, device)


def get_video_depth_model(cfg: dict[str, Any]) -> LoadedModel:
    """The Video Depth Anything model for a resolved video_depth config; loads it at most once per process."""
    from da3core.video_depth import load_model

    device = pick_device(cfg["device"])

    def load() -> tuple[Any, str, dict[str, Any]]:
        if cfg["weights"] == "random":
            source = str(random_vda_checkpoint(cfg["encoder"], cfg["metric"], cfg["seed"]))
            log.warning("weights=random: Video Depth Anything %s has UNTRAINED seeded weights (seed %d); depth is "
                        "not meaningful", cfg["encoder"], cfg["seed"])
        else:
            source = cfg["weights"] or official_vda_checkpoint(cfg["encoder"], cfg["metric"])
        model = load_model(source, encoder=cfg["encoder"], metric=cfg["metric"]).to(device).eval()
        return model, source, {"name": "video-depth-anything", "encoder": model.encoder, "metric": bool(model.metric)}

    key = ("vda", cfg["encoder"], cfg["metric"], cfg["weights"], cfg["seed"], device)
    return _cached(key, load, device)


def _cached(key: tuple, load: Callable[[], tuple[Any, str, dict[str, Any]]], device: str) -> LoadedModel:
    """The model under ``key``, loaded once; ``info`` records what the stores say about its weights."""
    from da3core.weights import read_stamp

    with _LOCK:
        if key not in _CACHE:
            model, source, info = load()
            weights_file = Path(model.weights_file) if model.weights_file else None
            stamp = read_stamp(weights_file) if weights_file and weights_file.is_file() else {}
            info.update(source=source, weights="random" if model.random_weights else "pretrained",
                        seed=int(stamp["seed"]) if model.random_weights and "seed" in stamp else None,
                        weights_sha256=sha256_file(weights_file) if weights_file and weights_file.is_file() else None,
                        device=device)
            if model.random_weights:
                info["note"] = "untrained random weights: outputs are not meaningful"
            _CACHE[key] = LoadedModel(model, info, threading.Lock())
        return _CACHE[key]
