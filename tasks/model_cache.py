"""One model per (weights, device, precision) per worker process, loaded on first use and reused."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from da3core.io.inputs import sha256_file

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
    """A cached model dir of seeded random weights for ``preset`` (written once per machine)."""
    from da3core.api import write_random_model_dir
    from da3core.io.remote import cache_root

    target = cache_root().parent / "random-models" / f"{preset}-seed{seed}"
    if not (target / "model.safetensors").is_file():
        write_random_model_dir(preset, target, seed=seed)
    return target


def get_model(model_cfg: dict[str, Any]) -> LoadedModel:
    """The loaded model for a resolved ``model`` config section; loads it at most once per process."""
    from da3core import DepthAnything3

    device = pick_device(model_cfg["device"])
    key = (model_cfg["preset"], model_cfg.get("path"), model_cfg["weights"], model_cfg["seed"], device,
           model_cfg["precision"])
    with _LOCK:
        if key in _CACHE:
            return _CACHE[key]
        if model_cfg["weights"] == "random":
            source = str(random_model_dir(model_cfg["preset"], model_cfg["seed"]))
            log.warning("model.weights=random: %s has UNTRAINED seeded weights (seed %d); outputs are not "
                        "meaningful reconstructions", model_cfg["preset"], model_cfg["seed"])
        else:
            source = model_cfg.get("path") or model_cfg["hub_id"]
        model = DepthAnything3.from_pretrained(source)
        if model.preset != model_cfg["preset"]:
            raise RuntimeError(f"{source} holds {model.preset} weights but model.preset is {model_cfg['preset']}; "
                               f"use model={model.preset}")
        model = model.to(device).eval()
        model.set_precision(model_cfg["precision"])
        weights_file = model.weights_file
        is_random = model.random_weights  # also true for a model dir written by the seeded factory
        info = {
            "preset": model_cfg["preset"], "source": source, "weights": "random" if is_random else "pretrained",
            "seed": model.config.get("da3pipe", {}).get("seed") if is_random else None,
            "weights_sha256": sha256_file(weights_file) if weights_file and weights_file.is_file() else None,
            "device": device, "precision": model.precision,
        }
        if is_random:
            info["note"] = "untrained random weights: outputs are not meaningful reconstructions"
        _CACHE[key] = LoadedModel(model, info, threading.Lock())
        return _CACHE[key]


def random_vda_checkpoint(encoder: str, metric: bool, seed: int) -> Path:
    """A cached checkpoint of seeded random Video Depth Anything weights (written once per machine, stamped random)."""
    from da3core.io.remote import cache_root
    from da3core.video_depth import write_random_checkpoint

    name = f"{'metric_' if metric else ''}vda_{encoder}-seed{seed}.safetensors"
    target = cache_root().parent / "random-models" / name
    if not target.is_file():
        write_random_checkpoint(target, encoder=encoder, metric=metric, seed=seed)  # atomic: temp file + rename
    return target


def official_vda_checkpoint(encoder: str, metric: bool) -> str:
    """The official checkpoint name for an encoder and kind, e.g. ``video_depth_anything_vits``."""
    from da3core.video_depth import CHECKPOINTS

    return next(name for name, info in CHECKPOINTS.items() if info.encoder == encoder and info.metric == metric)


def get_video_depth_model(cfg: dict[str, Any]) -> LoadedModel:
    """The Video Depth Anything model for a resolved video_depth config; loads it at most once per process."""
    from da3core.video_depth import load_model

    device = pick_device(cfg["device"])
    key = ("vda", cfg["encoder"], cfg["metric"], cfg["weights"], cfg["seed"], device)
    with _LOCK:
        if key in _CACHE:
            return _CACHE[key]
        if cfg["weights"] == "random":
            source = str(random_vda_checkpoint(cfg["encoder"], cfg["metric"], cfg["seed"]))
            log.warning("weights=random: Video Depth Anything %s has UNTRAINED seeded weights (seed %d); depth is "
                        "not meaningful", cfg["encoder"], cfg["seed"])
        else:
            source = cfg["weights"] or official_vda_checkpoint(cfg["encoder"], cfg["metric"])
        model = load_model(source, encoder=cfg["encoder"], metric=cfg["metric"])
        model = model.to(device).eval()
        weights_file = Path(model.weights_file) if model.weights_file else None
        info = {
            "name": "video-depth-anything", "encoder": model.encoder, "metric": bool(model.metric), "source": source,
            "weights": "random" if model.random_weights else "pretrained",
            "seed": cfg["seed"] if model.random_weights else None,
            "weights_sha256": sha256_file(weights_file) if weights_file and weights_file.is_file() else None,
            "device": device,
        }
        if model.random_weights:
            info["note"] = "untrained random weights: depth is not meaningful"
        _CACHE[key] = LoadedModel(model, info, threading.Lock())
        return _CACHE[key]
