"""SSD's dual "attention" form: y = (L o C B^T)(dt x), O(L^2) in time and memory.

L_ts = exp(segsum(dt A)_ts) is the causal decay mask; the initial state enters as a virtual key
before t = 0, decayed by exp(dt_0 A + ... + dt_t A). Derivation: docs/math/ssd.md.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ...core.segsum import segsum


def ssd_quadratic(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    initial_state: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Same signature and result as ``ssd_reference``."""
    H, G = x.shape[2], B.shape[2]
    # (B, H, L, .) layout: head h reads group h // (H/G)
    Bh = B.repeat_interleave(H // G, dim=2).transpose(1, 2)  # (B, H, L, N)
    Ch = C.repeat_interleave(H // G, dim=2).transpose(1, 2)
    xdt = (x * dt[..., None]).transpose(1, 2)  # (B, H, L, P)
    a = (dt * A).transpose(1, 2)  # (B, H, L) log-decay of each step, <= 0
    mask = torch.exp(segsum(a))  # (B, H, L, L): mask[t, s] = prod_{s<k<=t} exp(a_k), 0 for s > t
    y = ((Ch @ Bh.transpose(-1, -2)) * mask) @ xdt  # (B, H, L, P)
    # the final state is the mask's last row applied to the keys:
    # h_{L-1} = sum_s mask[L-1, s] xdt_s B_s^T
    final = (xdt * mask[..., -1, :, None]).transpose(-1, -2) @ Bh  # (B, H, P, N)
    if initial_state is not None:
        from_start = torch.exp(a.cumsum(-1))[..., None]  # (B, H, L, 1): decay of h_0 through step t
        y = y + (Ch @ initial_state.transpose(-1, -2)) * from_start
        final = final + from_start[:, :, -1, :, None] * initial_state
    y = y.transpose(1, 2)  # (B, L, H, P)
    if D is not None:
        y = y + x * (D[:, None] if D.ndim == 1 else D)
    return y, final
