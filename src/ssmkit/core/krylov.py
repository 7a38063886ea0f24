"""Powers, Krylov and observability matrices of a dense system per channel, A (H, N, N), by repeated
squaring: what ``core.vandermonde`` does for a diagonal A. S4's fft mode uses them for the state it
carries into and out of its convolution (docs/math/s4.md).

Dimension legend: B batch, L length, H channels, N state size, C chunk length (a power of two).

With the chunk C and J = ceil(L / C) chunks, each length-L contraction is a (C-column) matrix per
channel applied to all chunks at once, and the chunks are combined with A^C, A^2C, ... (log J
squarings): O(B H N L) + O(H N^3 log L) work, and no (H, N, N) matrix per token.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


class MatrixPowers:
    """A^(2^j) (H, N, N) for A (H, N, N), each squared from the previous on first use."""

    def __init__(self, A: Tensor) -> None:
        self._p = [A]

    def __getitem__(self, j: int) -> Tensor:
        while len(self._p) <= j:
            self._p.append(self._p[-1] @ self._p[-1])
        return self._p[j]

    def apply(self, x: Tensor, n: int | Tensor) -> Tensor:
        """A^n x for x (H, N, M); n an int or (M,) long exponents, one per column."""
        top = int(n if isinstance(n, int) else n.max()).bit_length()
        for j in range(top):
            if isinstance(n, int):
                if n >> j & 1:
                    x = self[j] @ x
            else:
                x = torch.where((n >> j & 1).bool(), self[j] @ x, x)
        return x

    def left(self, c: Tensor, n: int) -> Tensor:
        """c A^n for rows c (H, N), by the binary expansion of n -> (H, N)."""
        row = c[:, None, :]
        for j in range(n.bit_length()):
            if n >> j & 1:
                row = row @ self[j]
        return row[:, 0]


def krylov(b: Tensor, powers: MatrixPowers, C: int) -> Tensor:
    """[b, A b, ..., A^{C-1} b] (H, N, C) for b (H, N), by doubling the columns."""
    K = b[..., None]
    for j in range(C.bit_length() - 1):
        K = torch.cat([K, powers[j] @ K], -1)
    return K


def observability(c: Tensor, powers: MatrixPowers, C: int) -> Tensor:
    """The rows [c; c A; ...; c A^{C-1}] (H, C, N) for c (H, N), by doubling the rows."""
    O = c[:, None, :]
    for j in range(C.bit_length() - 1):
        O = torch.cat([O, O @ powers[j]], -2)
    return O


def reversed_input_state(v: Tensor, b: Tensor, powers: MatrixPowers, C: int) -> Tensor:
    """sum_s A^s b v[:, s] -> (B, H, N) for v (B, L, H) read newest first (v[:, 0] is the last input):
    the state that x_t = A x_{t-1} + b u_t reaches from zero. Per chunk j the Krylov matrix gives
    w_j = sum_i A^i b v[jC + i]; then pairwise w_{2i} + A^{C 2^k} w_{2i+1} up the levels."""
    B, L, H = v.shape
    N = b.shape[-1]
    logC, J = C.bit_length() - 1, -(-L // C)
    v = F.pad(v, (0, 0, 0, J * C - L)).permute(2, 0, 1).reshape(H, B * J, C)
    W = (v @ krylov(b, powers, C).transpose(-1, -2)).reshape(H, B, J, N)
    level = logC
    while W.shape[2] > 1:
        if W.shape[2] % 2:
            W = F.pad(W, (0, 0, 0, 1))
        odd = W[:, :, 1::2].reshape(H, -1, N) @ powers[level].transpose(-1, -2)
        W = W[:, :, 0::2] + odd.reshape(H, B, -1, N)
        level += 1
    return W[:, :, 0].transpose(0, 1)


def zero_input_response(c: Tensor, x0: Tensor, powers: MatrixPowers, L: int, C: int) -> Tensor:
    """y_t = c A^{t+1} x0 for t < L -> (B, L, H), for c (H, N) and x0 (B, H, N): the rows
    [c; c A; ...; c A^{C-1}] times the chunk starts A^{jC+1} x0, built by doubling."""
    B, H, N = x0.shape
    logC, J = C.bit_length() - 1, -(-L // C)
    starts = (powers[0] @ x0.permute(1, 2, 0))[..., None]  # (H, N, B, 1): A x0
    k = 0
    while starts.shape[-1] < J:
        starts = torch.cat([starts, (powers[logC + k] @ starts.flatten(-2)).view_as(starts)], -1)
        k += 1
    y0 = (observability(c, powers, C) @ starts[..., :J].flatten(-2)).view(H, C, B, J)  # y0[h, i, b, j] = y_{jC+i}
    return y0.permute(2, 3, 1, 0).reshape(B, J * C, H)[:, :L]
