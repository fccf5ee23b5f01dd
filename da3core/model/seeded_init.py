"""Deterministic random weights for tests, demos and benchmarks (never a silent fallback).

Every tensor is drawn from a generator seeded by ``(seed, parameter name)``, so the values depend only
on the name and shape: two models with the same keys get identical weights whatever order their
modules were built in, and the reference implementation can load the very same state dict.
"""

from __future__ import annotations

import hashlib

import torch
from torch import Tensor, nn

_NORMS = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm2d)


def name_seed(name: str, seed: int) -> int:
    """A 63-bit generator seed from (seed, name)."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:8], "little") >> 1


def seeded_tensor(name: str, shape: tuple[int, ...], std: float, mean: float = 0.0, seed: int = 0) -> Tensor:
    """``mean + std * N(0, 1)`` of the given shape, reproducible from (seed, name)."""
    gen = torch.Generator().manual_seed(name_seed(name, seed))
    return mean + std * torch.randn(shape, generator=gen, dtype=torch.float32)


def seeded_state_dict(model: nn.Module, seed: int = 0) -> dict[str, Tensor]:
    """Well-scaled random values for every entry of ``model.state_dict()``.

    Linear/conv weights get std 1/sqrt(fan_in) (activations keep their scale through deep stacks),
    norm weights 1 +- 0.02, biases and embeddings +- 0.02, LayerScale gammas 0.1 +- 0.02.
    """
    kinds: dict[str, str] = {}
    for mod_name, module in model.named_modules():
        prefix = f"{mod_name}." if mod_name else ""
        for p_name, _ in module.named_parameters(recurse=False):
            if isinstance(module, _NORMS) or (p_name == "weight" and module.__class__.__name__.endswith("Norm")):
                kinds[prefix + p_name] = "norm_weight" if p_name == "weight" else "bias"
    out = {}
    for name, value in model.state_dict().items():
        leaf = name.rsplit(".", 1)[-1]
        kind = kinds.get(name)
        if kind == "norm_weight":
            out[name] = seeded_tensor(name, value.shape, 0.02, 1.0, seed)
        elif leaf == "gamma":
            out[name] = seeded_tensor(name, value.shape, 0.02, 0.1, seed)
        elif value.dim() >= 2 and leaf == "weight":
            fan_in = value[0].numel() if not _is_transposed_conv(model, name) else value.shape[0] * value[0, 0].numel()
            out[name] = seeded_tensor(name, value.shape, fan_in**-0.5, 0.0, seed)
        elif value.is_floating_point():
            out[name] = seeded_tensor(name, value.shape, 0.02, 0.0, seed)
        else:
            out[name] = value.clone()
    return out


def _is_transposed_conv(model: nn.Module, name: str) -> bool:
    module_name = name.rsplit(".", 1)[0]
    return isinstance(model.get_submodule(module_name), nn.ConvTranspose2d)
