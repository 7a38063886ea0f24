"""Document starts inside a row (packed rows, docs/packing.md): no tap reaches before a start.

With seg_t = the number of starts at or before t (the inputs of the initial state have seg 0), the
convolution of a packed row is the plain one minus the taps that read another document:

    y_t -= Σ_{j<K-1} weight[:, j] ext[t+j] [seg_ext[t+j] != seg_t],   ext = [state, x]

(the last tap reads x_t itself, always in its document), and the final state keeps the last K-1
inputs of the last document only (zeros before its start), as that document run alone would.
The correction is applied after any mode, so every mode resets the same way.
"""
from __future__ import annotations

import torch
from torch import Tensor


def drop_cross_taps(y: Tensor, final: Tensor, x: Tensor, weight: Tensor, initial_state: Tensor | None,
                    starts: Tensor) -> tuple[Tensor, Tensor]:
    """y (B, L, D) and final (B, K-1, D) of the plain convolution -> those of the row whose state
    is zero before every token where ``starts`` (B, L) bool is True."""
    B, L, D = x.shape
    K = weight.shape[1]
    if K == 1:
        return y, final
    ext = torch.cat([x.new_zeros(B, K - 1, D) if initial_state is None else initial_state, x], dim=1)
    seg = starts.long().cumsum(1)  # (B, L)
    seg_ext = torch.cat([seg.new_zeros(B, K - 1), seg], dim=1)  # (B, K-1+L)
    for j in range(K - 1):  # tap j reads ext[:, t + j]
        cross = (seg_ext[:, j : j + L] != seg)[..., None]
        y = y - torch.where(cross, weight[:, j] * ext[:, j : j + L], 0.0)
    keep = (seg_ext[:, L:] == seg[:, -1:])[..., None]
    return y, torch.where(keep, final, 0.0)
