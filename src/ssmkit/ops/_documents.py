"""Packed rows for the ops (docs/packing.md): ``starts`` (B, L) bool marks the tokens that begin a
new document, before which the state is zero.

``by_documents`` runs an op's mode on each document of each row in turn, the first document of a
row from the row's initial state (unless a start sits at t = 0) and every later one from zeros, the
final state being that of the row's last document. Each document is a contiguous slice of the row,
so the work is the row's (no padding) and every mode (a compiled kernel included) resets exactly:
it is that document run alone. The cost over one call is a Python call per document.
"""
from __future__ import annotations

from typing import Callable, Union

import torch
from torch import Tensor

State = Union[Tensor, tuple[Tensor, ...]]  # an op's state: one tensor, or a tuple (mLSTM's C, n, m)


def check_starts(op: str, starts: Tensor, like: Tensor) -> None:
    """``starts`` must be a (B, L) bool tensor for ``like`` (B, L, ...)."""
    if not isinstance(starts, Tensor) or starts.dtype != torch.bool or starts.shape != like.shape[:2]:
        got = f"{starts.dtype} {tuple(starts.shape)}" if isinstance(starts, Tensor) else type(starts).__name__
        raise ValueError(f"{op}: starts must be a bool tensor of shape (B, L) = {tuple(like.shape[:2])}, got {got}")


def document_spans(starts: Tensor) -> list[list[tuple[int, int]]]:
    """Per row, the (begin, end) of its documents: cut before every start (and at 0 and L)."""
    L = starts.shape[1]
    out = []
    for row in starts.tolist():
        cuts = [0, *(t for t in range(1, L) if row[t]), L]
        out.append(list(zip(cuts, cuts[1:])))
    return out


def by_documents(
    run: Callable[[int, int, int, State | None], tuple[Tensor, State]],
    starts: Tensor,
    initial_state: State | None,
) -> tuple[Tensor, State]:
    """``run(b, t0, t1, h0)`` -> (y (1, t1 - t0, ...), final (1, ...)) runs row b's steps [t0, t1)
    from state h0 (None: zeros; a tensor or a tuple of tensors, batch first). Returns
    (y (B, L, ...), final (B, ...)) of the rows with the state reset at every start."""
    ys, finals = [], []
    for b, spans in enumerate(document_spans(starts)):
        h = None if initial_state is None or bool(starts[b, 0]) else _rows(initial_state, b)
        row = []
        for i, (t0, t1) in enumerate(spans):
            y, h = run(b, t0, t1, h if i == 0 else None)
            row.append(y)
        ys.append(torch.cat(row, dim=1))
        finals.append(h)
    if isinstance(finals[0], Tensor):
        return torch.cat(ys), torch.cat(finals)
    return torch.cat(ys), type(finals[0])(torch.cat(parts) for parts in zip(*finals))



def _rows(state: State, b: int) -> State:
    return state[b : b + 1] if isinstance(state, Tensor) else type(state)(t[b : b + 1] for t in state)
