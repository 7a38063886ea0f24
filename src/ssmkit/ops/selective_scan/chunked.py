"""Chunked pure-PyTorch mode of the selective scan: whole-chunk tensor ops, no loop over tokens.

Within a chunk of steps 1..C starting from the state h_0, per channel d and state n,

    q_t = sum_{s<=t} dt_s A             (cumulative log decay)
    h_t = e^{q_t} (h_0 + sum_{s<=t} e^{-q_s} dt_s B_s u_s)

so every state of the chunk comes from one cumsum between two exponentials, and only the last one
is carried to the next chunk. The factors e^{+-q} must stay finite and keep their precision: the
chunks are cut so that the sum over the chunk of max |dt A| stays under ``BOUND`` (60 in float32,
600 in float64); a single step's |dt A| is clamped to the bound, which only changes decays already
below e^-60 (float32) or e^-600 (float64). Chunks hold at most ``MAX_CHUNK`` steps.

Memory is O(B D N C): ``ChunkedScan`` (a custom autograd function) keeps only each chunk's start
state, (B, D, N) per chunk, and its backward recomputes one chunk at a time, in reverse, with the
gradients written in place into (B, D, L) buffers (gradient formulas: docs/math/selective_scan.md,
"The chunked backward"). Autograd through per-chunk slices would instead keep every chunk's
intermediates, or give each slice's backward a gradient of the whole sequence's size. Time is the
last axis inside a chunk: the cumsums then run over contiguous memory.
"""
from __future__ import annotations

import torch
from torch import Tensor

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


def _states(dt: Tensor, x: Tensor, A: Tensor, Bc: Tensor, h: Tensor, bound: float | None
            ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One chunk's states. dt, x = dt u: (B, G, D/G, 1, C); A: (G, D/G, N, 1); Bc: (B, G, 1, N, C);
    h: (B, G, D/G, N) -> (H = every state, E = e^q, e^-q, X = dt B u e^-q), each (B, G, D/G, N, C)."""
    dtA = dt * A
    if bound is not None:
        dtA = dtA.clamp_(-bound, bound)
    E = dtA.cumsum_(-1).exp_()
    E_inv = torch.reciprocal(E)  # |q| <= bound: both stay finite, to 1 ulp
    X = x * Bc * E_inv
    H = X.cumsum(-1).add_(h.unsqueeze(-1)).mul_(E)
    return H, E, E_inv, X


def _reverse_cumsum(t: Tensor) -> Tensor:
    """sum_{s >= t} along the last axis (a flip, not total - prefix: that would cancel)."""
    return t.flip(-1).cumsum(-1).flip(-1)


class ChunkedScan(torch.autograd.Function):
    """(dt, x = dt u, A, B, C, h_0, spans, bound) -> (y (B, G, D/G, L), h_L (B, G, D/G, N)), the
    scan before D u and the z gate; shapes as in ``_states`` with L for C. Saves the inputs and
    each chunk's start state; the backward recomputes one chunk at a time."""

    @staticmethod
    def forward(ctx, dt: Tensor, x: Tensor, A: Tensor, Bc: Tensor, Cc: Tensor, h: Tensor,
                spans: list[tuple[int, int]], bound: float | None) -> tuple[Tensor, Tensor]:
        y = x.new_empty(x.shape[:-2] + x.shape[-1:])
        starts = []
        for t0, t1 in spans:
            starts.append(h)
            H = _states(dt[..., t0:t1], x[..., t0:t1], A, Bc[..., t0:t1], h, bound)[0]
            torch.sum(H * Cc[..., t0:t1], dim=-2, out=y[..., t0:t1])
            h = H[..., -1].clone()  # a view would keep the whole chunk's H alive
        ctx.save_for_backward(dt, x, A, Bc, Cc, *starts)
        ctx.spans, ctx.bound = spans, bound
        return y, h

    @staticmethod
    def backward(ctx, gy: Tensor | None, gh: Tensor | None):
        dt, x, A, Bc, Cc, *starts = ctx.saved_tensors
        bound = ctx.bound
        gdt, gx, gB, gC = (torch.empty_like(t) for t in (dt, x, Bc, Cc))
        gA = torch.zeros_like(A)
        gh = torch.zeros_like(starts[0]) if gh is None else gh
        gy = x.new_zeros(x.shape[:-2] + x.shape[-1:]) if gy is None else gy
        for (t0, t1), h in zip(reversed(ctx.spans), reversed(starts)):
            d, xs, Bs, Cs = dt[..., t0:t1], x[..., t0:t1], Bc[..., t0:t1], Cc[..., t0:t1]
            H, E, E_inv, X = _states(d, xs, A, Bs, h, bound)
            g = gy[..., t0:t1].unsqueeze(-2)  # (B, G, D/G, 1, C)
            torch.sum(g * H, dim=2, keepdim=True, out=gC[..., t0:t1])
            gH = g * Cs
            gH[..., -1] += gh
            gS = _reverse_cumsum(gH * E)  # d loss / d (h_0 + cumsum X)_t, summed over s >= t
            gh = gS[..., 0].clone()
            torch.sum(gS * Bs * E_inv, dim=-2, keepdim=True, out=gx[..., t0:t1])
            torch.sum(gS * xs * E_inv, dim=2, keepdim=True, out=gB[..., t0:t1])
            gdA = _reverse_cumsum(gH.mul_(H).sub_(gS.mul_(X)))  # dq = gH H - gS X, then q = cumsum
            if bound is not None:
                gdA.masked_fill_((d * A).abs() > bound, 0)
            torch.sum(gdA * A, dim=-2, keepdim=True, out=gdt[..., t0:t1])
            gA += (gdA * d).sum(dim=(0, -1)).unsqueeze(-1)
        return gdt, gx, gA, gB, gC, gh, None, None


TRACE_CHUNK = 16  # chunk of the traceable form: its pairwise decays cost O(B D N C^2) per chunk


def _chunk_pairwise(
    dt: Tensor, x: Tensor, A: Tensor, Bc: Tensor, Cc: Tensor, h: Tensor
) -> tuple[Tensor, Tensor]:
    """``ChunkedScan``'s chunks with fixed spans, for torch.compile / torch.export: the chunk's cut points above
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
    if tracing:
        ys = []
        for t0 in range(0, L, TRACE_CHUNK):
            t1 = min(L, t0 + TRACE_CHUNK)
            y, h = _chunk_pairwise(dtT[..., t0:t1], xT[..., t0:t1], Ag, BT[..., t0:t1], CT[..., t0:t1], h)
            ys.append(y)
        y = torch.cat(ys, dim=-1)
    else:
        clamp = bound if max(step) > bound else None
        y, h = ChunkedScan.apply(dtT, xT, Ag, BT, CT, h, chunk_spans(step, bound, MAX_CHUNK), clamp)
    y = y.reshape(Bsz, Dm, L).transpose(1, 2)
    if D is not None:
        y = y + D.to(work) * u
    if z is not None:
        y = y * torch.nn.functional.silu(z.to(work))
    return y.contiguous().to(out_dtype), h.reshape(Bsz, Dm, N).to(out_dtype)
