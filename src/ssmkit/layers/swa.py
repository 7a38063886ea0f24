"""Sliding-window attention: causal softmax attention over the last W tokens (Beltagy et al. 2020,
"Longformer", one-sided; the rolling cache of Jiang et al. 2023, "Mistral 7B").

Per head h (H heads of size P = D / H), for the token at position t, with RoPE rotations R(t) as in
``layers.attention``:

    o_t = sum_{t - W <= s <= t} softmax_s(q_t . k_s / sqrt(P)) v_s,     y_t = W_o [o_t over heads]

so a token sees itself and the W tokens before it (Mistral's "positions between i - W and i").
Derivation and the cost: docs/math/swa.md.

State: ``WindowCache(k, v, length)``: the rotated keys and the values of the last W tokens, k, v
(B, W, H, P) right-aligned (slot j holds position length - W + j; zeros before a row's first
token), and the tokens seen per row (float). Its size is fixed: 2 W D floats (+1), whatever the
length, so streaming costs O(W D) per token.

Modes: ``chunked`` (queries in blocks of ``chunk_size``, each against the chunk_size + W keys it can
see: O(L (C + W)) time and memory, no L x L mask) and ``reference`` (one block: the dense
L x (W + L) masked softmax). ``step`` is a forward over one token.
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple

import torch
from torch import Tensor, nn

from ..config import check
from ._window import (call_lengths, check_window_field, local_attention, softmax_attend, state_dtype, tail,
                      token_count)
from .attention import rope, rope_heads
from .base import MixerConfig, SequenceMixer, tag_ssm_param
from .call import ForwardCall
from .registry import register_mixer


class WindowCache(NamedTuple):
    k: Tensor  # (B, W, H, P) rotated keys of the last W tokens, right-aligned
    v: Tensor  # (B, W, H, P) their values
    length: Tensor  # (B,) float: tokens seen per row (positions continue from it)


@dataclasses.dataclass
class SWAConfig(MixerConfig):
    window: int = 64  # W: a token sees itself and the W tokens before it
    n_heads: int | None = None  # H; None: max(1, D // 64)
    rope_base: float = 10000.0
    bias: bool = True  # biases on the q, k, v, o projections
    chunk_size: int = 64  # C: queries per block of the chunked mode

    def __post_init__(self) -> None:
        check_window_field(self.window, "window")
        check_window_field(self.chunk_size, "chunk_size")
        h = self.n_heads
        check(h is None or h >= 1, "n_heads", f"must be None or an int >= 1, got {h!r}")
        check(self.rope_base > 1.0, "rope_base", f"must be > 1, got {self.rope_base}")


def qkv_projections(module: nn.Module, d_model: int, bias: bool, key_bias: bool = True) -> None:
    """Give ``module`` q, k, v and o projections (D -> D) with their biases tagged for no weight decay.

    ``key_bias=False`` leaves the bias off k where keys are not rotated: q . b_k is then the same
    for every key of a query, so softmax cancels it (its gradient is exactly zero)."""
    for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
        lin = nn.Linear(d_model, d_model, bias=bias and (key_bias or name != "k_proj"))
        setattr(module, name, lin)
        if lin.bias is not None:
            tag_ssm_param(lin.bias, lr=None)


@register_mixer("swa")
class SlidingWindowAttention(SequenceMixer):
    """Causal attention over the last W tokens (B, L, D) -> (B, L, D); state ``WindowCache`` (fixed size)."""
    cp_state = ("halo", "halo", "count")  # the window of keys and values; the position

    Config = SWAConfig
    config: SWAConfig
    modes = ("chunked", "reference")
    block_fields = ("window",)

    def __init__(self, d_model: int, mode: str = "auto", **cfg) -> None:
        super().__init__(d_model, mode, **cfg)
        H, P = rope_heads(self.config.n_heads, d_model)
        self.n_heads, self.head_dim = H, P
        qkv_projections(self, d_model, self.config.bias)

    def _zero_state(self, batch_size, device, dtype) -> WindowCache:
        kv = torch.zeros(batch_size, self.config.window, self.n_heads, self.head_dim, device=device, dtype=dtype)
        return WindowCache(kv, kv.clone(), torch.zeros(batch_size, device=device, dtype=dtype))

    @property
    def state_size(self) -> int:
        """2 W D floats of keys and values, and the token count."""
        return 2 * self.config.window * self.d_model + 1

    def state_size_at(self, length: int) -> int:
        """The cache holds W slots from the first token on: the same at every length."""
        return self.state_size

    def _step(self, x_t: Tensor, state: WindowCache, dt: Tensor | None) -> tuple[Tensor, WindowCache]:
        y, new = self._forward(x_t[:, None], state, ForwardCall("chunked"))
        return y[:, 0], new

    def _forward(self, x: Tensor, state: WindowCache | None, call: ForwardCall) -> tuple[Tensor, WindowCache]:
        B, L, D = x.shape
        W = self.config.window
        sdtype = state_dtype(x)
        cache = self.init_state(B, x.device, sdtype) if state is None else WindowCache(*state)
        n = token_count(cache.length)
        pos = n[:, None] + torch.arange(L, device=x.device)
        heads = (B, L, self.n_heads, self.head_dim)
        q = rope(self.q_proj(x).view(heads), pos, self.config.rope_base).to(sdtype)
        k = rope(self.k_proj(x).view(heads), pos, self.config.rope_base).to(sdtype)
        v = self.v_proj(x).view(heads).to(sdtype)
        ext_k, ext_v = torch.cat([cache.k, k], 1), torch.cat([cache.v, v], 1)  # (B, W + L, H, P)

        def attend(q_blk, kv, q_pos, k_pos):
            # k_pos >= 0: slots before a row's first token hold no key
            visible = (k_pos <= q_pos) & (k_pos >= q_pos - W) & (k_pos >= 0)
            return softmax_attend(q_blk, kv[0], kv[1], visible)

        block = L if call.mode == "reference" else self.config.chunk_size
        o = local_attention(q, [ext_k, ext_v], n, W, block, attend)
        y = self.o_proj(o.reshape(B, L, D).to(x.dtype))
        real = call_lengths(call.lengths, B, L, x.device)
        end = W + real
        return y, WindowCache(tail(ext_k, end, W), tail(ext_v, end, W), (n + real).to(cache.length.dtype))


__all__ = ["SWAConfig", "SlidingWindowAttention", "WindowCache", "qkv_projections"]
