"""Bidirectional wrapper: any causal mixer run forward and, with its own weights, backward.

y = combine(fwd(x), flip(bwd(flip(x))))  where flip reverses time. Padding is handled by the
mixers' own masks: flipping a row together with its mask reverses exactly its real tokens, so
padding may sit anywhere. The result is not causal, so there is no ``step``.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .registry import create_mixer

COMBINES = ("add", "concat")


class Bidirectional(nn.Module):
    """Two independent copies of mixer ``name`` (B, L, D) -> (B, L, D), one per direction.

    combine: ``add`` sums the two directions; ``concat`` joins them and projects 2D -> D.
    """

    def __init__(self, name: str, d_model: int, combine: str = "add", **cfg: Any) -> None:
        super().__init__()
        if combine not in COMBINES:
            raise ValueError(f"invalid combine {combine!r}; expected one of {COMBINES}")
        self.combine = combine
        self.fwd = create_mixer(name, d_model, **cfg)
        self.bwd = create_mixer(name, d_model, **cfg)
        self.proj = nn.Linear(2 * d_model, d_model) if combine == "concat" else None

    def backward_branch(self, x: Tensor, mask: Tensor | None = None, mode: str | None = None,
                        cu_seqlens: Tensor | None = None) -> Tensor:
        """The backward direction alone: the backward mixer on the time-reversed input, re-reversed
        (a packed row's documents reversed in order and in time: offsets L - cu_seqlens, reversed)."""
        m = None if mask is None else mask.flip(1)
        cu = None if cu_seqlens is None else (x.shape[1] - cu_seqlens).flip(0)
        return self.bwd(x.flip(1), mask=m, mode=mode, cu_seqlens=cu).flip(1)

    def forward(self, x: Tensor, mask: Tensor | None = None, mode: str | None = None,
                cu_seqlens: Tensor | None = None) -> Tensor:
        """x (B, L, D); ``cu_seqlens``: x (1, L, D) is a packed row of documents (docs/packing.md)."""
        y_f = self.fwd(x, mask=mask, mode=mode, cu_seqlens=cu_seqlens)
        y_b = self.backward_branch(x, mask, mode, cu_seqlens)
        if self.proj is None:
            return y_f + y_b
        return self.proj(torch.cat([y_f, y_b], dim=-1))

    @property
    def state_size(self) -> int:
        return self.fwd.state_size + self.bwd.state_size
