"""What LRU and S5 share: a complex diagonal recurrence over ``n_modes`` modes, run by
``ops.linear_scan`` (its modes are the layer's), read out instantaneously.

    h_t = a_t * h_{t-1} + b_t        y_t = output_block(h_t, x_t)        h (B, n_modes) complex

A family gives ``_recurrence_inputs(x, dt)`` (its decay and input, the discretization and the
input projection, per-token when dt is given) and ``output_block``; this base runs the forward,
the step (``linear_scan_step``), padding (identity steps) and the zero state.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..ops import linear_scan as linear_scan_op
from ..ops.linear_scan import linear_scan, linear_scan_step
from ._complex_io import complex_dtype
from .base import SequenceMixer
from .call import ForwardCall


class DiagonalRNN(SequenceMixer):
    """Base of LRU and S5; subclasses set ``n_modes`` and define the two methods below."""
    cp_state = ("diag",)  # context parallelism: the diagonal recurrence (docs/distributed.md)

    modes = linear_scan_op.MODES  # chunked, reference
    packed_modes = ("chunked", "reference")  # a document start zeroes the decay (docs/packing.md)
    n_modes: int

    def _recurrence_inputs(self, x: Tensor, dt: Tensor | None) -> tuple[Tensor, Tensor]:
        """x (..., D), dt (...) | None -> (decay (n,) or (..., n), input (..., n)) complex, n = n_modes."""
        raise NotImplementedError

    def output_block(self, h: Tensor, x: Tensor) -> Tensor:
        """The layer's output from its state and input, instantaneous in both (training.online reads
        it): h (..., n) complex, x (..., D) -> (..., D)."""
        raise NotImplementedError

    def _forward(self, x: Tensor, state, call: ForwardCall):
        a, bu = self._recurrence_inputs(x, call.dt)  # a (n,) or (B, L, n), bu (B, L, n)
        if call.lengths is not None:  # padded steps are identities: decay 1, input 0
            a, bu = call.one_pads(a.expand(bu.shape)), call.zero_pads(bu)
        if call.starts is not None:  # a packed row: the state is dropped at each document start
            a = call.zero_starts(a.expand(bu.shape))
        h0 = None if state is None else state[0].to(bu.dtype)
        h, h_last = linear_scan(a, bu, h0, mode=call.mode)
        return self.output_block(h, x), (h_last,)

    def _step(self, x_t: Tensor, state, dt: Tensor | None):
        _, h = linear_scan_step(*self._recurrence_inputs(x_t, dt), state[0])
        return self.output_block(h, x_t), (h,)

    def _zero_state(self, batch_size, device, dtype):
        return (torch.zeros(batch_size, self.n_modes, dtype=complex_dtype(dtype), device=device),)

    @property
    def state_size(self) -> int:
        return 2 * self.n_modes
