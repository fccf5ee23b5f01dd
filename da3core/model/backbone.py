"""The DA3 DINOv2 backbone: per-view and cross-view (global) attention, camera tokens, 2-D RoPE,
reference-view selection, and the [local ‖ global] intermediate features the heads consume.

State-dict names match the checkpoints (``backbone.pretrained.{cls_token, camera_token, pos_embed,
patch_embed, blocks.i, norm}``).
"""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor, nn

from da3core.model.presets import VIT_SIZES, NetSpec
from da3core.model.reference_view import REF_SELECTION_MIN_VIEWS, reorder_views, restore_views, select_reference_view
from da3core.model.vit import Block, PatchEmbed, interpolate_pos_embed

PATCH_SIZE = 14
ROPE_FREQ = 100.0
RopeTables = dict[torch.dtype, tuple[Tensor, Tensor]]  # (cos, sin) per compute dtype


def _rope_tables(positions: Tensor, head_dim: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """cos and signed sin (N, head_dim) for (N, 2) integer (y, x) positions; first half of a head rotates with y.

    The sin table carries the sign of ``rotate_half`` (-x2, x1) so that applying the rotation is one
    flip, two multiplies and an add (the negation is exact, so results are bitwise those of rotate_half).
    """
    half = head_dim // 2
    inv_freq = 1.0 / (ROPE_FREQ ** (torch.arange(0, half, 2, device=positions.device).float() / half))
    steps = torch.arange(int(positions.max()) + 1, device=positions.device, dtype=inv_freq.dtype)
    angles = torch.einsum("i,j->ij", steps, inv_freq).to(dtype)
    angles = torch.cat([angles, angles], dim=-1)
    cos, sin = angles.cos().to(dtype), angles.sin().to(dtype)
    sign = torch.ones(half, dtype=dtype, device=positions.device)
    sign[: half // 2] = -1
    return (
        torch.cat([cos[positions[:, 0]], cos[positions[:, 1]]], -1),
        torch.cat([sin[positions[:, 0]] * sign, sin[positions[:, 1]] * sign], -1),
    )


def _apply_rope(t: Tensor, tables: RopeTables) -> Tensor:
    """Rotate (B, heads, N, D) by per-token angles; each half of D is rotated on its own (y, then x).

    ``tables`` maps a dtype to its (cos, signed sin) tables: as upstream, the rotation runs in the dtype of
    ``t`` (bf16 on CPU under bf16 autocast, where LayerNorm keeps its input's dtype; fp32 on CUDA).

    ``t * cos + swap(t) * signed_sin`` with swap: (x1, x2) -> (x2, x1) within each half, accumulated into one new
    tensor with the same roundings (so the same bits) instead of a flipped copy and three full-size temporaries.
    """
    quarter = t.shape[-1] // 4
    cos, signed_sin = tables[t.dtype]
    out = t * cos
    t4, out4, sin4 = (x.unflatten(-1, (2, 2, quarter)) for x in (t, out, signed_sin))
    out4[..., 0, :] += t4[..., 1, :] * sin4[..., 0, :]
    out4[..., 1, :] += t4[..., 0, :] * sin4[..., 1, :]
    return out


class AlternatingViT(nn.Module):
    """DINOv2 ViT whose blocks alternate per-view and all-view attention from ``alt_start`` on."""

    def __init__(self, spec: NetSpec) -> None:
        super().__init__()
        dim, depth, heads, swiglu = VIT_SIZES[spec.vit]
        self.embed_dim, self.num_heads = dim, heads
        self.alt_start = spec.alt_start
        self.out_layers = tuple(spec.out_layers)
        self.cat_token = spec.alt_start != -1
        self.patch_embed = PatchEmbed(PATCH_SIZE, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        if self.alt_start != -1:
            self.camera_token = nn.Parameter(torch.zeros(1, 2, dim))  # [reference view, other views]
        self.pos_embed = nn.Parameter(torch.zeros(1, 37 * 37 + 1, dim))
        # q/k norm and RoPE start where alternating attention starts (or never, for mono models).
        self.blocks = nn.ModuleList(
            Block(dim, heads, swiglu=swiglu, qk_norm=self.alt_start != -1 and i >= self.alt_start) for i in range(depth)
        )
        self.norm = nn.LayerNorm(dim)

    def _is_global(self, i: int) -> bool:
        return self.alt_start != -1 and i >= self.alt_start and i % 2 == 1

    def forward(
        self,
        x: Tensor,
        cam_token: Tensor | None = None,
        export_feat_layers: tuple[int, ...] = (),
        ref_view_strategy: str = "saddle_balanced",
    ) -> tuple[list[tuple[Tensor, Tensor]], dict[int, Tensor], int | None]:
        """Images (B, S, 3, H, W) -> ([(patch features, camera token)] per out layer, {layer: features}, ref index).

        Patch features are (B, S, h*w, 2C) for any-view models ([local ‖ normed global]) and (B, S, h*w, C)
        for mono models; camera tokens are the un-normalised token 0. Everything is in input view order.
        """
        b, s, _, H, W = x.shape
        h, w = H // PATCH_SIZE, W // PATCH_SIZE
        tokens = self.patch_embed(x.flatten(0, 1))
        tokens = torch.cat([self.cls_token.expand(b * s, -1, -1), tokens], dim=1)
        tokens = (tokens + interpolate_pos_embed(self.pos_embed, h, w)).unflatten(0, (b, s))
        n = tokens.shape[2]

        rope_local: RopeTables = {}
        rope_global: RopeTables = {}
        if self.alt_start != -1:
            grid = torch.cartesian_prod(torch.arange(h, device=x.device), torch.arange(w, device=x.device)) + 1
            special = torch.zeros(1, 2, dtype=grid.dtype, device=x.device)
            head_dim = self.embed_dim // self.num_heads
            # Per-view blocks see each patch's grid position; cross-view blocks see one shared position.
            amp = x.device.type
            dtypes = {tokens.dtype, torch.get_autocast_dtype(amp)} if torch.is_autocast_enabled(amp) else {tokens.dtype}
            local_pos, global_pos = torch.cat([special, grid]), torch.cat([special, torch.ones_like(grid)]).repeat(s, 1)
            rope_local = {dt: _rope_tables(local_pos, head_dim, dt) for dt in dtypes}
            rope_global = {dt: _rope_tables(global_pos, head_dim, dt) for dt in dtypes}

        order = None
        outputs, feats = [], {}
        local = tokens
        for i, blk in enumerate(self.blocks):
            if self.alt_start != -1 and i == self.alt_start - 1 and s >= REF_SELECTION_MIN_VIEWS and cam_token is None:
                order = select_reference_view(tokens[:, :, 0], ref_view_strategy)
                tokens, local = reorder_views(tokens, order), reorder_views(local, order)
            if self.alt_start != -1 and i == self.alt_start:
                if cam_token is None:
                    cam_token = torch.cat(
                        [self.camera_token[:, :1].expand(b, 1, -1), self.camera_token[:, 1:].expand(b, s - 1, -1)],
                        dim=1,
                    )
                tokens = torch.cat([cam_token[:, :, None].to(tokens.dtype), tokens[:, :, 1:]], dim=2)
            use_rope = self.alt_start != -1 and i >= self.alt_start
            if self._is_global(i):
                rope = partial(_apply_rope, tables=rope_global) if use_rope else None
                tokens = blk(tokens.reshape(b, s * n, -1), rope=rope).reshape(b, s, n, -1)
            else:
                rope = partial(_apply_rope, tables=rope_local) if use_rope else None
                tokens = blk(tokens.reshape(b * s, n, -1), rope=rope).reshape(b, s, n, -1)
                local = tokens
            if i in self.out_layers:
                outputs.append(self._layer_output(local, tokens, order))
            if i in export_feat_layers:
                feats[i] = restore_views(tokens, order) if order is not None else tokens
        aux = {i: self.norm(f)[:, :, 1:] for i, f in feats.items()}
        return outputs, aux, None if order is None else int(order[0])

    def _layer_output(self, local: Tensor, tokens: Tensor, order: Tensor | None) -> tuple[Tensor, Tensor]:
        """(patch features, camera token) of one out layer, in input view order.

        Built right away and holding no view of the block outputs, so each layer keeps one (B, S, N, 2C)
        tensor alive until the heads run (a pre-norm copy of every layer doubled the peak at many views).
        """
        if self.cat_token:
            patches = torch.cat([local, self.norm(tokens)], dim=-1)
            cam = torch.cat([local[:, :, 0], tokens[:, :, 0]], dim=-1)
        else:
            patches, cam = self.norm(tokens), tokens[:, :, 0].clone()
        if order is not None:
            patches, cam = restore_views(patches, order), restore_views(cam, order)
        return patches[:, :, 1:], cam


class Backbone(nn.Module):
    """Checkpoint-compatible wrapper (``backbone.pretrained.*``)."""

    def __init__(self, spec: NetSpec) -> None:
        super().__init__()
        self.pretrained = AlternatingViT(spec)

    def forward(self, *args, **kwargs):
        """See :meth:`AlternatingViT.forward`."""
        return self.pretrained(*args, **kwargs)
