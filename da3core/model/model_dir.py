"""A DA3 model dir: ``config.json`` (``model_name`` = the preset) + ``model.safetensors`` with the official keys.

Model dirs come from disk or, by hub id, from the Hugging Face Hub (cache first, download when online).
Seeded random model dirs are written only on request and stamped in their weights file (see da3core.weights).
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from da3core.weights import WeightsError, check_hub_file, hub_file, random_stamp, write_checkpoint

CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"
if TYPE_CHECKING:  # finding and checking a model dir needs no torch (a rerun that skips its scene loads none)
    import torch
    from torch import nn

KEY_PREFIX = "model."  # official checkpoints hold the network under ``model.``


def resolve_model_dir(source: str | os.PathLike) -> Path:
    """A local dir holding config.json + model.safetensors; a hub id is fetched (cache, then download when online)."""
    local = _local_model_dir(source)
    if local is not None:
        return local
    hub_file(str(source), CONFIG_FILE)
    return hub_file(str(source), WEIGHTS_FILE).parent


def check_model_source(source: str | os.PathLike) -> None:
    """Raise WeightsError where :func:`resolve_model_dir` would, without downloading (a hub id must be cached or
    the hub reachable)."""
    if _local_model_dir(source) is None:
        for name in (CONFIG_FILE, WEIGHTS_FILE):
            check_hub_file(str(source), name)


def _local_model_dir(source: str | os.PathLike) -> Path | None:
    """The local model dir ``source`` names (checked), None for a hub id; WeightsError for neither."""
    path = Path(source).expanduser()
    if path.is_dir():
        if not (path / CONFIG_FILE).is_file():
            raise WeightsError(f"{path} has no {CONFIG_FILE}; a DA3 model dir holds {CONFIG_FILE} and {WEIGHTS_FILE}")
        if not (path / WEIGHTS_FILE).is_file():
            raise WeightsError(
                f"{path} has no {WEIGHTS_FILE}; download the checkpoint into it "
                f"(huggingface-cli download <repo> --local-dir {path})"
            )
        return path
    source = str(source)
    if source.count("/") != 1 or source.startswith((".", "/", "~")):
        raise WeightsError(
            f"model dir not found: {source}; give a local dir with {CONFIG_FILE} + {WEIGHTS_FILE} "
            "or a hub id such as depth-anything/DA3-LARGE"
        )
    return None


def read_config(model_dir: Path) -> dict:
    """The parsed config.json, which must name the preset (``model_name``)."""
    config = json.loads((model_dir / CONFIG_FILE).read_text())
    if "model_name" not in config:
        raise WeightsError(f"{model_dir / CONFIG_FILE} has no 'model_name' (the DA3 preset, e.g. da3-large)")
    return config


def tune_random_weights(state: dict[str, torch.Tensor]) -> None:
    """Keep random cameras well-conditioned: fields of view near 60°, near-identity rotations, small translations."""
    import torch

    for key, value in state.items():
        if key.endswith("cam_dec.fc_fov.0.bias"):
            value.copy_(torch.full_like(value, 1.05) + 0.05 * value)
        elif key.endswith("cam_dec.fc_qvec.bias"):
            value.copy_(torch.tensor([0.0, 0.0, 0.0, 1.0]) + value)
        elif key.endswith(("cam_dec.fc_fov.0.weight", "cam_dec.fc_qvec.weight", "cam_dec.fc_t.weight")):
            value.mul_(0.05)


def write_random_model_dir(
    net: nn.Module, preset: str, out_dir: str | os.PathLike, seed: int = 0, dtype: torch.dtype | None = None
) -> Path:
    """Write ``net`` filled with seeded random weights as an official-layout model dir (stamped as random).

    ``dtype`` float16 halves the file (handy for tests of the giant models); by default float32, as official
    checkpoints are.
    """
    import torch

    from da3core.model.seeded_init import seeded_state_dict

    dtype = dtype or torch.float32
    out = Path(out_dir)
    state = seeded_state_dict(net, seed)
    tune_random_weights(state)
    # The config first, whole: a dir whose weights file exists is complete (what a concurrent reader checks).
    out.mkdir(parents=True, exist_ok=True)
    config = out / f".{CONFIG_FILE}.{os.getpid()}-{threading.get_ident()}"
    config.write_text(json.dumps({"model_name": preset}, indent=2))
    config.replace(out / CONFIG_FILE)
    write_checkpoint(
        {KEY_PREFIX + k: v.to(dtype) for k, v in state.items()}, out / WEIGHTS_FILE, random_stamp(seed, preset=preset)
    )
    return out
