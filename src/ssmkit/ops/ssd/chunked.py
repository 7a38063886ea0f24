"""The SSD algorithm: quadratic form inside chunks, a linear recurrence across chunk states.

With T = min(chunk_size, L) and the sequence padded to a multiple of T by steps with dt = 0
(identities on the state, so the final state is exact), for every chunk:

1. intra-chunk output   y_diag = (M_c o C B^T)(dt x)          M_c = exp(segsum(dt A)) (T, T)
2. chunk state          Z_c = sum_s M_c[T-1, s] (dt x)_s B_s^T  (from a zero state)
3. across chunks        h_in[c+1] = exp(sum of dt A over chunk c) h_in[c] + Z_c  (a loop)
4. state -> output      y_off[t] = exp(cumsum_t(dt A)) h_in[c] C_t

Steps 1, 2, 4 are batched matmuls; the loop in 3 runs L/T times on (B, H, P, N) tensors, one
autograd node (inter.py) that writes the entering states in place.
One C B^T per group serves all H/G heads of the group. Step 1 factors the decay, exp(cum_t -
cum_s) = e_t f_s, in every chunk whose log-decay allows it (intra.py: intra_chunk_factored, no
per-head (T, T) matrix); the other chunks go through one autograd node (intra.py) that keeps
their (T, T) decay matrices; exponents are clamped at log(sqrt(finfo.tiny)) so
nothing is subnormal (core/segsum.py). Derivation: docs/math/ssd.md.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ...core.segsum import subnormal_floor
from .inter import inter_chunk
from .intra import factored_range, intra_chunk, intra_chunk_factored


def ssd_chunked(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    initial_state: Tensor | None = None,
    chunk_size: int = 64,
) -> tuple[Tensor, Tensor]:
    """Same signature and result as ``ssd_reference``, plus the chunk length ``chunk_size``."""
    batch, L, H, P = x.shape
    G, N = B.shape[2], B.shape[3]
    R = H // G
    T = min(chunk_size, L)
    pad = -L % T
    if pad:
        x, B, C = (F.pad(t, (0, 0, 0, 0, 0, pad)) for t in (x, B, C))
        dt = F.pad(dt, (0, 0, 0, pad))  # dt = 0: identity steps
    nc = (L + pad) // T

    # Two layouts: per-head blocks (B, nc, G, R, T, P) for the intra-chunk matmul, and the input's
    # own (B, nc, T, G, R*P), in which the heads of a group are the columns of one (T, R*P) matrix:
    # chunk states and their outputs are then single matmuls against B and C of the group (never
    # broadcast over heads), with transposed operands that BLAS reads in place.
    xdt = x * dt[..., None]  # (B, L, H, P)
    a_nat = (dt * A).view(batch, nc, T, G, R)
    Bc = B.view(batch, nc, T, G, N).transpose(2, 3)  # (B, nc, G, T, N)
    Cc = C.view(batch, nc, T, G, N).transpose(2, 3)
    cb = Cc @ Bc.transpose(-1, -2)  # (B, nc, G, T, T)
    cum_raw = a_nat.cumsum(2)  # (B, nc, T, G, R)

    # 1. Chunks whose log-decay is within the factored form's range (every head's) go through it:
    # exp(cum_t - cum_s) = e_t f_s, no (T, T) matrix per head (intra.py); the others (strong
    # decays) through the decay matrix per head, clamped at the floor. The choice reads values:
    # CPU in eager mode only; elsewhere every chunk takes the matrix form.
    xdt_nat = xdt.view(batch, nc, T, G, R, P)
    bad = None
    if x.device.type == "cpu" and not torch.compiler.is_compiling():
        bad = (cum_raw[:, :, -1] < factored_range(x.dtype)).flatten(2).any(-1).flatten()  # (B*nc,)
        if bool(bad.all()):
            bad = None
    if bad is None:
        xdt_heads = xdt_nat.permute(0, 1, 3, 4, 2, 5).contiguous()
        y = intra_chunk(a_nat.permute(0, 1, 3, 4, 2), cb, xdt_heads)  # (B, nc, G, R, T, P)
        y = y.permute(0, 1, 4, 2, 3, 5)
    else:
        rows = bad.nonzero().squeeze(-1)  # chunks (flattened over B, nc) with a head out of range
        safe = cum_raw if rows.numel() == 0 else cum_raw.masked_fill(bad.view(batch, nc, 1, 1, 1), 0.0)
        y = intra_chunk_factored(safe, cb, xdt_nat)  # (B, nc, G, T, R, P); placeholders where bad
        if rows.numel():
            pick = lambda t: t.flatten(0, 1).index_select(0, rows)  # noqa: E731
            y_bad = intra_chunk(pick(a_nat).permute(0, 2, 3, 1), pick(cb),
                                pick(xdt_nat).permute(0, 2, 3, 1, 4))  # (k, G, R, T, P)
            y = y.flatten(0, 1).index_copy(0, rows, y_bad.transpose(2, 3)).view(y.shape)
        y = y.transpose(2, 3)
    # The last row of exp(segsum(a)), summed directly from the end of the chunk: a_{s+1} + ... + a_{T-1}.
    floor = subnormal_floor(x.dtype)  # no subnormals: see core/segsum.py
    to_last = F.pad(a_nat[:, :, 1:].flip(2).cumsum(2).flip(2), (0, 0, 0, 0, 0, 1)).clamp(min=floor)
    to_end = xdt.view(batch, nc, T, G, R, P) * torch.exp(to_last)[..., None]  # (B, nc, T, G, R, P)
    to_end = to_end.view(batch, nc, T, G, R * P).permute(0, 1, 3, 4, 2)  # (B, nc, G, R*P, T)
    states = (to_end @ Bc).view(batch, nc, G, R, P, N)  # 2.

    # 3. The state entering each chunk; exp of a cumulative sum of a <= 0 is at most 1.
    # Clamped like every exponent here, so exp gives no subnormals (slow on CPUs): see core/segsum.py.
    cum = cum_raw.clamp(min=floor)  # (B, nc, T, G, R)
    if initial_state is None:
        h0 = x.new_zeros(batch, G, R, P, N)
    else:
        h0 = initial_state.reshape(batch, G, R, P, N)
    h_in, h = inter_chunk(states, torch.exp(cum[:, :, -1]), h0)  # (B, nc, G, R, P, N), (B, G, R, P, N)

    # 4. Outputs of the entering states, (T, N) @ (N, R*P) per group, in the input's layout.
    y_off = (Cc @ h_in.view(batch, nc, G, R * P, N).transpose(-1, -2)).transpose(2, 3)  # (B, nc, T, G, R*P)
    y_off = y_off.view(batch, nc, T, G, R, P) * torch.exp(cum)[..., None]
    y = y_off.add_(y).reshape(batch, nc * T, H, P)[:, :L]
    if D is not None:
        y = y.addcmul_(x[:, :L], D[:, None] if D.ndim == 1 else D)  # in place: one pass, no new (B, L, H, P)
    return y, h.reshape(batch, H, P, N)
