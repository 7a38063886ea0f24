"""The ``triton`` mode of the selective scan: a chunked scan over L, recomputed in the backward.

Imported on the first call of the mode, never by ``import ssmkit``. The kernels run only the
recurrence, with dt already discretized (softplus and bias, the D skip and the z gate are
elementwise PyTorch around them, differentiated by autograd):

    h_t[d, n] = a_t[d, n] h_{t-1}[d, n] + x_t[d, n]     a_t = exp(dt_t[d] A[d, n]),  x_t = dt_t[d] u_t[d] B_t[g(d), n]
    y_t[d]    = Σ_n C_t[g(d), n] h_t[d, n]

One program per (batch, block of BD channels of one group) walks the steps in order, the (BD, N)
state in registers (the parallelism is over B·D·N, as in mamba_ssm's scan; y_t is a reduction
over n): nothing of size (B, L, D, N) is ever written. The forward stores the state entering
every chunk of T steps (B, L/T, D, N).

Backward, the chunks in reverse, the gradient G of the state after the current step carried: a
chunk's states are recomputed from its stored entering state into a (T, BD, N) scratch block per
program (cache-resident: T times the state), then the steps are walked back,
G_t = dy_t C_t + a_{t+1} G_{t+1}, and

    d dt_t = Σ_n G_t (A a_t h_{t-1} + B_t u_t)     du_t = dt_t Σ_n G_t B_t     dA = Σ_t dt_t G_t a_t h_{t-1}
    dB_t = Σ_d G_t dt_t u_t                         dC_t = Σ_d dy_t h_t          dh_in = a_first G_first

(no division by a decay anywhere). dB and dC are summed over the channel blocks of a group, dA over
the batch, afterwards. Every exponent is dt·A ≤ 0. (An associative scan inside the chunk was the
first version: correct, but Triton's interpreter runs a generic scan element by element, 1.6 s per
chunk at BD = N = 16, too slow for the CPU tests.)
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from .._triton import block
from .step import discretized_step

CHUNK = 16  # steps between the stored states: the backward's scratch is (T, BD, N) per program


@triton.jit
def _load_step(u, dt, Bm, b, t, L, D, G, N, g, od, md, on, mn):
    """Step t's row, the masks of live channels and state columns (BD,), (BN,) (none past the end),
    u, dt (BD,) and B (BN,): zeros past the end (dt = 0: an identity step)."""
    row = b.to(tl.int64) * L + t
    md_t, mn_t = md & (od * 0 + t < L), mn & (on * 0 + t < L)
    bu = tl.load(u + row * D + od, mask=md_t, other=0.0)
    bdt = tl.load(dt + row * D + od, mask=md_t, other=0.0)
    bB = tl.load(Bm + (row * G + g) * N + on, mask=mn_t, other=0.0)
    return row, (md_t, mn_t), bu, bdt, bB


@triton.jit
def _fwd_kernel(u, dt, A, Bm, Cm, h0, y, hT, states, L, D, G, N, DPG,
                T: tl.constexpr, BD: tl.constexpr, BN: tl.constexpr, HAS_H0: tl.constexpr):
    b, i_d = tl.program_id(0), tl.program_id(1)
    od = i_d * BD + tl.arange(0, BD)
    on = tl.arange(0, BN)
    md, mn = od < D, on < N
    g = (i_d * BD) // DPG  # the block lies in one group (BD divides D/G)
    mdn = md[:, None] & mn[None, :]
    state_off = b.to(tl.int64) * D * N + od[:, None] * N + on[None, :]
    bA = tl.load(A + od[:, None] * N + on[None, :], mask=mdn, other=0.0)
    h = tl.zeros((BD, BN), dtype=y.dtype.element_ty)
    if HAS_H0:
        h += tl.load(h0 + state_off, mask=mdn, other=0.0)
    NC = tl.cdiv(L, T)
    for c in range(0, NC):
        tl.store(states + (b.to(tl.int64) * NC + c) * D * N + od[:, None] * N + on[None, :], h, mask=mdn)
        for j in range(0, T):
            row, live, bu, bdt, bB = _load_step(u, dt, Bm, b, c * T + j, L, D, G, N, g, od, md, on, mn)
            bC = tl.load(Cm + (row * G + g) * N + on, mask=live[1], other=0.0)
            h = tl.exp(bdt[:, None] * bA) * h + (bdt * bu)[:, None] * bB[None, :]
            tl.store(y + row * D + od, tl.sum(h * bC[None, :], 1).to(y.dtype.element_ty), mask=live[0])
    tl.store(hT + state_off, h.to(hT.dtype.element_ty), mask=mdn)


@triton.jit
def _bwd_kernel(u, dt, A, Bm, Cm, states, scratch, dy, dhT, du, ddt, dA, dB, dC, dh0, L, D, G, N, DPG,
                T: tl.constexpr, BD: tl.constexpr, BN: tl.constexpr):
    """du, ddt (B, L, D); dA (B, D, N), summed over the batch afterwards; dB, dC (B, L, D/BD, N),
    summed over the blocks of a group afterwards; dh0 (B, D, N); scratch (B, D/BD, T, BD, BN) holds
    the states entering the steps of the chunk being walked back. dy, dhT contiguous."""
    b, i_d = tl.program_id(0), tl.program_id(1)
    ND = tl.num_programs(1)
    od = i_d * BD + tl.arange(0, BD)
    on = tl.arange(0, BN)
    md, mn = od < D, on < N
    g = (i_d * BD) // DPG
    mdn = md[:, None] & mn[None, :]
    state_off = b.to(tl.int64) * D * N + od[:, None] * N + on[None, :]
    bA = tl.load(A + od[:, None] * N + on[None, :], mask=mdn, other=0.0)
    mine = scratch + (b.to(tl.int64) * ND + i_d) * T * BD * BN + tl.arange(0, BD)[:, None] * BN + on[None, :]
    dh = tl.load(dhT + state_off, mask=mdn, other=0.0)  # G: the gradient of the state after the step
    dA_acc = tl.zeros((BD, BN), dtype=du.dtype.element_ty)
    NC = tl.cdiv(L, T)
    for i in range(0, NC):
        c = NC - 1 - i
        h = tl.load(states + (b.to(tl.int64) * NC + c) * D * N + od[:, None] * N + on[None, :], mask=mdn, other=0.0)
        for j in range(0, T):  # recompute: the state entering each step of the chunk
            tl.store(mine + j * BD * BN, h)
            row, live, bu, bdt, bB = _load_step(u, dt, Bm, b, c * T + j, L, D, G, N, g, od, md, on, mn)
            h = tl.exp(bdt[:, None] * bA) * h + (bdt * bu)[:, None] * bB[None, :]
        tl.debug_barrier()
        for jj in range(0, T):
            j = T - 1 - jj
            t = c * T + j
            h_prev = tl.load(mine + j * BD * BN)
            row, live, bu, bdt, bB = _load_step(u, dt, Bm, b, t, L, D, G, N, g, od, md, on, mn)
            bC = tl.load(Cm + (row * G + g) * N + on, mask=live[1], other=0.0)
            bdy = tl.load(dy + row * D + od, mask=live[0], other=0.0)
            a = tl.exp(bdt[:, None] * bA)
            dh += bdy[:, None] * bC[None, :]
            decayed_prev = a * h_prev
            h_t = decayed_prev + (bdt * bu)[:, None] * bB[None, :]
            tl.store(ddt + row * D + od, tl.sum(dh * (bA * decayed_prev + bu[:, None] * bB[None, :]), 1)
                     .to(ddt.dtype.element_ty), mask=live[0])
            tl.store(du + row * D + od, (bdt * tl.sum(dh * bB[None, :], 1)).to(du.dtype.element_ty), mask=live[0])
            part = (row * ND + i_d) * N + on
            tl.store(dB + part, tl.sum(dh * (bdt * bu)[:, None], 0).to(dB.dtype.element_ty), mask=live[1])
            tl.store(dC + part, tl.sum(bdy[:, None] * h_t, 0).to(dC.dtype.element_ty), mask=live[1])
            dA_acc += dh * bdt[:, None] * decayed_prev
            dh = a * dh
        tl.debug_barrier()
    tl.store(dh0 + state_off, dh.to(dh0.dtype.element_ty), mask=mdn)
    tl.store(dA + state_off, dA_acc.to(dA.dtype.element_ty), mask=mdn)


def _channel_block(per_group: int) -> int:
    """The largest power of two ≤ 32 dividing the channels of a group: a block never spans two."""
    return min(32, per_group & -per_group)


class _SelectiveScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, dt, A, Bm, Cm, h0):
        batch, L, D = u.shape
        G, N = Bm.shape[2], Bm.shape[3]
        BD, BN = _channel_block(D // G), block(N, least=1)
        NC = triton.cdiv(L, CHUNK)
        y = torch.empty_like(u)
        hT = u.new_empty(batch, D, N)
        states = u.new_empty(batch, NC, D, N)
        grid = (batch, triton.cdiv(D, BD))
        _fwd_kernel[grid](u, dt, A, Bm, Cm, u if h0 is None else h0, y, hT, states, L, D, G, N, D // G,
                          T=CHUNK, BD=BD, BN=BN, HAS_H0=h0 is not None)
        ctx.save_for_backward(u, dt, A, Bm, Cm, states)
        ctx.has_h0 = h0 is not None
        return y, hT

    @staticmethod
    def backward(ctx, dy, dhT):
        u, dt, A, Bm, Cm, states = ctx.saved_tensors
        batch, L, D = u.shape
        G, N = Bm.shape[2], Bm.shape[3]
        BD, BN = _channel_block(D // G), block(N, least=1)
        ND = triton.cdiv(D, BD)
        du, ddt = torch.empty_like(u), torch.empty_like(u)
        dA = u.new_empty(batch, D, N)
        dB, dC = u.new_empty(batch, L, ND, N), u.new_empty(batch, L, ND, N)
        dh0 = u.new_empty(batch, D, N)
        scratch = u.new_empty(batch, ND, CHUNK, BD, BN)
        _bwd_kernel[(batch, ND)](u, dt, A, Bm, Cm, states, scratch, dy.contiguous(), dhT.contiguous(), du, ddt, dA, dB, dC,
                                 dh0, L, D, G, N, D // G, T=CHUNK, BD=BD, BN=BN)
        dB = dB.view(batch, L, G, ND // G, N).sum(3)
        dC = dC.view(batch, L, G, ND // G, N).sum(3)
        return du, ddt, dA.sum(0), dB, dC, dh0 if ctx.has_h0 else None


def selective_scan_triton(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    initial_state: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Same signature and result as ``selective_scan_reference``."""
    dt = discretized_step(delta, delta_bias, delta_softplus)
    Bg, Cg = (M if M.dim() == 4 else M.unsqueeze(2) for M in (B, C))  # (B, L, G, N)
    u_c, dt_c, Bg, Cg = (t.contiguous() for t in (u, dt, Bg, Cg))
    h0 = None if initial_state is None else initial_state.contiguous()
    y, hT = _SelectiveScan.apply(u_c, dt_c, A.contiguous(), Bg, Cg, h0)
    if D is not None:
        y = y + D * u
    if z is not None:
        y = y * torch.nn.functional.silu(z)
    return y, hT
