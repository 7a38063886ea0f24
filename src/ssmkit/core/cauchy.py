"""Cauchy kernels and the S4 convolution kernel of a DPLR SSM (docs/math/s4.md).

Dimension legend: H heads (channels), N complex modes (one of each conjugate pair), L length,
R rank of the low-rank term, C chunk length.

- ``cauchy_naive`` / ``cauchy``:  k_l = sum_n v_n / (z_l - w_n).  ``cauchy`` never builds the
  (..., L, N) slab whole: it runs over chunks of C values of z, contracts each chunk's
  reciprocals with v as a matmul (all numerators sharing the denominators at once), and
  recomputes each chunk in the backward pass (activation checkpointing) so that training holds
  one chunk at a time too. With ``conj_pairs`` the sum also runs over the conjugates
  (conj v_n, conj w_n), folded into one reciprocal per pair.
- ``dplr_kernel``: K_l = C~ dA^l dB (l < L) of the bilinear-discretized DPLR SSM
  A = diag(Lambda) - P^T conj(Q), from the truncated generating function at the roots of unity
  (Woodbury for the low-rank term, Cauchy sums for the diagonal part) and an inverse real FFT
  (Gu, Goel, Re 2022, "Efficiently Modeling Long Sequences with Structured State Spaces", Alg. 1).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from .precision import float32_core

_SLAB = 1 << 20  # complex entries of one chunk's (..., C, N) reciprocal slab (16 MiB in complex128)


def cauchy_naive(v: Tensor, z: Tensor, w: Tensor) -> Tensor:
    """Reference: k_l = sum_n v_n / (z_l - w_n).  v (..., N), z (..., L), w (..., N) -> (..., L).

    Leading dims broadcast; builds the whole (..., L, N) slab.
    """
    _check(v, z, w)
    return (v[..., None, :] / (z[..., :, None] - w[..., None, :])).sum(-1)


def _check(v: Tensor, z: Tensor, w: Tensor) -> None:
    for name, t in (("v", v), ("z", z), ("w", w)):
        if not isinstance(t, Tensor) or not t.is_complex() or t.dim() < 1:
            raise TypeError(f"cauchy: {name} must be a complex tensor with at least one dim, got {getattr(t, 'dtype', type(t).__name__)}")
    if v.shape[-1] != w.shape[-1]:
        raise ValueError(f"cauchy: v (..., N) and w (..., N) must share N, got {tuple(v.shape)} and {tuple(w.shape)}")


def _chunk(w: Tensor, w_conj: Tensor, zc: Tensor, vm: Tensor, conj_pairs: bool) -> Tensor:
    """One chunk: zc (*S, C), poles w (*S, N), numerators vm (*S, N, M) -> (*S, C, M)."""
    # Without autograd the slab is updated in place: one (*S, C, N) buffer instead of four.
    inplace = not torch.is_grad_enabled()
    d = zc[..., :, None] - w[..., None, :]  # (*S, C, N): z - w
    if conj_pairs:
        # v/(z-w) + conj(v)/(z-conj w) = (2 Re(v) z - 2 Re(v conj w)) / ((z-w)(z-conj w)); the
        # denominator as a product keeps float32 accuracy where z ~ w (no |z|^2 - |w|^2
        # cancellation), and z leaves the sum over n: k = z (q @ a1) + q @ a0.
        e = zc[..., :, None] - w_conj[..., None, :]
        d = d.mul_(e) if inplace else d * e
    q = d.reciprocal_() if inplace else d.reciprocal()
    out = q @ vm
    if not conj_pairs:
        return out
    M = vm.shape[-1] // 2
    return zc[..., None] * out[..., :M] + out[..., M:]


@float32_core
def cauchy(v: Tensor, z: Tensor, w: Tensor, conj_pairs: bool = False, chunk: int | None = None) -> Tensor:
    """k_l = sum_n v_n / (z_l - w_n)  [+ conj(v_n) / (z_l - conj(w_n)) when ``conj_pairs``].

    v (..., N), z (..., L), w (..., N) complex, leading dims broadcast -> (..., L), as
    ``cauchy_naive`` (on the conjugate-extended v, w when ``conj_pairs``). Leading dims along which
    z and w do not vary (several numerators sharing one denominator) become matmul columns.
    ``chunk``: values of z per chunk (default: a ~1M-entry slab).
    """
    _check(v, z, w)
    N, L = w.shape[-1], z.shape[-1]
    full = torch.broadcast_shapes(v.shape[:-1], z.shape[:-1], w.shape[:-1])
    zw = torch.broadcast_shapes(z.shape[:-1], w.shape[:-1])
    zw = (1,) * (len(full) - len(zw)) + tuple(zw)
    bdims = [i for i, s in enumerate(zw) if s > 1]  # z, w vary: batch of the matmul
    cdims = [i for i, s in enumerate(zw) if s == 1]  # only v varies: columns of the matmul
    S = [full[i] for i in bdims]
    cols = [full[i] for i in cdims]
    M = math.prod(cols)
    r = len(full)
    vb = v.expand(*full, N).permute(*bdims, r, *cdims).reshape(*S, N, M)
    zb = z.reshape((1,) * (r + 1 - z.dim()) + z.shape).expand(*zw, L).reshape(*S, L)
    wb = w.reshape((1,) * (r + 1 - w.dim()) + w.shape).expand(*zw, N).reshape(*S, N)
    if conj_pairs:
        vb = torch.cat([2 * vb.real, -2 * (vb * wb.conj()[..., None]).real], dim=-1).to(vb.dtype)
    C = chunk or max(1, _SLAB // max(1, math.prod(S) * N))
    wc = wb.conj().resolve_conj()
    grad = torch.is_grad_enabled() and (v.requires_grad or z.requires_grad or w.requires_grad)
    outs = []
    for l0 in range(0, L, C):
        zc = zb[..., l0:l0 + C]
        if grad:
            outs.append(checkpoint(_chunk, wb, wc, zc, vb, conj_pairs, use_reentrant=False))
        else:
            outs.append(_chunk(wb, wc, zc, vb, conj_pairs))
    k = torch.cat(outs, dim=-2)  # (*S, L, M)
    k = k.reshape(*S, L, *cols).movedim(len(S), -1)  # (*S, *cols, L) in order bdims, cdims
    inverse = [0] * r
    for pos, dim in enumerate(bdims + cdims):
        inverse[dim] = pos
    return k.permute(*inverse, r)


@float32_core
def dplr_kernel(
    Lambda: Tensor, P: Tensor, Q: Tensor, B: Tensor, C: Tensor, dt: Tensor, L: int
) -> Tensor:
    """K_l = C~ dA^l dB for l < L of the real SSM with conjugate-paired modes (docs/math/s4.md).

    The continuous system, in its eigenbasis and with every mode's conjugate implicit, is
    A = diag(Lambda) - P^T conj(Q), input B, output C~ (the full vectors are [x, conj x]);
    (dA, dB) is its bilinear discretization with step dt, and C = C~ already holds the
    truncation correction C~ = C (I - dA^L).

    Lambda (*S, N), P and Q (R, *S, N), B (*S, N), C (*S, N) complex; dt (*S) real > 0;
    leading dims broadcast. Returns K (*S, L) real.
    """
    if isinstance(L, bool) or not isinstance(L, int) or L < 1:
        raise ValueError(f"dplr_kernel: kernel length L must be an int >= 1, got {L!r}")
    if P.dim() < 2 or Q.shape[0] != P.shape[0]:
        raise ValueError(
            f"dplr_kernel: P and Q must be (R, ..., N) with the same rank R, got {tuple(P.shape)} and {tuple(Q.shape)}"
        )
    if dt.is_complex():
        raise TypeError(f"dplr_kernel: dt must be real, got {dt.dtype}")
    R = P.shape[0]
    S = torch.broadcast_shapes(Lambda.shape[:-1], P.shape[1:-1], Q.shape[1:-1], B.shape[:-1], C.shape[:-1], dt.shape)
    N = Lambda.shape[-1]
    left = torch.cat([C.expand(1, *S, N), Q.conj().expand(R, *S, N)])  # (R+1, *S, N)
    right = torch.cat([B.expand(1, *S, N), P.expand(R, *S, N)])
    v = left[:, None] * right[None, :]  # (R+1, R+1, *S, N): v[i, j] = left_i right_j

    # Nodes off the Nyquist point: z = omega^k, k < L/2; g(z) = (2/dt)(1-z)/(1+z) = (2i/dt) tan(pi k/L).
    Lh = (L + 1) // 2
    k = torch.arange(Lh, dtype=dt.dtype, device=dt.device)
    g = torch.complex(torch.zeros_like(k), torch.tan(math.pi * k / L)) * (2 / dt[..., None])  # (*S, Lh)
    r = cauchy(v, g, Lambda, conj_pairs=True)  # (R+1, R+1, *S, Lh): sums v / (g - lambda)
    if R == 1:
        khat = r[0, 0] - r[0, 1] * r[1, 0] / (1 + r[1, 1])
    else:
        k11 = r[1:, 1:].movedim((0, 1), (-2, -1))  # (*S, Lh, R, R)
        k10 = r[1:, 0].movedim(0, -1)[..., None]  # (*S, Lh, R, 1)
        k01 = r[0, 1:].movedim(0, -1)[..., None, :]  # (*S, Lh, 1, R)
        eye = torch.eye(R, dtype=k11.dtype, device=k11.device)
        khat = r[0, 0] - (k01 @ torch.linalg.solve(eye + k11, k10))[..., 0, 0]
    omega = torch.polar(torch.ones_like(k), -2 * math.pi * k / L)
    khat = khat * (2 / (1 + omega))
    if L % 2 == 0:
        # z = -1: (I + dA)^{-1} dB = dt/2 B exactly, so Khat(-1) = dt/2 C~ B = dt Re(sum_n C~_n B_n).
        nyquist = dt * (C * B).sum(-1).real
        khat = torch.cat([khat, nyquist.expand(S)[..., None].to(khat.dtype)], dim=-1)
    return torch.fft.irfft(khat, n=L)
