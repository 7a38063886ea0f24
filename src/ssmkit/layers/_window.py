"""Shared pieces of the Transformers that regain recurrence (swa, transformer_xl, infini_attention,
block_recurrent, rmt, vpt): token histories, banded attention in blocks, and block-aligned views.

Dimension legend: B batch, L length, D model width, H heads, P head dim, C chunk (query block)
length, T history length, W block (segment) length.

**History.** A family whose tokens see a bounded past keeps the last T entries of each row (keys,
values or inputs), right-aligned, in a (B, T, ...) tensor, with the row's token count ``n`` (B,):
slot j holds the token at absolute position n - T + j, which does not exist when negative (its
entries are zero). A call concatenates the history with its new entries into ``ext`` (B, T + L, ...),
where new token i sits at ext index T + i (absolute position n + i), and leaves as its history the
T entries before ext index T + lengths[b] (``tail``): padded tokens after a row's length never
enter it. Every rule below reads absolute positions, so a row's phase within its blocks (n mod W)
may differ from row to row (masks, states from other calls) and a split anywhere is exact.

**Banded attention** (``local_attention``): a query sees at most the T entries before it, so queries
run in blocks of C, each against the C + T ext entries it can see (an unfold of ext); ``reference``
runs one block holding every query (the dense L x (T + L) masked softmax).

**Block-aligned views** (``block_view`` / ``unblock``): a recurrence updated once per block of W
tokens (Infini-attention's memory, the Block-Recurrent state, RMT's memory) runs over ext read from
each row's current block start, so block k of every row is the row's k-th block from there.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from ..config import check
from ..core.precision import float32_core


def positions(n: Tensor, T: int, L: int) -> Tensor:
    """(B, T + L) long: the absolute position of each ext index (negative: no token)."""
    return n[:, None] - T + torch.arange(T + L, device=n.device)


def gather_rows(t: Tensor, idx: Tensor) -> Tensor:
    """t (B, S, ...), idx (B, M) long -> (B, M, ...) with t[b, idx[b, m]], zero where idx is outside [0, S)."""
    S = t.shape[1]
    inside = (idx >= 0) & (idx < S)
    view = (*idx.shape, *(1,) * (t.dim() - 2))
    got = t.gather(1, idx.clamp(0, S - 1).view(view).expand(*idx.shape, *t.shape[2:]))
    return got * inside.view(view).to(t.dtype)


def tail(ext: Tensor, end: Tensor, T: int) -> Tensor:
    """ext (B, S, ...) -> (B, T, ...): the T entries before ext index end[b] (the new history)."""
    return gather_rows(ext, end[:, None] - T + torch.arange(T, device=ext.device))


def call_lengths(lengths: Tensor | None, B: int, L: int, device: torch.device) -> Tensor:
    """The real tokens per row of a call: ``call.lengths``, or L for every row."""
    return torch.full((B,), L, dtype=torch.long, device=device) if lengths is None else lengths.long()


def token_count(length: Tensor) -> Tensor:
    """A state's float token count (B,) -> long (floats keep every leaf of a state differentiable)."""
    return length.detach().round().long()


AttendFn = Callable[[Tensor, list[Tensor], Tensor, Tensor], Tensor]


