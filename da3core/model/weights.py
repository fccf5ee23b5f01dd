"""Checkpoint I/O: resolve a local model dir or hub id, load strictly, and write seeded random model dirs.

A model dir holds ``config.json`` (with ``model_name``, the preset) and ``model.safetensors`` whose
keys are the official ones (``model.backbone.pretrained...``). Random weights are only ever written
on request and are stamped in ``config.json`` (``"da3pipe": {"weights": "random", "seed": ...}``).
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from da3core.model.seeded_init import seeded_state_dict

CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"
HUB_HOST = "huggingface.co"


class WeightsError(RuntimeError):
    """Weights that cannot be found, fetched or loaded; the message says how to supply them."""


def hub_reachable(timeout: float = 1.5) -> bool:
    """Whether the Hugging Face hub answers within ``timeout`` seconds (False when HF_HUB_OFFLINE is set)."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    try:
        with socket.create_connection((HUB_HOST, 443), timeout=timeout):
            return True
    except OSError:
        return False


def resolve_model_dir(source: str | os.PathLike) -> Path:
    """A local dir holding config.json + model.safetensors, downloading a hub id when online."""
    path = Path(source).expanduser()
    if path.is_dir():
        if not (path / CONFIG_FILE).is_file():
            raise WeightsError(f"{path} has no {CONFIG_FILE}; a DA3 model dir holds {CONFIG_FILE} and {WEIGHTS_FILE}")
        if not (path / WEIGHTS_FILE).is_file():
            raise WeightsError(f"{path} has no {WEIGHTS_FILE}; download the checkpoint into it "
                               f"(huggingface-cli download <repo> --local-dir {path})")
        return path
    source = str(source)
    if source.count("/") != 1 or source.startswith((".", "/", "~")):
        raise WeightsError(f"model dir not found: {source}; give a local dir with {CONFIG_FILE} + {WEIGHTS_FILE} "
                           "or a hub id such as depth-anything/DA3-LARGE")
    from huggingface_hub import snapshot_download

    try:  # a cached snapshot works offline
        return Path(snapshot_download(source, allow_patterns=[CONFIG_FILE, WEIGHTS_FILE], local_files_only=True))
    except Exception:  # noqa: BLE001 - any cache miss means "not available locally"
        pass
    if not hub_reachable():
        raise WeightsError(f"cannot download {source}: the Hugging Face Hub is unreachable (offline). Download it on "
                           f"a connected machine (huggingface-cli download {source} --local-dir DIR) and pass that DIR")
    try:
        return Path(snapshot_download(source, allow_patterns=[CONFIG_FILE, WEIGHTS_FILE]))
    except Exception as exc:  # noqa: BLE001 - hub errors come in many types; all mean the same to the user
        raise WeightsError(f"cannot download {source} from the Hugging Face Hub: {exc}") from exc


def read_config(model_dir: Path) -> dict:
    """The parsed config.json, which must name the preset (``model_name``)."""
    config = json.loads((model_dir / CONFIG_FILE).read_text())
    if "model_name" not in config:
        raise WeightsError(f"{model_dir / CONFIG_FILE} has no 'model_name' (the DA3 preset, e.g. da3-large)")
    return config


def load_strict(module: nn.Module, weights_file: Path, prefix: str = "model.") -> None:
    """Load a safetensors file into ``module`` (keys under ``prefix``); any missing/extra key is an error.

    Tensors are read one at a time (memory-mapped), so loading needs no second copy of the weights.
    """
    targets = module.state_dict()
    with safe_open(str(weights_file), framework="pt") as f:
        stored, expected = set(f.keys()), {prefix + k for k in targets}
        missing, unexpected = sorted(expected - stored), sorted(stored - expected)
        if missing or unexpected:
            parts = ([f"missing {len(missing)} tensors: {_show(missing)}"] if missing else []) + (
                [f"unexpected {len(unexpected)} tensors: {_show(unexpected)}"] if unexpected else [])
            raise WeightsError(f"{weights_file} does not match the model: {'; '.join(parts)}")
        wrong = [k for k in targets if tuple(f.get_slice(prefix + k).get_shape()) != tuple(targets[k].shape)]
        if wrong:
            raise WeightsError(f"{weights_file}: wrong shapes for {_show(wrong)}")
        with torch.no_grad():
            for key, target in targets.items():
                target.copy_(f.get_tensor(prefix + key))


def _show(keys: list[str], n: int = 8) -> str:
    return ", ".join(keys[:n]) + (f" (+{len(keys) - n} more)" if len(keys) > n else "")


def tune_random_weights(state: dict[str, torch.Tensor]) -> None:
    """Keep random cameras well-conditioned: fields of view near 60°, near-identity rotations, small translations."""
    for key, value in state.items():
        if key.endswith("cam_dec.fc_fov.0.bias"):
            value.copy_(torch.full_like(value, 1.05) + 0.05 * value)
        elif key.endswith("cam_dec.fc_qvec.bias"):
            value.copy_(torch.tensor([0.0, 0.0, 0.0, 1.0]) + value)
        elif key.endswith(("cam_dec.fc_fov.0.weight", "cam_dec.fc_qvec.weight", "cam_dec.fc_t.weight")):
            value.mul_(0.05)


def write_random_model_dir(net: nn.Module, preset: str, out_dir: str | os.PathLike, seed: int = 0,
                           dtype: torch.dtype = torch.float32) -> Path:
    """Write ``net`` filled with seeded random weights as an official-layout model dir (stamped as random).

    ``dtype`` float16 halves the file (handy for tests of the giant models); official checkpoints are fp32.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = seeded_state_dict(net, seed)
    tune_random_weights(state)
    tmp = out / (WEIGHTS_FILE + ".partial")
    save_file({f"model.{k}": v.to(dtype).contiguous() for k, v in state.items()}, str(tmp), metadata={"format": "pt"})
    tmp.replace(out / WEIGHTS_FILE)
    (out / CONFIG_FILE).write_text(json.dumps(
        {"model_name": preset, "da3pipe": {"weights": "random", "seed": seed,
                                           "note": "untrained seeded random weights for tests and demos"}}, indent=2))
    return out
