"""Recurrent Memory Transformer (Bulatov, Kuratov, Burtsev 2022, "Recurrent Memory Transformer"), as
one mixer whose memory tokens pass through its whole inner Transformer.

The sequence is cut into segments of S tokens (at absolute positions 0, S, 2S, ...). Segment s runs
through ``depth`` pre-norm causal attention blocks (RoPE, optional MLP) as the decoder RMT's

    [ M_s (read memory, m tokens) ; x_{sS} .. x_{sS+S-1} ; M_s (write memory, m tokens) ]

so every token reads the memory, and the write tokens, last, see the whole segment. The outputs at
the write positions, through a final LayerNorm, are the next segment's memory, M_{s+1}; the first
segment reads a learned M_0. (The paper's code takes the base model's last hidden state, which
GPT-2 returns after its final LayerNorm; without it the pre-norm residual stream of the memory grows
by about one block update per segment: measured |M| 6.5 after 1 segment, 118 after 32; with it,
8.2 to 8.4.)
The mixer returns the inner stack's update at the token positions (its output minus x: the stack
around the mixer adds its own residual). As the only mixer of a one-layer backbone, with ``depth``
inner blocks, this is the paper's architecture (memory tokens through the whole stack); in a deeper
backbone every RMT layer keeps its own memory.

Training over long inputs (the paper's BPTT over segments): gradients flow through the memory across
every segment of a call and into a given state; ``bptt_segments = k`` cuts them every k segments
(the memory read by segment s, for s a multiple of k, is detached), so backpropagation spans at most
k segments. Cuts follow absolute segment numbers, so a split call cuts at the same places; a cut
never changes a value. ``training.tbptt`` cuts at call boundaries on top.

State: ``RMTState(mem, x, length)``: the memory (B, m, D) after the last completed segment, the last
S - 1 inputs (B, S - 1, D) (the partial segment, recomputed with the memory at the next call, so a
split inside a segment is exact) and the token count. Constant size: (m + S - 1) D + 1 floats; a
token step reruns its partial segment (O(S (S + 2m)) per token and block).

Modes: the inner attention through torch's fused ``sdpa`` or the explicit float64 ``math`` softmax.
Derivation: docs/math/rmt.md.
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import check
from ._window import block_view, call_lengths, check_window_field, state_dtype, tail, token_count, unblock
from .attention import attention_math, rope, rope_heads
from .base import MixerConfig, SequenceMixer, tag_ssm_param
from .call import ForwardCall
from .registry import register_mixer
from .swa import qkv_projections


class RMTState(NamedTuple):
    mem: Tensor  # (B, m, D) memory tokens the next segment reads
    x: Tensor  # (B, S - 1, D) the last inputs, right-aligned (the partial segment)
    length: Tensor  # (B,) float: tokens seen per row


@dataclasses.dataclass
class RMTConfig(MixerConfig):
    segment_len: int = 32  # S: tokens per segment
    n_memory: int = 4  # m: memory tokens read and written per segment
    depth: int = 1  # inner attention blocks the memory passes through
    n_heads: int | None = None  # H; None: max(1, D // 64)
    rope_base: float = 10000.0
    ffn_mult: int = 0  # hidden width multiple of each inner block's MLP; 0: no MLP
    bias: bool = True
    bptt_segments: int = 0  # k: gradients through the memory span k segments; 0: every segment

    def __post_init__(self) -> None:
        check_window_field(self.segment_len, "segment_len")
        check_window_field(self.n_memory, "n_memory")
        check_window_field(self.depth, "depth")
        h = self.n_heads
        check(h is None or h >= 1, "n_heads", f"must be None or an int >= 1, got {h!r}")
        check(self.rope_base > 1.0, "rope_base", f"must be > 1, got {self.rope_base}")
        check(self.ffn_mult >= 0, "ffn_mult", f"must be an int >= 0, got {self.ffn_mult!r}")
        check(self.bptt_segments >= 0, "bptt_segments", f"must be an int >= 0 (0: no cut), got {self.bptt_segments!r}")


class InnerBlock(nn.Module):
    """h <- h + attn(LN(h)) [+ MLP(LN(h))]: causal multi-head attention with RoPE over one segment."""

    def __init__(self, d_model: int, n_heads: int, cfg: RMTConfig) -> None:
        super().__init__()
        self.n_heads, self.head_dim, self.rope_base = n_heads, d_model // n_heads, cfg.rope_base
        self.norm = nn.LayerNorm(d_model)
        qkv_projections(self, d_model, cfg.bias)
        self.mlp = None
        if cfg.ffn_mult:
            hidden = cfg.ffn_mult * d_model
            self.mlp_norm = nn.LayerNorm(d_model)
            self.mlp = nn.Sequential(nn.Linear(d_model, hidden), nn.GELU(), nn.Linear(hidden, d_model))

    def forward(self, h: Tensor, mode: str) -> Tensor:
        B, L, D = h.shape
        u = self.norm(h)
        pos = torch.arange(L, device=h.device).expand(B, L)
        heads = (B, L, self.n_heads, self.head_dim)
        q = rope(self.q_proj(u).view(heads), pos, self.rope_base).transpose(1, 2)
        k = rope(self.k_proj(u).view(heads), pos, self.rope_base).transpose(1, 2)
        v = self.v_proj(u).view(heads).transpose(1, 2)
        o = attention_math(q, k, v, None) if mode == "math" else F.scaled_dot_product_attention(q, k, v, is_causal=True)
        h = h + self.o_proj(o.transpose(1, 2).reshape(B, L, D))
        return h if self.mlp is None else h + self.mlp(self.mlp_norm(h))


@register_mixer("rmt")
class RecurrentMemoryTransformer(SequenceMixer):
    """Segments of S tokens with m read/write memory tokens through ``depth`` attention blocks."""
    cp_refusal = "its memory tokens pass through a Transformer at each segment: a nonlinear map of the incoming memory"

    Config = RMTConfig
    config: RMTConfig
    modes = ("sdpa", "math")
    block_fields = ("segment_len",)
    carry_field = "segment_len"

    def __init__(self, d_model: int, mode: str = "auto", **cfg) -> None:
        super().__init__(d_model, mode, **cfg)
        c = self.config
        H, _ = rope_heads(c.n_heads, d_model)
        self.blocks = nn.ModuleList(InnerBlock(d_model, H, c) for _ in range(c.depth))
        self.mem0 = tag_ssm_param(nn.Parameter(torch.randn(c.n_memory, d_model) * 0.02))  # M_0
        self.write_norm = nn.LayerNorm(d_model)  # M_{s+1} = LN(write outputs): the paper's final norm

    def _zero_state(self, batch_size, device, dtype) -> RMTState:
        c = self.config
        return RMTState(torch.zeros(batch_size, c.n_memory, self.d_model, device=device, dtype=dtype),
                        torch.zeros(batch_size, c.segment_len - 1, self.d_model, device=device, dtype=dtype),
                        torch.zeros(batch_size, device=device, dtype=dtype))

    @property
    def state_size(self) -> int:
        return (self.config.n_memory + self.config.segment_len - 1) * self.d_model + 1

    def _step(self, x_t: Tensor, state: RMTState, dt: Tensor | None) -> tuple[Tensor, RMTState]:
        y, new = self._forward(x_t[:, None], state, ForwardCall(self.resolve_mode("auto", x_t[:, None])))
        return y[:, 0], new

    def _forward(self, x: Tensor, state: RMTState | None, call: ForwardCall) -> tuple[Tensor, RMTState]:
        B, L, D = x.shape
        S, m, k = self.config.segment_len, self.config.n_memory, self.config.bptt_segments
        T = S - 1
        sdtype = state_dtype(x)
        st = self.init_state(B, x.device, sdtype) if state is None else RMTState(*state)
        n = token_count(st.length)
        ext = torch.cat([st.x, x.to(sdtype)], 1)  # (B, T + L, D)
        phase = n % S
        n_blocks = -(-(L + T) // S)
        segments = block_view(ext, T - phase, n_blocks, S)  # (B, nb, S, D): row b's segments from its current one
        real = call_lengths(call.lengths, B, L, x.device)
        done = phase + real
        mem = torch.where((n < S)[:, None, None], self.mem0.to(sdtype), st.mem)  # no segment completed: M_0
        outs = []
        for j in range(n_blocks):
            if k:  # the memory read by every k-th segment (absolute count) passes no gradient back
                cut = ((n // S + j) % k == 0) & (n // S + j > 0)
                mem = torch.where(cut[:, None, None], mem.detach(), mem)
            seg = segments[:, j].to(x.dtype)
            h = torch.cat([mem.to(x.dtype), seg, mem.to(x.dtype)], 1)
            for block in self.blocks:
                h = block(h, call.mode)
            outs.append(h[:, m:m + S] - seg)
            mem = torch.where(((j + 1) * S <= done)[:, None, None], self.write_norm(h[:, m + S:]).to(sdtype), mem)
        y = unblock(torch.stack(outs, 1), phase, L)
        return y, RMTState(mem, tail(ext, T + real, T), (n + real).to(st.length.dtype))


__all__ = ["RMTConfig", "RMTState", "RecurrentMemoryTransformer"]
