"""Reference-view selection: which view anchors the predicted world frame, chosen from token-0 features.

The chosen view is moved to the front before the first camera-token block and every output is put
back into input order afterwards.
"""

from __future__ import annotations

import torch
from torch import Tensor

from da3core.choices import REF_VIEW_STRATEGIES

REF_SELECTION_MIN_VIEWS = 3


def select_reference_view(feat: Tensor, strategy: str = "saddle_balanced") -> Tensor:
    """Reference index (B,) from per-view features (B, S, C).

    ``saddle_balanced`` picks the view whose mean similarity to the others, feature norm and feature
    variance are each closest to the middle of their range; ``saddle_sim_range`` the view with the
    widest spread of similarities.
    """
    if strategy not in REF_VIEW_STRATEGIES:
        raise ValueError(f"unknown ref_view_strategy '{strategy}'; allowed: {', '.join(REF_VIEW_STRATEGIES)}")
    b, s, _ = feat.shape
    if s <= 1 or strategy == "first":
        return torch.zeros(b, dtype=torch.long, device=feat.device)
    if strategy == "middle":
        return torch.full((b,), s // 2, dtype=torch.long, device=feat.device)
    unit = feat / feat.norm(dim=-1, keepdim=True)
    sim = unit @ unit.transpose(1, 2) - torch.eye(s, device=feat.device)
    if strategy == "saddle_sim_range":
        return (sim.max(dim=-1).values - sim.min(dim=-1).values).argmax(dim=1)

    def unit_range(m: Tensor) -> Tensor:
        lo, hi = m.min(dim=1, keepdim=True).values, m.max(dim=1, keepdim=True).values
        return (m - lo) / (hi - lo + 1e-8)

    terms = [(unit_range(m) - 0.5).abs() for m in (sim.sum(-1) / (s - 1), feat.norm(dim=-1), unit.var(dim=-1))]
    score = terms[0] + terms[1] + terms[2]
    return score.argmin(dim=1)


def _reorder_index(ref: Tensor, s: int) -> Tensor:
    """(B, S) source index of each reordered position: [ref, 0, 1, ..., ref-1, ref+1, ...]."""
    pos = torch.arange(s, device=ref.device).expand(len(ref), s)
    idx = torch.where((pos > 0) & (pos <= ref[:, None]), pos - 1, pos)
    idx[:, 0] = ref
    return idx


def reorder_views(x: Tensor, ref: Tensor) -> Tensor:
    """Move each batch's reference view to the front of dim 1."""
    idx = _reorder_index(ref, x.shape[1])
    return x[torch.arange(len(ref), device=x.device)[:, None], idx]


def restore_views(x: Tensor, ref: Tensor) -> Tensor:
    """Inverse of :func:`reorder_views`."""
    idx = torch.argsort(_reorder_index(ref, x.shape[1]), dim=1)
    return x[torch.arange(len(ref), device=x.device)[:, None], idx]
