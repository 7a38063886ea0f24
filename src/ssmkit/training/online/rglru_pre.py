"""Exact traces of RG-LRU's input path (linear_x, then the causal depthwise conv) into its state.

Dimension legend: B batch, D layer width, W = H P recurrence width in H gate blocks of P, K conv
taps, F = K + 1 + D + 1 features of one conv row.

The conv output u_t[n] is linear in the parameters of its own row n (conv taps w_n, conv bias,
linear_x row and bias), with the per-step feature vector

    d_t[n] = [xb_{t-K+1..t}[n],  1,  sum_j w_n[j] [x_{t-K+1+j}, 1]]          (B, W, F)

(xb = linear_x(x); inputs before the stream are zero), and u_t reaches the state through the gates,
whose block-diagonal weights mix u within a block: J_t = d h_t / d u_t is block-diagonal
(B, H, P, P), J = diag(s_u) + diag(s_za) W_a + diag(s_zx) W_x from the step's local derivatives.
Hence the trace of state element m of block g with respect to row n of the same block,

    E_t[g, m, n, :] = a_t[m] E_{t-1}[g, m, n, :] + J_t[g, m, n] d_t[g, n, :]   (B, H, P, P, F)

which is exact and costs P F floats per state element: not O(state) as the diagonal parameters
are, because u mixes within a gate block; with P = W / H small it stays cheap.
"""
from __future__ import annotations

import torch
from torch import Tensor


class RGLRUPreTrace:
    """The block trace E, its accumulator G (W, F) and the map of G onto conv1d / linear_x grads."""

    def __init__(self, family) -> None:
        self.fam = family
        m = family.mixer
        self.H, self.P = family._blocks()
        self.K, self.D = m.config.conv_kernel, m.d_model
        self.F = self.K + 1 + self.D + 1

    def reset(self, batch: int, dtype: torch.dtype, device) -> None:
        self.E = torch.zeros(batch, self.H, self.P, self.P, self.F, dtype=dtype, device=device)

    def zero_accumulator(self) -> None:
        m = self.fam.mixer
        self.G = torch.zeros(m.lru_width, self.F, dtype=m.a_param.dtype, device=m.a_param.device)

    def update(self, a: Tensor, s_z: dict[str, Tensor], s_e: dict[str, Tensor], M: dict[str, Tensor],
               old_carry: tuple, new_carry: tuple) -> None:
        m, H, P = self.fam.mixer, self.H, self.P
        B = a.shape[0]
        win_xb = torch.cat([old_carry[0], new_carry[0][:, -1:]], 1)  # (B, K, W): the conv window at t
        win_x = torch.cat([old_carry[1], new_carry[1][:, -1:]], 1)  # (B, K, D + 1)
        w = m.conv1d.weight[:, 0, :].detach()  # (W, K)
        d = torch.cat([win_xb.transpose(1, 2), torch.ones_like(win_xb[:, 0, :, None]),
                       torch.einsum("wk,bkd->bwd", w, win_x)], -1)  # (B, W, F)
        blk = (B, H, P, 1)
        J = s_z["Wa"].reshape(blk) * M["Wa"].reshape(H, P, P) + s_z["Wx"].reshape(blk) * M["Wx"].reshape(H, P, P)
        J = J + torch.diag_embed(s_e["u"].reshape(B, H, P))
        self.E = a.reshape(B, H, P, 1, 1) * self.E + J[..., None] * d.reshape(B, H, 1, P, self.F)

    def accumulate(self, delta: Tensor) -> None:
        B = delta.shape[0]
        self.G += torch.einsum("bgm,bgmnf->gnf", delta.reshape(B, self.H, self.P), self.E).reshape(-1, self.F)

    def flush(self) -> None:
        m, K, D = self.fam.mixer, self.K, self.D
        parts = [(m.conv1d.weight, self.G[:, :K]), (m.conv1d.bias, self.G[:, K]),
                 (m.linear_x.weight, self.G[:, K + 1:K + 1 + D]), (m.linear_x.bias, self.G[:, -1])]
        for p, g in parts:
            if p is None:
                continue
            g = g.to(p.dtype).reshape(p.shape)
            p.grad = g.clone() if p.grad is None else p.grad + g

    def held(self) -> dict[str, Tensor]:
        return {"E_pre": self.E}
