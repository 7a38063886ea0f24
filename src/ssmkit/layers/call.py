"""What a family's ``_forward(x, state, call)`` is asked besides its input and state: one signature
for every family (the base class builds the call once per forward).

Dimension legend: B batch, L length.

Padding reaches a family as right-padded rows with per-row ``lengths`` (the base compacts any mask);
the family makes every padded step an identity on its state, which for a linear recurrence means
input 0 and decay 1: ``call.zero_pads(b)`` and ``call.one_pads(a)``.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import Tensor


def lengths_mask(lengths: Tensor, L: int) -> Tensor:
    """(B,) lengths -> (B, L) bool, True at real positions of a right-padded batch."""
    return torch.arange(L, device=lengths.device)[None, :] < lengths[:, None]


@dataclasses.dataclass(frozen=True)
class ForwardCall:
    """mode: the computation mode to run (resolved, never ``auto``).
    lengths: (B,) real tokens per row of the right-padded input, or None when no row is padded; the
        family returns outputs right at t < lengths[b] and the state after lengths[b] tokens.
    dt: (B, L) time deltas (families with ``accepts_dt``; 1 at padded steps), or None.
    need_state: False when the caller does not want the final state; a family whose state costs
        extra work may then return None for it (the diagonal LTI fft mode does).
    """

    mode: str
    lengths: Tensor | None = None
    dt: Tensor | None = None
    need_state: bool = True

    def real(self, L: int) -> Tensor | None:
        """(B, L) bool, True at real steps; None when no row is padded."""
        return None if self.lengths is None else lengths_mask(self.lengths, L)

    def fill_pads(self, t: Tensor, value: float) -> Tensor:
        """t (B, L, ...) with every padded step set to ``value``; t itself when no row is padded."""
        if self.lengths is None:
            return t
        real = lengths_mask(self.lengths, t.shape[1])
        return torch.where(real.view(*real.shape, *(1,) * (t.dim() - 2)), t, value)

    def zero_pads(self, t: Tensor) -> Tensor:
        """t (B, L, ...) with padded steps set to 0: the input of an identity step."""
        return self.fill_pads(t, 0.0)

    def one_pads(self, t: Tensor) -> Tensor:
        """t (B, L, ...) with padded steps set to 1: the decay of an identity step."""
        return self.fill_pads(t, 1.0)

    def after(self, start: int) -> ForwardCall:
        """The same call seen from step ``start`` on: for families that run the sequence in pieces."""
        if self.lengths is None and self.dt is None:
            return self
        return dataclasses.replace(
            self,
            lengths=None if self.lengths is None else (self.lengths - start).clamp(min=0),
            dt=None if self.dt is None else self.dt[:, start:],
        )
