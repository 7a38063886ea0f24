"""One token of the Mamba-1 selective scan: the recurrence, written once (the reference loop and
the Mamba layer's ``step`` call it).

    dt_t      = softplus(delta_t + delta_bias)   (or delta_t + delta_bias without softplus)
    h_t[d, n] = exp(dt_t[d] A[d, n]) h_{t-1}[d, n] + dt_t[d] B_t[g(d), n] u_t[d]
    y_t[d]    = sum_n C_t[g(d), n] h_t[d, n] + D[d] u_t[d],   then  y_t *= silu(z_t)  if z is given

with g(d) = d // (D / G) the group of channel d.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ...core.activations import softplus
from ...core.precision import float32_core


def per_channel(M_t: Tensor, width: int) -> Tensor:
    """One step of B or C, (B, N) or (B, G, N), as (B, D, N): channel d reads group d // (D/G)."""
    if M_t.dim() == 2:
        return M_t.unsqueeze(1).expand(-1, width, -1)
    Bsz, groups, N = M_t.shape
    return M_t.unsqueeze(2).expand(Bsz, groups, width // groups, N).reshape(Bsz, width, N)


def discretized_step(delta: Tensor, delta_bias: Tensor | None, delta_softplus: bool) -> Tensor:
    """dt (..., D) = softplus(delta + delta_bias) or delta + delta_bias."""
    dt = delta if delta_bias is None else delta + delta_bias
    return softplus(dt) if delta_softplus else dt


@float32_core
def selective_scan_step(
    u_t: Tensor,
    delta_t: Tensor,
    A: Tensor,
    B_t: Tensor,
    C_t: Tensor,
    D: Tensor | None = None,
    z_t: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    state: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """u_t, delta_t, z_t (B, D); A (D, N); B_t, C_t (B, N) or (B, G, N); D, delta_bias (D,);
    state (B, D, N) | None (zeros) -> (y_t (B, D), new_state (B, D, N))."""
    width = u_t.shape[1]
    dt = discretized_step(delta_t, delta_bias, delta_softplus)
    h = u_t.new_zeros(u_t.shape[0], width, A.shape[1]) if state is None else state
    h = torch.exp(dt[..., None] * A) * h + (dt * u_t)[..., None] * per_channel(B_t, width)
    y = (h * per_channel(C_t, width)).sum(-1)
    if D is not None:
        y = y + D * u_t
    if z_t is not None:
        y = y * F.silu(z_t)
    return y, h
