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
    run: Callable[[list[Tensor | None], State | None], tuple[Tensor, State]],
    starts: Tensor,
    initial_state: State | None,
    seqs: list[Tensor | None],
) -> tuple[Tensor, State]:
    """``run(pieces, h0)`` -> (y (1, n, ...), final (1, ...)) runs one document: ``pieces`` are the
    ``seqs`` (B, L, ...) tensors (None stays None) cut to its steps, h0 its initial state (None:
    zeros; a tensor or a tuple of tensors, batch first). Returns (y (B, L, ...), final (B, ...)) of
    the rows with the state reset at every start. The cuts are ``split``s, whose backward is one
    concatenation (slicing would add a zero-filled (B, L, ...) gradient per document)."""
    rows = [None if t is None else t.split(1, dim=0) for t in seqs]
    ys, finals = [], []
    for b, spans in enumerate(document_spans(starts)):
        h = None if initial_state is None or bool(starts[b, 0]) else _rows(initial_state, b)
        sizes = [t1 - t0 for t0, t1 in spans]
        cut = [None if r is None else r[b].split(sizes, dim=1) for r in rows]
        out = []
        for i in range(len(spans)):
            y, h = run([None if c is None else c[i] for c in cut], h if i == 0 else None)
            out.append(y)
        ys.append(torch.cat(out, dim=1))
        finals.append(h)
    if isinstance(finals[0], Tensor):
        return torch.cat(ys), torch.cat(finals)
    return torch.cat(ys), type(finals[0])(torch.cat(parts) for parts in zip(*finals))


def _rows(state: State, b: int) -> State:
    return state[b : b + 1] if isinstance(state, Tensor) else type(state)(t[b : b + 1] for t in state)