@float32_core  # attention math in float32 under autocast, as the states it reads
def local_attention(q: Tensor, ext: list[Tensor], n: Tensor, T: int, block: int, attend: AttendFn) -> Tensor:
    """Run ``attend(q_blk, ext_blk, q_pos, k_pos)`` over blocks of ``block`` queries, each with the
    ``block`` + T ext entries it can see.

    q (B, L, ...) and each ext tensor (B, T + L, ...) -> (B, L, ...). ``attend`` gets q_blk
    (B, nC, C, ...), ext_blk (B, nC, C + T, ...), and the absolute positions q_pos (B, nC, C, 1),
    k_pos (B, nC, 1, C + T); it must let every query see its own slot (padded queries after L then
    stay finite), and returns (B, nC, C, ...).
    """
    B, L = q.shape[:2]
    C = max(1, min(block, L))
    nC = -(-L // C)
    pad = nC * C - L
    q_blk = _pad_time(q, pad).view(B, nC, C, *q.shape[2:])
    ext_blk = [_pad_time(e, pad).unfold(1, C + T, C).movedim(-1, 2) for e in ext]  # (B, nC, C + T, ...)
    start = n[:, None] + C * torch.arange(nC, device=q.device)  # (B, nC): first query of each block
    q_pos = (start[..., None] + torch.arange(C, device=q.device))[..., None]
    k_pos = (start[..., None] - T + torch.arange(C + T, device=q.device))[..., None, :]
    out = attend(q_blk, ext_blk, q_pos, k_pos)
    return out.reshape(B, nC * C, *out.shape[3:])[:, :L]


def _pad_time(t: Tensor, pad: int) -> Tensor:
    return t if pad == 0 else torch.cat([t, t.new_zeros(t.shape[0], pad, *t.shape[2:])], 1)


def softmax_attend(q: Tensor, k: Tensor, v: Tensor, visible: Tensor | None, bias: Tensor | None = None) -> Tensor:
    """softmax(q k^T / sqrt(P) + bias, over the visible keys) v.

    q (..., C, H, P), k, v (..., S, H, P), visible (..., C, S) bool (or broadcastable; None: every
    key), bias (..., H, C, S) -> (..., C, H, P). Every query must see at least one key.
    """
    scores = torch.einsum("...qhp,...khp->...hqk", q, k) / math.sqrt(q.shape[-1])
    if bias is not None:
        scores = scores + bias
    return torch.einsum("...hqk,...khp->...qhp", masked_softmax(scores, visible), v)


def masked_softmax(scores: Tensor, visible: Tensor | None) -> Tensor:
    """scores (..., H, C, S), visible (..., C, S) bool or None (every key) -> attention weights."""
    if visible is not None:
        scores = scores.masked_fill(~visible.unsqueeze(-3), float("-inf"))
    return torch.softmax(scores, dim=-1)


def block_view(ext: Tensor, start: Tensor, n_blocks: int, W: int) -> Tensor:
    """ext (B, S, ...) -> (B, n_blocks, W, ...): block k of row b is ext[b, start[b] + k W : ...]
    (zeros past ext)."""
    idx = start[:, None] + torch.arange(n_blocks * W, device=ext.device)
    return gather_rows(ext, idx).view(ext.shape[0], n_blocks, W, *ext.shape[2:])


def unblock(blocks: Tensor, offset: Tensor, L: int) -> Tensor:
    """blocks (B, nb, W, ...) -> (B, L, ...): entries offset[b] .. offset[b] + L - 1 of each row."""
    flat = blocks.reshape(blocks.shape[0], -1, *blocks.shape[3:])
    return gather_rows(flat, offset[:, None] + torch.arange(L, device=blocks.device))


def state_dtype(x: Tensor) -> torch.dtype:
    """The dtype states and attention math keep: at least float32 (under autocast x may be bf16)."""
    return torch.promote_types(x.dtype, torch.float32)


def sinusoids(n: int, d: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """(n, d): the Transformer's sinusoidal encoding of 0 .. n-1 (sin in the first half, cos in the
    second, frequencies 10000^{-2i/d}); angles in float64 so large positions keep their digits."""
    inv = 10000.0 ** (-torch.arange(0, d, 2, device=device, dtype=torch.float64) / d)
    ang = torch.arange(n, device=device, dtype=torch.float64)[:, None] * inv
    return torch.cat([ang.sin(), ang.cos()], -1)[:, :d].to(dtype)


def check_window_field(value: int, field: str) -> None:
    """A window, memory, block or segment length: an int >= 1 (an error naming the field otherwise)."""
    check(value >= 1, field, f"must be an int >= 1, got {value!r}")


__all__ = [
    "block_view", "call_lengths", "check_window_field", "gather_rows", "local_attention", "masked_softmax", "positions", "sinusoids",
    "softmax_attend", "state_dtype", "tail", "token_count", "unblock",
]
