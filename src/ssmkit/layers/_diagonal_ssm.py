"""A diagonal SSM per channel run over a padded batch, the two ways S4D, DSS, GSS, Liquid-S4 and H3
share (docs/math/s4d.md). Dimension legend: B batch, L length, H channels, N complex modes.

    h_t = dA * h_{t-1} + dB * u_t,    y_t = Re(sum_n C_n h_t,n)                   (per channel)

- ``diagonal_fft``: y = K * u with K_l = Re(sum_n C_n dB_n dA_n^l) (core.vandermonde) through
  ``long_conv`` mode fft; an incoming state adds Re(sum_n C_n dA_n^{t+1} h0_n); the final state is
  dA^len h0 + dB * sum_t dA^{len-1-t} u_t, each row right-aligned so that every row uses the same
  powers, a chunked matmul (``vandermonde_contract``), never (B, H, N, L).
- ``diagonal_scan``: the recurrence through ``linear_scan`` in pieces of ``chunk`` tokens, so that
  only (B, chunk, H, N) states exist at once; the coefficients of each piece come from a function,
  so a time-varying discretization (per-token dt) is formed piece by piece too.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import torch
from torch import Tensor

from ..core.vandermonde import initial_state_output, vandermonde_contract, vandermonde_kernel, vandermonde_powers
from ..ops.linear_scan import linear_scan
from ..ops.long_conv import long_conv
from .call import ForwardCall


class DiagonalSystem(NamedTuple):
    """The discrete system, every field (H, N) complex; log_dA = log(dA) (kept exact for zoh)."""

    dA: Tensor
    log_dA: Tensor
    dB: Tensor
    C: Tensor


def diagonal_fft(
    u: Tensor, h0: Tensor | None, lengths: Tensor | None, s: DiagonalSystem, need_state: bool = True
) -> tuple[Tensor, Tensor | None]:
    """u (B, L, H) right-padded after ``lengths`` (B,) | None, h0 (B, H, N) | None -> (y (B, L, H),
    the state after each row's length (B, H, N), or None when ``need_state`` is False)."""
    B, L, H = u.shape
    # Time-major copy (B, H, L), made once: long_conv's FFT and the state contraction both run
    # along time, and its (B, L, H) view hands long_conv contiguous rows.
    ut = u.transpose(1, 2).contiguous()
    powers = vandermonde_powers(s.dA, L, s.log_dA)  # shared by the three contractions
    y, _ = long_conv(ut.transpose(1, 2), vandermonde_kernel(s.C * s.dB, s.dA, L, powers=powers), mode="fft")
    if h0 is not None:
        y = y + initial_state_output(s.C, h0, s.dA, L, powers=powers).transpose(1, 2)
    if not need_state:
        return y, None
    if lengths is None:
        w, n = ut, torch.full((B,), L, device=u.device)
    else:  # right-align each row (its last real token at L-1): every row uses the powers dA^{L-1-t}
        idx = torch.arange(L, device=u.device) - (L - lengths[:, None])  # (B, L)
        w = ut.gather(2, idx.clamp(min=0)[:, None, :].expand(B, H, L)) * (idx >= 0)[:, None, :]
        n = lengths
    h = s.dB * vandermonde_contract(w, s.dA, powers=powers, reverse=True)
    if h0 is not None:
        h = h + torch.exp(n.to(u.dtype)[:, None, None] * s.log_dA) * h0
    return y, h


def diagonal_scan(
    u: Tensor, h0: Tensor | None, call: ForwardCall, C: Tensor, chunk: int,
    terms: Callable[[int, Tensor], tuple[Tensor, Tensor]],
) -> tuple[Tensor, Tensor]:
    """u (B, L, H), h0 (B, H, N) | None -> (y (B, L, H), the state after each row's length), through
    ``linear_scan`` mode ``call.mode``, ``chunk`` tokens at a time. ``terms(t0, u_piece)`` gives the
    decay and the input (a broadcastable to b, b (B, c, H, N)) of the piece starting at t0, from its
    input u_piece (B, c, H, 1); C (H, N) is the readout. Padded steps are identities."""
    L = u.shape[1]
    h, ys = h0, []
    for t0 in range(0, L, chunk):
        a, b = terms(t0, u[:, t0:t0 + chunk, :, None])
        piece = call.after(t0)
        if piece.lengths is not None:  # padded steps: decay 1, input 0
            a, b = piece.one_pads(a.expand(b.shape)), piece.zero_pads(b)
        if piece.starts is not None:  # a packed row: the state is dropped at each document start
            a = piece.zero_starts(a.expand(b.shape))
        hs, h = linear_scan(a, b, h, mode=call.mode)
        ys.append((C * hs).real.sum(-1))  # (B, c, H)
    return torch.cat(ys, dim=1), h
