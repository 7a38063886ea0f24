"""Causal multi-head softmax attention with rotary positions and a KV-cache state.

Vaswani et al. 2017, "Attention Is All You Need"; rotary embeddings (RoPE) from Su et al. 2021,
"RoFormer". Per head h (H heads of size P = D / H), for the token at position t:

    q_t = R(t) W_q x_t,   k_t = R(t) W_k x_t,   v_t = W_v x_t
    o_t = sum_{s <= t} softmax_s(q_t . k_s / sqrt(P)) v_s,        y_t = W_o [o_t over heads]

R(t) rotates the pairs (i, i + P/2) of a head by the angle t * base^{-2i/P} (the "rotate half"
layout of GPT-NeoX / Llama). Derivations and the cache rules: docs/math/attention.md.

Options of released models (RecurrentGemma's local attention uses all four): ``n_kv_heads`` < H
(grouped / multi-query attention: query head h reads key-value head h // (H / n_kv_heads));
``rope_fraction`` < 1 (only the leading R = fraction · P dims of a head rotate, pairs (i, i + R/2),
angles t · base^{-2i/R}; the rest pass); ``window`` (token t attends to t - window < s <= t);
``out_bias`` (the output projection's bias apart from the q, k, v biases).

State: the KV cache ``KVCache(k, v, length)``: k, v (B, T, H_kv, P) hold the rotated keys and the
values of every token seen so far; row b's token at position t sits in slot t, so row b fills
k[b, :length[b]] and the slots after are zero. T is length.max() rounded up to a multiple of
``kv_block``: the cache then has the same shape whatever the other rows of a batch hold (and grows
by a block, not by a token). Positions continue from ``length`` row by row, so a split forward,
masks and ``step`` give exactly the unsplit result. ``length`` is stored as a float tensor so
that every leaf of a state is floating (tools mark every leaf requires_grad).

Modes: ``sdpa`` (torch's fused scaled_dot_product_attention; ``is_causal`` when there is no cache)
and ``math`` (the explicit softmax(Q K^T / sqrt(P) + mask) V in float64, the reference).
"""
from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import check
from .base import MixerConfig, SequenceMixer, resolve_heads, tag_ssm_param
from .call import ForwardCall
from .registry import register_mixer


class KVCache(NamedTuple):
    k: Tensor  # (B, T, H_kv, P) rotated keys; row b valid at [:length[b]], zeros after
    v: Tensor  # (B, T, H, P) values, same layout
    length: Tensor  # (B,) float: tokens cached per row


@dataclasses.dataclass
class AttentionConfig(MixerConfig):
    n_heads: int | None = None  # H; None: max(1, D // 64), i.e. head size 64 as in GPT-2 / Llama
    rope_base: float = 10000.0  # RoPE frequency base: pair i turns by t * base^{-2i/P}
    bias: bool = True  # biases on the q, k, v, o projections (trained without weight decay)
    kv_block: int = 64  # the cache holds a multiple of this many slots per row (see module doc)
    n_kv_heads: int | None = None  # key-value heads (grouped-query attention); None: n_heads
    rope_fraction: float = 1.0  # the leading fraction of each head's dims that RoPE rotates
    window: int | None = None  # local attention: each token sees itself and the window - 1 before it
    out_bias: bool | None = None  # bias of the output projection; None: as ``bias``

    def __post_init__(self) -> None:
        h = self.n_heads
        check(h is None or h >= 1, "n_heads", f"must be None or an int >= 1, got {h!r}")
        check(self.rope_base > 1.0, "rope_base", f"must be > 1, got {self.rope_base}")
        check(self.kv_block >= 1, "kv_block", f"must be an int >= 1, got {self.kv_block!r}")
        kv = self.n_kv_heads
        check(kv is None or kv >= 1, "n_kv_heads", f"must be None or an int >= 1, got {kv!r}")
        check(0.0 < self.rope_fraction <= 1.0, "rope_fraction", f"must be in (0, 1], got {self.rope_fraction}")
        check(self.window is None or self.window >= 1, "window", f"must be None or an int >= 1, got {self.window!r}")


def rope_heads(n_heads: int | None, d_model: int) -> tuple[int, int]:
    """(H, P): the heads (``resolve_heads``) and the head size d_model / H of a layer that rotates its
    queries and keys with ``rope``, which pairs dims: P must be even (an error naming n_heads)."""
    H = resolve_heads(n_heads, d_model)
    P = d_model // H
    check(P % 2 == 0, "n_heads", f"head size d_model/n_heads = {P} must be even for RoPE (n_heads={H})")
    return H, P


