"""Packing: pieces of documents laid end to end in one row, with no padding (docs/packing.md).

A language-model piece is a run of ``count`` tokens of one document starting at ``begin`` in the
concatenated text, with the next token of each position (in the same document) as its target. A
padded batch gives every piece a row of L positions and masks the rest; a packed batch puts the
pieces one after the other in a single row (1, total) and marks where each starts with
``cu_seqlens``, so every position is a real token and every mixer starts each piece from a zero
state (``SequenceMixer.forward(..., cu_seqlens=...)``): the same pieces, the same predictions, no
compute spent on padding.
"""
from __future__ import annotations

from typing import Iterator

import torch
from torch import Tensor

from .base import Batch


def pack_groups(counts: list[int], budget: int) -> list[list[int]]:
    """Indices of the pieces in order, cut into consecutive groups of at most ``budget`` tokens
    (greedy; a piece is never split, so a piece longer than the budget is a group of its own)."""
    if budget < 1:
        raise ValueError(f"the token budget of a packed row must be >= 1, got {budget}")
    groups: list[list[int]] = []
    used = budget
    for i, n in enumerate(counts):
        if n < 1:
            raise ValueError(f"piece {i} has {n} tokens; a packed piece needs at least one")
        if used + n > budget:
            groups.append([])
            used = 0
        groups[-1].append(i)
        used += n
    return groups


def packed_batch(text: Tensor, begins: Tensor, counts: Tensor) -> Batch:
    """One packed row of the pieces (begins[i], counts[i]) of ``text`` (the concatenated documents):
    inputs text[begin : begin + count] and targets text[begin + 1 : begin + count + 1], piece after
    piece, (1, sum(counts)) each, with ``cu_seqlens`` (N + 1,) int32 at the pieces' starts."""
    offsets = torch.cumsum(counts, 0)
    starts = offsets - counts
    within = torch.arange(int(offsets[-1])) - torch.repeat_interleave(starts, counts)
    pos = torch.repeat_interleave(begins, counts) + within
    cu = torch.cat([offsets.new_zeros(1), offsets]).to(torch.int32)
    return Batch(text[pos][None], text[pos + 1][None], cu_seqlens=cu)


def packed_batches(text: Tensor, begins: Tensor, counts: Tensor, budget: int) -> Iterator[Batch]:
    """The pieces in order, packed into rows of at most ``budget`` tokens (``pack_groups``)."""
    for group in pack_groups(counts.tolist(), budget):
        idx = torch.tensor(group)
        yield packed_batch(text, begins[idx], counts[idx])
