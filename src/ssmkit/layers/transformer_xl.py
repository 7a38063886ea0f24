"""Transformer-XL attention: segment-level recurrence with relative positions (Dai, Yang, Yang,
Carbonell, Le, Salakhutdinov 2019, "Transformer-XL: Attentive Language Models Beyond a
Fixed-Length Context").

The sequence is cut into segments of S tokens (at absolute positions 0, S, 2S, ...). A token at
position t of a segment starting at s0 attends to the memory, the M hidden states before s0 (this
layer's inputs, which in a stack are the previous layer's outputs), and to the tokens of its own
segment up to itself. With the paper's relative positions (its eq. for A^rel, per head h):

    A_{t,j} = (q_t + u)^T k_j + (q_t + v)^T W_R R_{t-j},     s0 - M <= j <= t
    q_t = W_q x_t,  k_j = W_k x~_j,  v_j = W_v x~_j,          x~_j = SG(x_j) when j < s0
    o_t = sum_j softmax_j(A_{t,j} / sqrt(P)) v_j,             y_t = W_o [o_t over heads]

R_d is the sinusoidal encoding of the distance d (0 <= d < M + S), u and v (H, P) are learned
biases (the paper's u, v), and SG is the paper's stop-gradient into the memory: a key or value of
an earlier segment passes no gradient to the hidden state it was computed from (W_k and W_v still
learn from it). ``stop_grad_memory=False`` keeps that gradient. SG changes no value (the same sums
in another order: 1e-14 apart in float64).

What holds exactly (tested; docs/math/transformer_xl.md): forward == token-by-token step == any
split with the state carried == every mode, in values and in gradients, because segment boundaries
and the SG rule follow absolute positions, not call boundaries. What SG changes: the gradient of
the loss with respect to hidden states of earlier segments (and so to a given state's memory
part) is zero, as in the paper; with ``stop_grad_memory=False`` it is the full gradient.

State: ``XLMemory(x, length)``: the last T = M + S - 1 inputs (B, T, D), right-aligned, enough for
the last token of a segment (the M memory states and the S - 1 tokens before it in its segment:
the partial segment rides in the state, so a split inside a segment is exact), and the tokens seen
per row. Keys and values are recomputed from it with the current weights, as the paper's ``mems``.
Modes: ``chunked`` (segment-sized query blocks against the T + S inputs each can see) and
``reference`` (one dense L x (T + L) block).
"""
from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import torch
from torch import Tensor, nn

from ..config import check
from ._window import (call_lengths, check_window_field, local_attention, masked_softmax, sinusoids, state_dtype,
                      tail, token_count)
from .base import MixerConfig, SequenceMixer, resolve_heads, tag_ssm_param
from .call import ForwardCall
from .registry import register_mixer
from .swa import qkv_projections


class XLMemory(NamedTuple):
    x: Tensor  # (B, M + S - 1, D) the last inputs, right-aligned (zeros before a row's first token)
    length: Tensor  # (B,) float: tokens seen per row (segment boundaries follow it)


@dataclasses.dataclass
class TransformerXLConfig(MixerConfig):
    segment_len: int = 64  # S: tokens per segment
    mem_len: int = 64  # M: hidden states of earlier segments a segment attends to
    n_heads: int | None = None  # H; None: max(1, D // 64)
    bias: bool = True  # biases on the q, v, o projections (a k bias would cancel in the softmax)
    stop_grad_memory: bool = True  # the paper's SG: no gradient into earlier segments' hidden states

    def __post_init__(self) -> None:
        check_window_field(self.segment_len, "segment_len")
        check_window_field(self.mem_len, "mem_len")
        h = self.n_heads
        check(h is None or h >= 1, "n_heads", f"must be None or an int >= 1, got {h!r}")


