"""Chunked SSD's pass across chunks, h_{c+1} = d_c h_c + Z_c, as one autograd node.

The loop runs L/T times on (B, G, R, P, N) states. Composed from torch ops, each step is an
autograd node whose backward allocates and copies (thousands of small copies at L = 16k), and the
states entering the chunks were stacked from a list. Here the forward writes them into one
preallocated tensor and the backward is the reverse recurrence, also in place:

    gZ_c = g_{c+1},   g d_c = sum over (P, N) of g_{c+1} ∘ h_c,   g_c = d_c g_{c+1} + g(h_in)_c

with g_{nc} the final state's gradient and g_0 the initial state's.
"""
from __future__ import annotations

import torch
from torch import Tensor


class _InterChunk(torch.autograd.Function):
    @staticmethod
    def forward(ctx, states: Tensor, decay: Tensor, h0: Tensor) -> tuple[Tensor, Tensor]:
        h_in = torch.empty_like(states)
        h = h0
        for c in range(states.shape[1]):
            h_in[:, c] = h
            h = torch.addcmul(states[:, c], decay[:, c, ..., None, None], h)
        ctx.save_for_backward(decay, h_in)
        return h_in, h

    @staticmethod
    def backward(ctx, g_in: Tensor | None, g_final: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        decay, h_in = ctx.saved_tensors
        g_states = torch.empty_like(h_in)
        g_decay = torch.empty_like(decay)
        g = torch.zeros_like(h_in[:, 0]) if g_final is None else g_final.clone()
        for c in reversed(range(h_in.shape[1])):
            g_states[:, c] = g
            torch.sum(g * h_in[:, c], dim=(-2, -1), out=g_decay[:, c])
            g.mul_(decay[:, c, ..., None, None])
            if g_in is not None:
                g.add_(g_in[:, c])
        return g_states, g_decay, g


def inter_chunk(states: Tensor, decay: Tensor, h0: Tensor) -> tuple[Tensor, Tensor]:
    """states Z (B, nc, G, R, P, N) of each chunk from a zero state, decay d (B, nc, G, R) = the
    chunk's exp(sum of dt A), h0 (B, G, R, P, N) -> (the state entering each chunk
    (B, nc, G, R, P, N), the final state (B, G, R, P, N))."""
    return _InterChunk.apply(states, decay, h0)
