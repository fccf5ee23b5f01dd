"""Temporal (motion) modules of the Video Depth Anything head: attention along the frame axis.

Parameter names follow the official checkpoints
(``temporal_transformer.{norm, proj_in, transformer_blocks.0.{attention_blocks.i, norms.i, ff, ff_norm}, proj_out}``).
Internally tokens are laid out as (batch * pixels, frames, channels), the layout the attention needs,
so each module reshapes once on entry and once on exit.

Streaming inference passes, per attention layer, the cached *inputs* (normalised, before the position
encoding) of earlier frames; the current frame then attends over [cache, itself] and sits at the last
position of the sinusoidal table.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

HEADS = 8
ATTENTION_LAYERS = 2
MAX_FRAMES = 32
GROUPS = 32


class SinusoidalPositions(nn.Module):
    """Transformer sine/cosine table (1, max_len, dim), stored in the checkpoints as ``pe``."""

    pe: Tensor

    def __init__(self, dim: int, max_len: int = MAX_FRAMES) -> None:
        super().__init__()
        self.register_buffer("pe", sinusoid_table(dim, max_len))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.pe[:, : x.shape[1]].to(x.dtype)


def sinusoid_table(dim: int, max_len: int = MAX_FRAMES) -> Tensor:
    """sin on even and cos on odd channels of position * 10000^(-2i/dim)."""
    position = torch.arange(max_len).unsqueeze(1)
    freq = torch.exp(torch.arange(0, dim, 2) * (-math.log(10000.0) / dim))
    table = torch.zeros(1, max_len, dim)
    table[0, :, 0::2] = torch.sin(position * freq)
    table[0, :, 1::2] = torch.cos(position * freq)
    return table


class TemporalAttention(nn.Module):
    """Multi-head self-attention over frames (bias-free q/k/v), with absolute positions."""

    def __init__(self, dim: int, heads: int = HEADS, max_len: int = MAX_FRAMES) -> None:
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(dim, dim, bias=False)
        self.to_v = nn.Linear(dim, dim, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim)])
        self.pos_encoder = SinusoidalPositions(dim, max_len)

    def forward(self, x: Tensor, cached: Tensor | None = None) -> Tensor:
        """(S, F, C) -> (S, F, C); with ``cached`` (S, Fc, C) only the new F frames are queried."""
        seq = x if cached is None else torch.cat([cached, x], dim=1)
        seq = self.pos_encoder(seq)
        q = self._split(self.to_q(seq[:, seq.shape[1] - x.shape[1] :]))
        k, v = self._split(self.to_k(seq)), self._split(self.to_v(seq))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out[0](out.transpose(1, 2).flatten(2))

    def _split(self, t: Tensor) -> Tensor:
        return t.unflatten(-1, (self.heads, -1)).transpose(1, 2)


class GEGLU(nn.Module):
    """Gated GELU: a * gelu(g) with [a, g] = proj(x)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, 2 * hidden)

    def forward(self, x: Tensor) -> Tensor:
        a, gate = self.proj(x).chunk(2, dim=-1)
        return a * F.gelu(gate)


class FeedForward(nn.Module):
    """GEGLU (4x) then a linear projection back."""

    def __init__(self, dim: int, mult: int = 4) -> None:
        super().__init__()
        # Index 1 was a dropout upstream; the Identity keeps the projection at checkpoint index 2.
        self.net = nn.ModuleList([GEGLU(dim, dim * mult), nn.Identity(), nn.Linear(dim * mult, dim)])

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.net:
            x = layer(x)
        return x


class TemporalTransformerBlock(nn.Module):
    """Two pre-norm temporal attention layers, then a pre-norm GEGLU feed-forward."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.attention_blocks = nn.ModuleList(TemporalAttention(dim) for _ in range(ATTENTION_LAYERS))
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(ATTENTION_LAYERS))
        self.ff = FeedForward(dim)
        self.ff_norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor, cached: list[Tensor] | None = None) -> tuple[Tensor, list[Tensor]]:
        """Tokens (S, F, C) -> (tokens, the per-layer attention inputs to cache for later frames)."""
        states = []
        for i, (attn, norm) in enumerate(zip(self.attention_blocks, self.norms)):
            h = norm(x)
            states.append(h)
            x = x + attn(h, None if cached is None else cached[i])
        return x + self.ff(self.ff_norm(x)), states


class TemporalTransformer(nn.Module):
    """GroupNorm -> proj_in -> temporal block -> proj_out, added to the input feature map."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(GROUPS, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, channels)
        self.transformer_blocks = nn.ModuleList([TemporalTransformerBlock(channels)])
        self.proj_out = nn.Linear(channels, channels)

    def forward(self, x: Tensor, frames: int, cached: list[Tensor] | None = None) -> tuple[Tensor, list[Tensor]]:
        """Feature maps (B*T, C, H, W) -> (same shape, cacheable attention inputs of shape (B*H*W, T, C))."""
        bt, c, h, w = x.shape
        tokens = self.norm(x).unflatten(0, (bt // frames, frames)).permute(0, 3, 4, 1, 2).reshape(-1, frames, c)
        tokens = self.proj_in(tokens)
        tokens, states = self.transformer_blocks[0](tokens, cached)
        tokens = self.proj_out(tokens)
        out = tokens.reshape(bt // frames, h, w, frames, c).permute(0, 3, 4, 1, 2).reshape(bt, c, h, w)
        return out + x, states


class TemporalModule(nn.Module):
    """Checkpoint-compatible wrapper (``motion_modules.i.temporal_transformer``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.temporal_transformer = TemporalTransformer(channels)

    def forward(self, x: Tensor, frames: int, cached: list[Tensor] | None = None) -> tuple[Tensor, list[Tensor]]:
        """See :meth:`TemporalTransformer.forward`."""
        return self.temporal_transformer(x, frames, cached)
