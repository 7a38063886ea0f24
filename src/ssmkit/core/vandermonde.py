"""Diagonal SSM -> convolution kernel, and the other Vandermonde contractions of diagonal LTI SSMs.

Dimension legend: B batch, L length, H heads (channels), N complex modes, C chunk length.

For a diagonal system h_t = z * h_{t-1} + dB * u_t,  y_t = Re(sum_n C_n h_t,n):

- kernel             K_l = Re(sum_n W_n z_n^l), l < L, with W = C * dB
                     (a conjugate pair folded into one mode contributes 2 Re: pass W = 2 C dB);
- state contraction  S_n = sum_s z_n^s v_s, or with ``reverse`` sum_s z_n^{L-1-s} v_s: the state
                     after the input v from zero, without flipping v (docs/math/s4d.md);
- initial-state term y_t = Re(sum_n C_n z_n^{t+1} h0_n) = the kernel with W = C z h0.

The fast forms never build z^l for every (H, N, L): with l = c*C + j (C ~ sqrt(L)) they need only
z^j (H, N, C) and z^{cC} (H, N, L/C) and contract over N (or over j) as batched matmuls. Each
power z^{m s} is exp(hi s log z) * exp(lo s log z) with m = hi R + lo, R ~ sqrt(M): a product of
a fixed number of exponentials, never a running product (whose rounding grows with m), so z^l
carries about eps |l log z| + 8 eps of relative error, as exp(l log z) itself would; and it takes
2 sqrt(C) + 2 sqrt(L/C) complex exps per mode instead of C + L/C (complex exp is costly on CPU).
Only real parts are needed, so each complex matmul is one real matmul of half the cost:
Re(P Q) = [Re P, -Im P] @ [Re Q; Im Q].

When z = exp(x) is known through its exponent (zoh), pass ``log_z=x``: log(exp(x)) in float32
loses |x|-relative accuracy that l * x does not, and an underflowed z (= 0) has no gradient.
``vandermonde_powers`` computes the powers once for several contractions of one system.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from .precision import float32_core


class Powers(NamedTuple):
    """zj = z^j (H, N, C) for j < C; zc = z^{cC} (H, N, ceil(L/C)); for sequences up to L."""

    zj: Tensor
    zc: Tensor
    L: int


def _chunk_len(L: int) -> int:
    """The power of two nearest sqrt(L) from above: z^j and z^{cC} then cost about the same."""
    return 1 << (((L - 1).bit_length() + 1) // 2)


def _log(z: Tensor, log_z: Tensor | None) -> Tensor:
    if log_z is not None:
        return log_z
    lz = torch.log(z)
    # |z| below the smallest normal number (or 0): clamp so that 0 * log z stays finite; the
    # affected powers z^l (l >= 1) change by less than that number.
    floor = math.log(torch.finfo(lz.real.dtype).tiny)
    return torch.complex(lz.real.clamp(min=floor), lz.imag)


def _exp_grid(log_z: Tensor, M: int, step: int) -> Tensor:
    """z^{step m} (H, N, M) for m < M, as exp(hi step R log z) * exp(lo step log z)."""
    R = math.isqrt(M - 1) + 1
    ar = torch.arange(R, dtype=log_z.real.dtype, device=log_z.device)
    lo = torch.exp(log_z[..., None] * (step * ar))  # (H, N, R)
    hi = torch.exp(log_z[..., None] * (step * R * ar[: -(-M // R)]))  # (H, N, M/R)
    return (hi[..., :, None] * lo[..., None, :]).flatten(-2)[..., :M]


@float32_core
def vandermonde_powers(
    z: Tensor, L: int, log_z: Tensor | None = None, chunk: int | None = None
) -> Powers:
    """The powers of z (H, N) complex that every contraction of length <= L uses.

    ``chunk`` is C (default: the power of two nearest sqrt(L)); ``log_z`` replaces log(z).
    """
    if not z.is_complex():
        raise TypeError(f"z must be a complex tensor (H, N), got {z.dtype}")
    if L < 1:
        raise ValueError(f"kernel length L must be >= 1, got {L}")
    C = _chunk_len(L) if chunk is None else chunk
    if C < 1:
        raise ValueError(f"chunk length C must be >= 1, got {C}")
    lz = _log(z, log_z)
    return Powers(_exp_grid(lz, C, 1), _exp_grid(lz, -(-L // C), C), L)


def _get_powers(z: Tensor, L: int, log_z, chunk, powers: Powers | None) -> Powers:
    if powers is None:
        return vandermonde_powers(z, L, log_z, chunk)
    if powers.L < L or powers.zj.shape[:-1] != z.shape:
        raise ValueError(f"powers were made for L={powers.L}, shape {tuple(powers.zj.shape[:-1])}; "
                         f"needed L >= {L}, shape {tuple(z.shape)}")
    return powers


def _real_right(zj: Tensor) -> Tensor:
    """[Re z^j; Im z^j] (H, 2N, C)."""
    return torch.cat([zj.real, zj.imag], dim=-2)


def vandermonde_kernel_naive(W: Tensor, z: Tensor, L: int) -> Tensor:
    """Reference: K_l = Re(sum_n W_n z_n^l), building z^l for all (H, N, L). W (..., H, N) -> (..., H, L)."""
    zl = z[..., None] ** torch.arange(L, device=z.device)  # (H, N, L)
    return (W[..., None] * zl).sum(-2).real


@float32_core
def vandermonde_kernel(
    W: Tensor, z: Tensor, L: int, log_z: Tensor | None = None, chunk: int | None = None,
    powers: Powers | None = None,
) -> Tensor:
    """K_l = Re(sum_n W_n z_n^l) for l < L.  W (..., H, N), z (H, N) complex -> K (..., H, L) real."""
    if W.shape[-z.dim():] != z.shape:
        raise ValueError(f"W must have shape (..., H, N) = (..., {tuple(z.shape)}), got {tuple(W.shape)}")
    zj, zc, _ = _get_powers(z, L, log_z, chunk, powers)
    (H, N), C, lead = z.shape, zj.shape[-1], W.shape[:-2]
    n_chunks = -(-L // C)
    P = W[..., None] * zc[..., :n_chunks]  # (..., H, N, L/C): W_n z_n^{cC}
    left = torch.cat([P.real, -P.imag], dim=-2).transpose(-1, -2)  # (..., H, L/C, 2N)
    # Heads first and the batch folded into the rows: one bmm, without expanding z^j per row.
    left = left.movedim(-3, 0).reshape(H, -1, 2 * N)  # (H, (...) L/C, 2N)
    K = left @ _real_right(zj)  # (H, (...) L/C, C): K[c, j] = K_{cC + j}
    return K.reshape(H, *lead, n_chunks * C)[..., :L].movedim(0, -2)


def vandermonde_contract_naive(v: Tensor, z: Tensor) -> Tensor:
    """Reference: S_n = sum_s z_n^s v_s.  v (B, H, L) real, z (H, N) complex -> (B, H, N) complex."""
    zl = z[..., None] ** torch.arange(v.shape[-1], device=z.device)  # (H, N, L)
    return (zl * v[:, :, None, :]).sum(-1)


@float32_core
def vandermonde_contract(
    v: Tensor, z: Tensor, log_z: Tensor | None = None, chunk: int | None = None,
    powers: Powers | None = None, reverse: bool = False,
) -> Tensor:
    """S_n = sum_s z_n^s v_s (``reverse``: sum_s z_n^{L-1-s} v_s).  v (B, H, L) real -> (B, H, N) complex.

    Memory O(B H N L/C). L = M C + r: the M full chunks (a view of v; pass v contiguous, a
    strided v is copied by the matmul) are contracted over j by one real matmul, then over the
    chunks with the weights z^{cC};
    the r leftover steps (at the end, or at the start with ``reverse``) are one more small matmul
    scaled by z^{MC}.
    """
    if v.dim() != 3 or v.shape[1] != z.shape[0] or v.is_complex():
        raise ValueError(f"v must be real (B, H, L) with H = {z.shape[0]}, got {v.dtype} {tuple(v.shape)}")
    L, N = v.shape[-1], z.shape[-1]
    zj, zc, _ = _get_powers(z, L, log_z, chunk, powers)
    C = zj.shape[-1]
    M, r = divmod(L, C)
    right = _real_right(zj).transpose(-1, -2)  # (H, C, 2N)
    weights = zc[..., :M].transpose(-1, -2)  # (H, M, N): z^{cC}
    if reverse:  # step c*C + j of the main part is (M-1-c)*C + (C-1-j) steps before the end
        right, weights = right.flip(-2), weights.flip(-2)
    main = v[..., r:] if reverse else v[..., : M * C]
    inner = main.unflatten(-1, (M, C)) @ right  # (B, H, M, 2N): sum over j
    S = (torch.complex(inner[..., :N], inner[..., N:]) * weights).sum(-2)  # (B, H, N)
    if r:
        part = _real_right(zj[..., :r]).transpose(-1, -2)  # (H, r, 2N)
        rest = v[..., None, :r] @ part.flip(-2) if reverse else v[..., None, M * C :] @ part
        rest = rest.squeeze(-2)  # (B, H, 2N)
        S = S + torch.complex(rest[..., :N], rest[..., N:]) * zc[..., M]  # z^{MC}
    return S


@float32_core
def initial_state_output(
    C: Tensor, h0: Tensor, z: Tensor, L: int, log_z: Tensor | None = None, chunk: int | None = None,
    powers: Powers | None = None,
) -> Tensor:
    """y_t = Re(sum_n C_n z_n^{t+1} h0_n) for t < L: the zero-input response to the state h0.

    C, z (H, N) complex, h0 (B, H, N) complex -> (B, H, L) real.
    """
    return vandermonde_kernel(C * z * h0, z, L, log_z, chunk, powers)
