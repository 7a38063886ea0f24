"""Encoder -> Backbone -> head, for the task kinds of ``ssmkit.tasks``.

- ``classify``: pooled real tokens -> (B, n_out) logits (pool ``mean`` or ``last`` real token);
- ``tag`` / ``lm``: every position -> (B, L, n_out) logits; ``trajectory``: (B, L, n_out) values;
- ``forecast``: the last real position -> (B, horizon, d_input) values;
- ``regress``: the last real position -> (B, n_out) values (e.g. the adding problem's sum);
- ``predict``: every position -> (B, L, n_out) values, the next position's (e.g. video frames as tokens).
Inputs are token ids (B, L) when ``vocab_size`` is set, else features (B, L, d_input).
``dt`` (B, L), the time elapsed before each token (irregular sampling), goes to every mixer.
``cu_seqlens``: inputs (1, L) or (1, L, d_input) are one packed row of documents (docs/packing.md),
for the per-position kinds (a pooled head would mix the documents).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..config import check
from .backbone import Backbone, BackboneConfig
from .kinds import TaskKind
from .registry import DataSpec, NoConfig, register_arch

POOLS = ("mean", "last")


class SequenceModel(nn.Module):
    def __init__(
        self,
        backbone: BackboneConfig,
        kind: TaskKind | str,
        n_out: int,
        vocab_size: int | None = None,
        d_input: int = 1,
        horizon: int = 0,
        pool: str = "mean",
    ) -> None:
        super().__init__()
        kind = TaskKind.parse(kind)
        check(pool in POOLS, "pool", f"must be one of {POOLS}, got {pool!r}")
        check(kind != TaskKind.FORECAST or horizon > 0, "horizon", f"must be > 0 for forecasting, got {horizon}")
        D = backbone.d_model
        self.kind, self.pool, self.horizon, self.d_input = kind, pool, horizon, d_input
        self.encoder = nn.Embedding(vocab_size, D) if vocab_size else nn.Linear(d_input, D)
        self.backbone = Backbone(backbone)
        self.head = nn.Linear(D, horizon * d_input if kind == TaskKind.FORECAST else n_out)

    def forward(
        self, inputs: Tensor, mask: Tensor | None = None, state: tuple | None = None, *,
        dt: Tensor | None = None, cu_seqlens: Tensor | None = None, return_state: bool = False,
    ) -> Tensor | tuple[Tensor, tuple]:
        """``state`` continues the sequences where an earlier call with ``return_state=True`` left
        them (truncated BPTT over long streams); the head reads this call's positions only.
        ``dt`` (B, L): per-token time deltas for every mixer (docs/irregular.md). ``cu_seqlens``
        (N + 1,) int32: one packed row of N documents (per-position kinds only; docs/packing.md)."""
        if cu_seqlens is not None and not self.kind.per_position:
            raise ValueError(f"cu_seqlens (a packed row of documents) needs a per-position head (lm, tag, ...), "
                             f"but this model's kind is {self.kind.value!r}: its pooled head would mix the "
                             f"documents; pass them as rows of a padded batch (mask) instead")
        h = self.backbone(self.encoder(inputs), state, mask, dt=dt, cu_seqlens=cu_seqlens,
                          return_state=return_state)  # (B, L, D)
        if return_state:
            h, state = h
            return self._head(h, mask), state
        return self._head(h, mask)

    def _head(self, h: Tensor, mask: Tensor | None) -> Tensor:
        if self.kind.per_position:
            return self.head(h)
        if mask is None:
            mask = torch.ones(h.shape[:2], dtype=torch.bool, device=h.device)
        if self.kind.real_valued or self.pool == "last":
            last = mask.long().cumsum(1).argmax(1)  # last real position of each row
            pooled = h[torch.arange(h.shape[0], device=h.device), last]
        else:
            w = mask[..., None].to(h.dtype)
            pooled = (h * w).sum(1) / w.sum(1).clamp_min(1)
        out = self.head(pooled)
        return out.unflatten(-1, (self.horizon, self.d_input)) if self.kind == TaskKind.FORECAST else out


@register_arch("sequence")
def build_sequence_model(backbone: BackboneConfig, spec: DataSpec, pool: str, cfg: NoConfig) -> SequenceModel:
    """The default architecture: encoder -> Backbone -> head (any task kind)."""
    return SequenceModel(backbone, spec.kind, spec.n_out, spec.vocab_size, spec.d_input, spec.horizon, pool)
