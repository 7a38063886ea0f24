"""What a family's ``_forward(x, state, call)`` is asked besides its input and state: one signature
for every family (the base class builds the call once per forward).

Dimension legend: B batch, L length.

Padding reaches a family as right-padded rows with per-row ``lengths`` (the base compacts any mask);
the family makes every padded step an identity on its state, which for a linear recurrence means
input 0 and decay 1: ``call.zero_pads(b)`` and ``call.one_pads(a)``.

Packed rows (docs/packing.md) reach a family the same way: ``document_lengths`` checks the
``cu_seqlens`` offsets of one row, ``unpack`` lays its documents out as the rows of a right-padded
batch (each from its own state) and ``repack`` puts the outputs back end to end. A family that
resets its state natively lists the modes that do in ``packed_modes``: those see the packed row
itself with ``call.starts`` (True at every document's first token but the row's), and make each
such step start from the zero state: a linear recurrence zeroes its decay there
(``call.zero_starts(a)``), a short convolution passes ``starts`` to ``short_conv``.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from ..ops._documents import document_spans


def document_lengths(cu_seqlens: object, L: int, batch: int) -> list[int]:
    """The document lengths of one packed row of L tokens from its offsets ``cu_seqlens`` (N + 1,):
    integers starting at 0, strictly increasing, ending at L (as flash-attention and fla use them).
    Every violation is a ValueError naming what was wrong and what was expected."""
    if not isinstance(cu_seqlens, Tensor):
        raise TypeError(f"cu_seqlens must be a torch.Tensor of int32 offsets (N + 1,), got {type(cu_seqlens).__name__}")
    if cu_seqlens.dtype not in (torch.int32, torch.int64) or cu_seqlens.dim() != 1 or len(cu_seqlens) < 2:
        raise ValueError(f"cu_seqlens must be a 1-D int32 tensor of N + 1 >= 2 document offsets, got "
                         f"{cu_seqlens.dtype} of shape {tuple(cu_seqlens.shape)}")
    if batch != 1:
        raise ValueError(f"cu_seqlens gives the documents of one packed row, so x must have batch size 1, got "
                         f"B={batch}: put the rows end to end (x.reshape(1, B * L, D)) and concatenate their "
                         f"offsets")
    offsets = [int(v) for v in cu_seqlens.tolist()]
    if offsets[0] != 0:
        raise ValueError(f"cu_seqlens must start at 0 (the first document's offset), got {offsets[0]}")
    if any(b <= a for a, b in zip(offsets, offsets[1:])):
        i = next(i for i, (a, b) in enumerate(zip(offsets, offsets[1:])) if b <= a)
        raise ValueError(f"cu_seqlens must be strictly increasing (every document holds at least one token), "
                         f"got {offsets[i]} then {offsets[i + 1]} at index {i}")
    if offsets[-1] != L:
        raise ValueError(f"cu_seqlens must end at the row length L={L}, got {offsets[-1]}")
    return [b - a for a, b in zip(offsets, offsets[1:])]


def unpack(t: Tensor, lengths: list[int], fill: float = 0.0) -> Tensor:
    """t (1, L, ...) packed -> (N, max(lengths), ...): document i in row i, right-padded with ``fill``."""
    return torch.nn.utils.rnn.pad_sequence(list(t[0].split(lengths)), batch_first=True, padding_value=fill)


def repack(t: Tensor, lengths: Tensor) -> Tensor:
    """Inverse of ``unpack``: t (N, L_max, ...) -> (1, sum(lengths), ...), each row's real steps end to end."""
    return t[lengths_mask(lengths, t.shape[1])][None]


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
    starts: (B, L) bool, True where a new document starts within the row (a packed row, modes in
        the family's ``packed_modes`` only): the state before such a step is zero. None: no start.
        Given only with no initial state and need_state False.
    """

    mode: str
    lengths: Tensor | None = None
    dt: Tensor | None = None
    need_state: bool = True
    starts: Tensor | None = None

    def zero_starts(self, a: Tensor) -> Tensor:
        """a (B, L, ...) (B and trailing dims may be 1) with 0 at every document start: a decay (the
        carried state is dropped there) or a previous token (a token shift). a itself when no
        document starts."""
        if self.starts is None:
            return a
        starts = self.starts[:, : a.shape[1]]  # a piece of the row (``after``) sees its own steps
        s = starts.view(*starts.shape, *(1,) * (a.dim() - 2))
        return torch.where(s, torch.zeros((), dtype=a.dtype, device=a.device), a)

    def real(self, L: int) -> Tensor | None:
        """(B, L) bool, True at real steps; None when no row is padded."""
        return None if self.lengths is None else lengths_mask(self.lengths, L)

    def document_sizes(self) -> list[int]:
        """The lengths of the documents of a packed row (batch size 1), in order: for a family that
        runs each document through a kernel that cannot reset (``x.split(sizes, dim=1)``)."""
        if self.starts is None or self.starts.shape[0] != 1:
            raise ValueError("document_sizes needs the starts of one packed row (batch size 1)")
        (spans,) = document_spans(self.starts)
        return [t1 - t0 for t0, t1 in spans]

    def positions(self, L: int, device: torch.device) -> Tensor:
        """(1 or B, L) long: each step's position in its document (steps since its start)."""
        t = torch.arange(L, device=device)[None]
        if self.starts is None:
            return t
        return t - torch.where(self.starts, t, 0).cummax(dim=1).values

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
        if self.lengths is None and self.dt is None and self.starts is None:
            return self
        return dataclasses.replace(
            self,
            lengths=None if self.lengths is None else (self.lengths - start).clamp(min=0),
            dt=None if self.dt is None else self.dt[:, start:],
            starts=None if self.starts is None else self.starts[:, start:],
        )