@register_mixer("transformer_xl")
class TransformerXL(SequenceMixer):
    """Segment-recurrent attention with relative positions (B, L, D) -> (B, L, D); state ``XLMemory``."""
    cp_state = ("halo", "count")  # the memory of past inputs; the position

    Config = TransformerXLConfig
    config: TransformerXLConfig
    modes = ("chunked", "reference")
    block_fields = ("segment_len", "mem_len")
    carry_field = "segment_len"

    def __init__(self, d_model: int, mode: str = "auto", **cfg) -> None:
        super().__init__(d_model, mode, **cfg)
        H = resolve_heads(self.config.n_heads, d_model)
        self.n_heads, self.head_dim = H, d_model // H
        qkv_projections(self, d_model, self.config.bias, key_bias=False)
        self.r_proj = nn.Linear(d_model, d_model, bias=False)  # W_R: distance encodings -> position keys
        self.u = tag_ssm_param(nn.Parameter(torch.zeros(H, self.head_dim)))  # content bias
        self.v = tag_ssm_param(nn.Parameter(torch.zeros(H, self.head_dim)))  # position bias

    @property
    def history(self) -> int:
        """T = M + S - 1 inputs: what the last token of a segment sees before itself."""
        return self.config.mem_len + self.config.segment_len - 1

    def _zero_state(self, batch_size, device, dtype) -> XLMemory:
        return XLMemory(torch.zeros(batch_size, self.history, self.d_model, device=device, dtype=dtype),
                        torch.zeros(batch_size, device=device, dtype=dtype))

    @property
    def state_size(self) -> int:
        """(M + S - 1) D floats of inputs and the token count: fixed."""
        return self.history * self.d_model + 1

    def _step(self, x_t: Tensor, state: XLMemory, dt: Tensor | None) -> tuple[Tensor, XLMemory]:
        y, new = self._forward(x_t[:, None], state, ForwardCall("chunked"))
        return y[:, 0], new

    def _forward(self, x: Tensor, state: XLMemory | None, call: ForwardCall) -> tuple[Tensor, XLMemory]:
        B, L, D = x.shape
        S, M, T = self.config.segment_len, self.config.mem_len, self.history
        H, P = self.n_heads, self.head_dim
        sdtype = state_dtype(x)
        mem = self.init_state(B, x.device, sdtype) if state is None else XLMemory(*state)
        n = token_count(mem.length)
        ext = torch.cat([mem.x, x.to(sdtype)], 1)  # (B, T + L, D)
        q = self.q_proj(x).view(B, L, H, P).to(sdtype)
        kv = [self.k_proj(ext), self.v_proj(ext)]
        sg = self.config.stop_grad_memory and torch.is_grad_enabled()
        if sg:  # the same keys and values from the detached inputs, read for earlier segments' tokens
            kv += [self.k_proj(ext.detach()), self.v_proj(ext.detach())]
        kv = [t.view(B, T + L, H, P).to(sdtype) for t in kv]
        rel = self.r_proj(sinusoids(M + S, D, x.device, sdtype)).view(M + S, H, P).to(sdtype)
        scale = 1.0 / math.sqrt(P)

        def attend(q_blk, kv_blk, q_pos, k_pos):
            seg_start = torch.div(q_pos, S, rounding_mode="floor") * S
            visible = (k_pos <= q_pos) & (k_pos >= seg_start - M) & (k_pos >= 0)
            dist = (q_pos - k_pos).clamp(0, M + S - 1)  # (B, nC, C, C + T); out of range is invisible
            content = torch.einsum("bcqhp,bckhp->bchqk", q_blk + self.u, kv_blk[0])
            earlier = (k_pos < seg_start).unsqueeze(-3)  # keys of earlier segments (the memory)
            if sg:
                content = torch.where(earlier, torch.einsum("bcqhp,bckhp->bchqk", q_blk + self.u, kv_blk[2]), content)
            position = torch.einsum("bcqhp,dhp->bchqd", q_blk + self.v, rel)  # (B, nC, H, C, M + S)
            position = position.gather(-1, dist.unsqueeze(2).expand(*content.shape))
            w = masked_softmax((content + position) * scale, visible)
            if not sg:
                return torch.einsum("bchqk,bckhp->bcqhp", w, kv_blk[1])
            return (torch.einsum("bchqk,bckhp->bcqhp", w * earlier, kv_blk[3])
                    + torch.einsum("bchqk,bckhp->bcqhp", w * ~earlier, kv_blk[1]))

        block = L if call.mode == "reference" else S
        o = local_attention(q, kv, n, T, block, attend)
        y = self.o_proj(o.reshape(B, L, D).to(x.dtype))
        real = call_lengths(call.lengths, B, L, x.device)
        return y, XLMemory(tail(ext, T + real, T), (n + real).to(mem.length.dtype))


__all__ = ["TransformerXL", "TransformerXLConfig", "XLMemory"]
