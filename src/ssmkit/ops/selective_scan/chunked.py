"""Chunked pure-PyTorch mode of the selective scan: whole-chunk tensor ops, no loop over tokens.

Within a chunk of steps 1..C starting from the state h_0, per channel d and state n,

    q_t = sum_{s<=t} dt_s A             (cumulative log decay)
    h_t = e^{q_t} (h_0 + sum_{s<=t} e^{-q_s} dt_s B_s u_s)

so every state of the chunk comes from one cumsum between two exponentials, and only the last one
is carried to the next chunk. The factors e^{+-q} must stay finite and keep their precision: the
chunks are cut so that the sum over the chunk of max |dt A| stays under ``BOUND`` (60 in float32,
600 in float64); a single step's |dt A| is clamped to the bound, which only changes decays already
below e^-60 (float32) or e^-600 (float64). Chunks hold at most ``MAX_CHUNK`` steps, so memory is
O(B D N C), and under autograd each chunk is checkpointed (recomputed in the backward) rather than
keeping (B, L, D, N) of intermediates. Time is the last axis inside a chunk: the cumsums then run
over contiguous memory.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from .step import discretized_step

BOUND = {torch.float32: 60.0, torch.float64: 600.0}  # other dtypes are computed in float32
MAX_CHUNK = 64


def chunk_spans(step: list[float], bound: float, max_chunk: int = MAX_CHUNK) -> list[tuple[int, int]]:
    """Cut [0, L) greedily into chunks whose summed (clamped) per-step bound stays <= bound."""
    spans, start, total = [], 0, 0.0
    for t, s in enumerate(step):
        s = min(s, bound)
        if t > start and (t - start == max_chunk or total + s > bound):
            spans.append((start, t))
            start, total = t, 0.0
        total += s
    spans.append((start, len(step)))
    return spans


class ExpPair(torch.autograd.Function):
    """q -> (e^q, e^-q) with one exp. Autograd through 1/e^q would form e^{2|q|} in the backward,
    which overflows where e^{|q|} does not; here dq = g_plus e^q - g_minus e^-q."""

    @staticmethod
    def forward(ctx, q: Tensor) -> tuple[Tensor, Tensor]:
        E = torch.exp(q)
        E_inv = torch.reciprocal(E)
        ctx.save_for_backward(E, E_inv)
        return E, E_inv

    @staticmethod
    def backward(ctx, g_plus: Tensor, g_minus: Tensor) -> Tensor:
        E, E_inv = ctx.saved_tensors
        return g_plus * E - g_minus * E_inv


def _chunk(
    dt: Tensor, x: Tensor, A: Tensor, Bc: Tensor, Cc: Tensor, h: Tensor, bound: float | None
) -> tuple[Tensor, Tensor]:
    """dt, x = dt u: (B, G, D/G, 1, C); A: (G, D/G, N, 1); Bc, Cc: (B, G, 1, N, C);
    h: (B, G, D/G, N); bound: clamp of |dt A| (None when no step reaches it)
    -> (y (B, G, D/G, C), last state (B, G, D/G, N))."""
    dtA = dt * A  # (B, G, D/G, N, C)
    if bound is not None:
        dtA = dtA.clamp(-bound, bound)
    E, E_inv = ExpPair.apply(dtA.cumsum(-1))  # e^{q_t}, e^{-q_t}
    S = x * Bc * E_inv
    S[..., 0] += h
    H = E * S.cumsum(-1)
    return (H * Cc).sum(-2), H[..., -1]


TRACE_CHUNK = 16  # chunk of the traceable form: its pairwise decays cost O(B D N C^2) per chunk


def _chunk_pairwise(
    dt: Tensor, x: Tensor, A: Tensor, Bc: Tensor, Cc: Tensor, h: Tensor
) -> tuple[Tensor, Tensor]:
    """``_chunk`` with fixed spans, for torch.compile / torch.export: the chunk's cut points above
    depend on the values of dt (a host sync that a traced graph cannot hold), so instead every pair
    of steps s <= t of a chunk gets its own decay e^{q_t - q_s} (an exponent <= 0 whenever dt A <= 0,
    Mamba's case: nothing to overflow, nothing to clamp) and h_t = e^{q_t} h_0 + sum_s e^{q_t - q_s} x_s B_s."""
    q = (dt * A).cumsum(-1)  # (B, G, D/G, N, C)
    C = q.shape[-1]
    causal = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
    seg = torch.where(causal, q[..., :, None] - q[..., None, :], float("-inf")).exp()  # (..., N, C_t, C_s)
    H = (seg @ (x * Bc)[..., None])[..., 0] + q.exp() * h[..., None]  # (B, G, D/G, N, C)
    return (H * Cc).sum(-2), H[..., -1]


def selective_scan_chunked(
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
    out_dtype = u.dtype
    work = u.dtype if u.dtype in BOUND else torch.float32
    u, delta, A, B, C = (t.to(work) for t in (u, delta, A, B, C))
    dt = discretized_step(delta, None if delta_bias is None else delta_bias.to(work), delta_softplus)
    Bsz, L, Dm = u.shape
    N = A.shape[1]
    B4, C4 = (M.unsqueeze(2) if M.dim() == 3 else M for M in (B, C))
    G = B4.shape[2]
    bound = BOUND[work]
    tracing = torch.compiler.is_compiling()
    if not tracing:
        with torch.no_grad():
            step = (dt.abs() * A.abs().amax(-1)).amax(dim=(0, 2)).tolist()  # worst |dt A| per step

    def time_last(x: Tensor) -> Tensor:  # (B, L, D) -> (B, G, D/G, 1, L)
        return x.transpose(1, 2).reshape(Bsz, G, Dm // G, 1, L)

    dtT, xT = time_last(dt), time_last(dt * u)
    BT, CT = (M.permute(0, 2, 3, 1).unsqueeze(2).contiguous() for M in (B4, C4))
    Ag = A.reshape(G, Dm // G, N, 1)
    h = u.new_zeros(Bsz, Dm, N) if initial_state is None else initial_state.to(work)
    h = h.reshape(Bsz, G, Dm // G, N)
    grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (dtT, xT, Ag, BT, CT, h)
    )
    ys = []
    if tracing:
        for t0 in range(0, L, TRACE_CHUNK):
            t1 = min(L, t0 + TRACE_CHUNK)
            y, h = _chunk_pairwise(dtT[..., t0:t1], xT[..., t0:t1], Ag, BT[..., t0:t1], CT[..., t0:t1], h)
            ys.append(y)
    else:
        clamp = bound if max(step) > bound else None
        for t0, t1 in chunk_spans(step, bound, MAX_CHUNK):
            args = (dtT[..., t0:t1], xT[..., t0:t1], Ag, BT[..., t0:t1], CT[..., t0:t1], h, clamp)
            y, h = checkpoint(_chunk, *args, use_reentrant=False) if grad else _chunk(*args)
            ys.append(y)
    y = torch.cat(ys, dim=-1).reshape(Bsz, Dm, L).transpose(1, 2)
    if D is not None:
        y = y + D.to(work) * u
    if z is not None:
        y = y * torch.nn.functional.silu(z.to(work))
    return y.contiguous().to(out_dtype), h.reshape(Bsz, Dm, N).to(out_dtype)
