"""Chunked mode of the linear scan: two short Python loops (C offsets, L/C chunks), not L tokens.

Time splits into n = L // C chunks of C steps; the last L - nC steps (the "tail") run as a plain
loop. With h_i the state entering chunk i:

1. local pass   for j = 0..C-1 advance all n chunks at once from a zero state, giving e_i (the
                chunk's end state from zero) and P_i (the product of a over the chunk);
2. carry        for i = 0..n-1:  s_{i+1} = P_i s_i + e_i, the exact state entering each chunk;
3. output pass  for j = 0..C-1 rerun the recurrence in all chunks at once from s_i, writing h.

Only products and sums of the inputs appear (the loop's own terms, regrouped at chunk ends): no
logarithm and no division, so a = 0, a < 0 and complex a need no special case and nothing can
underflow that the reference would not. Each Python iteration works on a (B, n, *S) slab, so the loop
overhead is paid 2C + L/C times instead of L times; C defaults to about sqrt(L).

The backward pass is the same scan run backwards in time (docs/math/linear_scan.md):
g_t = dL/dh_t + conj(a_{t+1}) g_{t+1},  db_t = g_t,  da_t = g_t conj(h_{t-1}),  dh_0 = conj(a_0) g_0.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor


def default_chunk_size(L: int) -> int:
    """Power of two nearest sqrt(L): balances the C-step and the L/C-step loops."""
    return 1 << max(0, round(math.log2(L) / 2))


def _as_full_rank(a: Tensor, ndim: int) -> Tensor:
    """View a (broadcastable to (B, L, *S)) with leading singleton dims: (B or 1, L or 1, *S)."""
    return a.reshape((1,) * (ndim - a.ndim) + tuple(a.shape))


def _scan(a: Tensor, b: Tensor, h0: Tensor | None, reverse: bool, C: int) -> tuple[Tensor, Tensor]:
    """h_t = a_t h_{t-1} + b_t (or h_t = a_t h_{t+1} + b_t when ``reverse``); one dtype throughout.

    a: broadcastable to b (B, L, *S); h0: (B, *S) or None. Returns (h (B, L, *S), last state (B, *S)).
    """
    B, L = b.shape[:2]
    a = _as_full_rank(a, b.ndim)  # (Ba, La, *S), La in {1, L}
    const = a.shape[1] == 1
    n = L // C
    r = L - n * C
    lo = r if reverse else 0  # the chunked region is [lo, lo + nC); the tail is the rest
    out = torch.empty_like(b)
    h = torch.zeros_like(b[:, 0]) if h0 is None else h0
    if n:
        bv = b[:, lo : lo + n * C].unflatten(1, (n, C))  # (B, n, C, *S)
        ov = out[:, lo : lo + n * C].unflatten(1, (n, C))
        av = a if const else a[:, lo : lo + n * C].unflatten(1, (n, C))  # (Ba, 1 | n, 1 | C, *S)
        offsets = range(C - 1, -1, -1) if reverse else range(C)

        def a_at(j: int) -> Tensor:  # (Ba, 1 | n, *S)
            return av if const else av[:, :, j]

        # Updated in place: a fresh multi-MB temporary per step costs page faults on CPU.
        j0, *rest = offsets
        e, P = bv[:, :, j0].clone(), a_at(j0).clone()
        for j in rest:
            torch.addcmul(bv[:, :, j], a_at(j), e, out=e)
            P.mul_(a_at(j))
        P = P.expand(P.shape[0], n, *P.shape[2:])
        starts = torch.empty_like(bv[:, :, 0])  # (B, n, *S): state entering each chunk
        for i in range(n - 1, -1, -1) if reverse else range(n):
            starts[:, i] = h
            h = torch.addcmul(e[:, i], P[:, i], h)
        prev = starts
        for j in offsets:
            prev = torch.addcmul(bv[:, :, j], a_at(j), prev, out=ov[:, :, j])
        # Continue the tail from the state the output pass wrote, so h_L == h[:, -1] exactly.
        h = prev[:, 0] if reverse else prev[:, n - 1]
    for t in range(r - 1, -1, -1) if reverse else range(n * C, L):
        h = torch.addcmul(b[:, t], a[:, 0 if const else t], h, out=out[:, t])
    return out, out[:, 0 if reverse else L - 1].clone()


def _scan_traceable(a: Tensor, b: Tensor, h0: Tensor | None, C: int) -> tuple[Tensor, Tensor]:
    """``_scan`` forward in time without writes into views (``out=`` slices, in-place updates):
    the same three passes on the same slabs, the slices gathered with ``torch.stack``. torch.compile
    and torch.export trace it (they cannot trace ``out=`` into a strided view); autograd
    differentiates it directly, so no custom Function is needed while tracing."""
    B, L = b.shape[:2]
    a = _as_full_rank(a, b.ndim)
    const = a.shape[1] == 1
    n = L // C
    h = torch.zeros_like(b[:, 0]) if h0 is None else h0
    pieces = []
    if n:
        bv = b[:, : n * C].unflatten(1, (n, C))
        av = a if const else a[:, : n * C].unflatten(1, (n, C))

        def a_at(j: int) -> Tensor:
            return av if const else av[:, :, j]

        e, P = bv[:, :, 0], a_at(0)
        for j in range(1, C):
            e, P = torch.addcmul(bv[:, :, j], a_at(j), e), P * a_at(j)
        P = P.expand(P.shape[0], n, *P.shape[2:])
        starts = []
        for i in range(n):
            starts.append(h)
            h = torch.addcmul(e[:, i], P[:, i], h)
        prev, cols = torch.stack(starts, 1), []
        for j in range(C):
            prev = torch.addcmul(bv[:, :, j], a_at(j), prev)
            cols.append(prev)
        pieces.append(torch.stack(cols, 2).flatten(1, 2))
        h = prev[:, n - 1]
    tail = []
    for t in range(n * C, L):
        h = torch.addcmul(b[:, t], a[:, 0 if const else t], h)
        tail.append(h)
    if tail:
        pieces.append(torch.stack(tail, 1))
    out = torch.cat(pieces, 1) if len(pieces) > 1 else pieces[0]
    return out, h


def _shift(x: Tensor, first: Tensor, toward_later: bool) -> Tensor:
    """Along dim 1: y_t = x_{t-1} with y_0 = first (toward_later), else y_t = x_{t+1}, y_{L-1} = first."""
    if toward_later:
        return torch.cat([first.unsqueeze(1), x[:, :-1]], dim=1)
    return torch.cat([x[:, 1:], first.unsqueeze(1)], dim=1)


class _LinearScan(torch.autograd.Function):
    """Autograd of ``_scan``; its backward calls this Function again, so double backward works."""

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, h0: Tensor | None, reverse: bool, C: int):  # noqa: ANN205
        h, last = _scan(a, b, h0, reverse, C)
        ctx.save_for_backward(a, h, h0)
        ctx.reverse, ctx.chunk = reverse, C
        return h, last

    @staticmethod
    def backward(ctx, dh: Tensor, dlast: Tensor):  # noqa: ANN205
        a, h, h0 = ctx.saved_tensors
        reverse = ctx.reverse
        need_a, need_b, need_h0 = ctx.needs_input_grad[:3]
        a_full = _as_full_rank(a, h.ndim)
        first, final = (-1, 0) if reverse else (0, -1)
        # Total gradient at h_t: g_t = dh_t + conj(a of the next step) g_next, with dlast added at
        # the final step. A time-varying a gets coefficient 1 at the final step, so dlast enters
        # as the reverse scan's initial state; a constant a has no such slot: fold dlast into dh.
        if a_full.shape[1] == 1:
            x, init, c = dh.clone(), None, a_full.conj()
            x[:, final] += dlast
        else:
            x, init = dh, dlast
            c = _shift(a_full, torch.ones_like(a_full[:, 0]), toward_later=reverse).conj()
        g, _ = _LinearScan.apply(c, x, init, not reverse, ctx.chunk)
        da = db = dh0 = None
        if need_a:
            start = torch.zeros_like(h[:, 0]) if h0 is None else h0
            da = _grad_a(g, h, start, reverse).sum_to_size(a.shape)
        if need_b:
            db = g
        if need_h0:
            dh0 = g[:, first] * a_full[:, 0 if a_full.shape[1] == 1 else first].conj()
        return da, db, dh0, None, None


def _grad_a(g: Tensor, h: Tensor, start: Tensor, reverse: bool) -> Tensor:
    """g_t conj(h_prev_t), h_prev_t the state step t reads (h_{t-1}, or h_{t+1} when reverse)."""
    if torch.is_grad_enabled():  # double backward: differentiable ops only
        return g * _shift(h, start, toward_later=not reverse).conj()
    # One output buffer instead of a shifted copy of h plus the product.
    da = torch.empty_like(g)
    cur, prev = (slice(None, -1), slice(1, None)) if reverse else (slice(1, None), slice(None, -1))
    torch.mul(g[:, cur], h[:, prev].conj(), out=da[:, cur])
    edge = -1 if reverse else 0
    torch.mul(g[:, edge], start.conj(), out=da[:, edge])
    return da


def linear_scan_chunked(
    a: Tensor, b: Tensor, initial_state: Tensor | None = None, *, chunk_size: int | None = None
) -> tuple[Tensor, Tensor]:
    """Same signature and result as ``linear_scan_reference``; ``chunk_size`` C defaults to ~sqrt(L).

    b: (B, L, *S); a broadcastable to b; initial_state (B, *S) -> (h (B, L, *S), h_L (B, *S)).
    """
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
    C = chunk_size or default_chunk_size(b.shape[1])
    dtype = torch.promote_types(a.dtype, b.dtype)
    if initial_state is not None:
        dtype = torch.promote_types(dtype, initial_state.dtype)
    # Casting outside the Function lets autograd turn gradients back to each input's dtype.
    h0 = None if initial_state is None else initial_state.to(dtype)
    if torch.compiler.is_compiling():
        return _scan_traceable(a.to(dtype), b.to(dtype), h0, C)
    return _LinearScan.apply(a.to(dtype), b.to(dtype), h0, False, C)