def rope(x: Tensor, pos: Tensor, base: float, rotary_dim: int | None = None) -> Tensor:
    """Rotate the leading R = ``rotary_dim`` (default P) dims of x (B, L, H, P) by the angles
    pos (B, L) * base^{-2i/R}, pairs (i, i + R/2); the other P - R dims pass unchanged."""
    P = x.shape[-1]
    R = P if rotary_dim is None else rotary_dim
    inv_freq = base ** (-torch.arange(0, R // 2, device=x.device, dtype=torch.float64) * 2 / R)
    # Angles in float64: t * freq for t ~ 1e4 keeps its digits, then the rotation in x's dtype.
    ang = (pos.to(torch.float64)[..., None] * inv_freq)[:, :, None, :]  # (B, L, 1, R/2)
    cos, sin = torch.cos(ang).to(x.dtype), torch.sin(ang).to(x.dtype)
    x1, x2 = x[..., : R // 2], x[..., R // 2 : R]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin, x[..., R:]], dim=-1)


def attention_math(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
    """softmax(q k^T / sqrt(P) + mask) v in float64; q (B, H, L, P), k, v (B, H, S, P).

    mask (B or 1, 1, L, S) bool (True = attend) or None for the causal mask of S = L.
    """
    q64, k64, v64 = q.double(), k.double(), v.double()
    scores = q64 @ k64.transpose(-1, -2) / math.sqrt(q.shape[-1])  # (B, H, L, S)
    if mask is None:
        L = q.shape[-2]
        mask = torch.ones(L, L, dtype=torch.bool, device=q.device).tril()
    scores = scores.masked_fill(~mask, float("-inf"))
    return (torch.softmax(scores, dim=-1) @ v64).to(q.dtype)


@register_mixer("attention")
class Attention(SequenceMixer):
    """Causal softmax attention (B, L, D) -> (B, L, D); state ``KVCache`` (grows by one token a step)."""
    cp_state = ("history", "history", "count")  # all-gathered keys and values; the position

    Config = AttentionConfig
    config: AttentionConfig
    modes = ("sdpa", "math")

    def __init__(self, d_model: int, mode: str = "auto", **cfg) -> None:
        super().__init__(d_model, mode, **cfg)
        c = self.config
        H, P = rope_heads(c.n_heads, d_model)
        Hkv = H if c.n_kv_heads is None else c.n_kv_heads
        check(H % Hkv == 0, "n_kv_heads", f"must divide n_heads={H}, got {Hkv}")
        R = round(c.rope_fraction * P)
        check(R == c.rope_fraction * P and R % 2 == 0, "rope_fraction",
              f"rope_fraction * head size = {c.rope_fraction} * {P} must be an even int")
        self.n_heads, self.head_dim, self.n_kv_heads, self.rotary_dim = H, P, Hkv, R
        self.q_proj = nn.Linear(d_model, d_model, bias=c.bias)
        self.k_proj = nn.Linear(d_model, Hkv * P, bias=c.bias)
        self.v_proj = nn.Linear(d_model, Hkv * P, bias=c.bias)
        self.o_proj = nn.Linear(d_model, d_model, bias=c.bias if c.out_bias is None else c.out_bias)
        # Attention has no SSM parameters; its biases take the no-weight-decay group (as is usual
        # for biases), which is what the tag means with lr=None.
        for lin in (self.q_proj, self.k_proj, self.v_proj, self.o_proj):
            if lin.bias is not None:
                tag_ssm_param(lin.bias, lr=None)

    # ----------------------------------------------------------------- interface
    def _zero_state(self, batch_size, device, dtype) -> KVCache:
        empty = torch.zeros(batch_size, 0, self.n_kv_heads, self.head_dim, device=device, dtype=dtype)
        return KVCache(empty, empty.clone(), torch.zeros(batch_size, device=device, dtype=dtype))

    @property
    def state_size(self) -> int:
        """KV floats per cached token: 2 H_kv P (the cache grows with the length, see state_size_at)."""
        return 2 * self.n_kv_heads * self.head_dim

    def state_size_at(self, length: int) -> int:
        return self.state_size * length

    def _growing_state_dims(self) -> dict[int, int]:
        return {0: 1, 1: 1}  # k, v (B, T, H, P): T slots

    def _step(self, x_t: Tensor, state: KVCache, dt: Tensor | None) -> tuple[Tensor, KVCache]:
        y, cache = self._forward(x_t[:, None], state, ForwardCall(self.resolve_mode("auto", x_t[:, None])))
        return y[:, 0], cache

    def _forward(self, x: Tensor, state: KVCache | None, call: ForwardCall) -> tuple[Tensor, KVCache]:
        B, L, D = x.shape
        # The cache holds k, v at least in float32: under autocast the projections give bf16, and
        # a bf16 length would stop counting exactly past 256 tokens.
        sdtype = torch.promote_types(x.dtype, torch.float32)
        cache = self.init_state(B, x.device, sdtype) if state is None else KVCache(*state)
        n0 = cache.length.detach().round().long()  # (B,) tokens already cached per row
        pos = n0[:, None] + torch.arange(L, device=x.device)  # (B, L): position = cache slot
        P, base, R = self.head_dim, self.config.rope_base, self.rotary_dim
        q = rope(self.q_proj(x).view(B, L, self.n_heads, P), pos, base, R)
        k = rope(self.k_proj(x).view(B, L, self.n_kv_heads, P), pos, base, R)
        v = self.v_proj(x).view(B, L, self.n_kv_heads, P)
        # A forward from no state is known to start at 0 without reading n0: no host sync, so
        # torch.compile traces a training forward whole (docs/compile.md).
        fresh = state is None or not bool(n0.any())
        if fresh:  # nothing cached: causal attention over the new tokens
            keys, values, mask = k, v, self._window_mask(pos[:1], L, fresh=True)
        else:
            # Each new token goes to slot pos; query t of row b sees the slots up to its own.
            S = max(cache.k.shape[1], int(pos.max()) + 1)
            idx = pos[..., None, None].expand(k.shape)
            keys = _resize(cache.k, S).scatter(1, idx, k.to(cache.k.dtype))
            values = _resize(cache.v, S).scatter(1, idx, v.to(cache.v.dtype))
            mask = self._window_mask(pos, S, fresh=False)
        o = self._attend(q.transpose(1, 2), self._repeat_kv(keys), self._repeat_kv(values), mask, call.mode)
        y = self.o_proj(o.transpose(1, 2).reshape(B, L, D))
        end = n0 + (L if call.lengths is None else call.lengths)  # (B,) tokens cached after this call
        blk = self.config.kv_block
        longest = L if state is None and call.lengths is None else int(end.max())
        T = -(-longest // blk) * blk
        keep = (torch.arange(T, device=x.device) < end[:, None])[..., None, None].to(cache.k.dtype)
        keys, values = keys.to(cache.k.dtype), values.to(cache.v.dtype)
        return y, KVCache(_resize(keys, T) * keep, _resize(values, T) * keep, end.to(cache.length.dtype))

    # ----------------------------------------------------------------- pieces
    def _window_mask(self, pos: Tensor, S: int, fresh: bool) -> Tensor | None:
        """(B, 1, L, S) bool: query at position pos[b, l] sees slots s <= pos (and s > pos - window).
        None for the plain causal mask of S = L new tokens from position 0 (``fresh``) without a
        window (sdpa's fused path)."""
        window = self.config.window
        if window is None and fresh and S == pos.shape[1]:
            return None
        slots = torch.arange(S, device=pos.device)
        mask = slots <= pos[..., None]
        if window is not None:
            mask = mask & (slots > pos[..., None] - window)
        return mask[:, None]

    def _repeat_kv(self, t: Tensor) -> Tensor:
        """(B, S, H_kv, P) -> (B, H, S, P): query head h reads key-value head h // (H / H_kv)."""
        return t.transpose(1, 2).repeat_interleave(self.n_heads // self.n_kv_heads, dim=1)

    @staticmethod
    def _attend(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, mode: str) -> Tensor:
        """q (B, H, L, P), k, v (B, H, S, P) -> (B, H, L, P); mask None means causal with S = L."""
        if mode == "math":
            return attention_math(q, k, v, mask)
        if mask is None:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)



def _resize(t: Tensor, T: int) -> Tensor:
    """t (B, S, H, P) cut or zero-padded to T slots."""
    return t[:, :T] if t.shape[1] >= T else F.pad(t, (0, 0, 0, 0, 0, T - t.shape[1]))


__all__ = ["Attention", "AttentionConfig", "KVCache", "attention_math", "rope"]
