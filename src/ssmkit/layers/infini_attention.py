"""Infini-attention (Munkhdalai, Faruqui, Gopal 2024, "Leave No Context Behind: Efficient Infinite
Context Transformers with Infini-attention").

The sequence is cut into segments of S tokens (at absolute positions 0, S, 2S, ...). Per head, with
the segment's queries, keys and values Q, K, V (S, P) and σ = elu + 1:

    A_dot = softmax(Q K^T / sqrt(P) + causal within the segment) V          local attention (RoPE)
    A_mem = σ(Q) M_{s-1} / (σ(Q) z_{s-1} + eps)                              retrieval from memory
    A     = sigmoid(β) ⊙ A_mem + (1 - sigmoid(β)) ⊙ A_dot,                   y = W_o [A over heads]

and after the segment the compressive memory M (P, P) and its normalizer z (P,) take the segment in:

    linear: M_s = M_{s-1} + σ(K)^T V
    delta:  M_s = M_{s-1} + σ(K)^T (V - σ(K) M_{s-1} / (σ(K) z_{s-1} + eps))
    both:   z_s = z_{s-1} + sum_t σ(K_t)

β is one learned gate per head (sigmoid(0) = 1/2 at init). ``eps`` guards the division while the
memory is empty (z = 0: the retrieval is 0); RoPE rotates the local attention's q and k only, the
memory stores unrotated σ(K), as the memory sums over positions. Derivation: docs/math/infini_attention.md.

State: ``InfiniState(mem, z, k, v, length)``: M (B, H, P, P), z (B, H, P), the keys and values of the
last S - 1 tokens (B, S - 1, H, P) (the partial segment: its tokens are attended locally and enter
the memory when the segment completes, so a split inside a segment is exact), and the token count.
Constant size: H P (P + 1) + 2 (S - 1) D + 1 floats.

Modes: ``chunked`` (local attention in segment-sized query blocks) and ``reference`` (one dense
block); the memory runs segment by segment in both (block-aligned per row: ``layers._window``).
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import check
from ..core.precision import float32_core
from ._window import (block_view, call_lengths, check_window_field, local_attention, positions, softmax_attend,
                      state_dtype, tail, token_count, unblock)
from .attention import rope, rope_heads
from .base import MixerConfig, SequenceMixer, tag_ssm_param
from .call import ForwardCall
from .registry import register_mixer
from .swa import qkv_projections

RULES = ("linear", "delta")


class InfiniState(NamedTuple):
    mem: Tensor  # (B, H, P, P) compressive memory M
    z: Tensor  # (B, H, P) normalizer z
    k: Tensor  # (B, S - 1, H, P) keys of the last S - 1 tokens (unrotated), right-aligned
    v: Tensor  # (B, S - 1, H, P) their values
    length: Tensor  # (B,) float: tokens seen per row


@dataclasses.dataclass
class InfiniAttentionConfig(MixerConfig):
    segment_len: int = 64  # S: tokens per segment (local attention span, memory update period)
    update: str = "delta"  # memory update rule: "linear" or "delta"
    n_heads: int | None = None  # H; None: max(1, D // 64)
    rope_base: float = 10000.0
    bias: bool = True  # biases on the q, k, v, o projections
    eps: float = 1e-6  # added to the retrieval's denominator

    def __post_init__(self) -> None:
        check_window_field(self.segment_len, "segment_len")
        check(self.update in RULES, "update", f"must be one of {RULES}, got {self.update!r}")
        h = self.n_heads
        check(h is None or h >= 1, "n_heads", f"must be None or an int >= 1, got {h!r}")
        check(self.rope_base > 1.0, "rope_base", f"must be > 1, got {self.rope_base}")
        check(self.eps > 0, "eps", f"must be > 0, got {self.eps}")


def elu1(x: Tensor) -> Tensor:
    """σ(x) = elu(x) + 1 > 0: the memory's feature map (as linear attention's)."""
    return F.elu(x) + 1.0


@register_mixer("infini_attention")
class InfiniAttention(SequenceMixer):
    """Local softmax attention + a compressive linear-attention memory per head, gated."""
    cp_refusal = ("its delta update (the default) divides by the memory's normalizer, a nonlinear map of the "
                  "incoming memory; not implemented for the linear update either")

    Config = InfiniAttentionConfig
    config: InfiniAttentionConfig
    modes = ("chunked", "reference")
    block_fields = ("segment_len",)
    carry_field = "segment_len"

    def __init__(self, d_model: int, mode: str = "auto", **cfg) -> None:
        super().__init__(d_model, mode, **cfg)
        H, P = rope_heads(self.config.n_heads, d_model)
        self.n_heads, self.head_dim = H, P
        qkv_projections(self, d_model, self.config.bias)
        self.beta = tag_ssm_param(nn.Parameter(torch.zeros(H, 1)))  # per-head gate, sigmoid(0) = 1/2

    def _zero_state(self, batch_size, device, dtype) -> InfiniState:
        H, P, T = self.n_heads, self.head_dim, self.config.segment_len - 1
        kv = torch.zeros(batch_size, T, H, P, device=device, dtype=dtype)
        return InfiniState(torch.zeros(batch_size, H, P, P, device=device, dtype=dtype),
                           torch.zeros(batch_size, H, P, device=device, dtype=dtype), kv, kv.clone(),
                           torch.zeros(batch_size, device=device, dtype=dtype))

    @property
    def state_size(self) -> int:
        H, P = self.n_heads, self.head_dim
        return H * P * (P + 1) + 2 * (self.config.segment_len - 1) * self.d_model + 1

    def _step(self, x_t: Tensor, state: InfiniState, dt: Tensor | None) -> tuple[Tensor, InfiniState]:
        y, new = self._forward(x_t[:, None], state, ForwardCall("chunked"))
        return y[:, 0], new

    def _forward(self, x: Tensor, state: InfiniState | None, call: ForwardCall) -> tuple[Tensor, InfiniState]:
        B, L, D = x.shape
        S, T = self.config.segment_len, self.config.segment_len - 1
        H, P = self.n_heads, self.head_dim
        sdtype = state_dtype(x)
        st = self.init_state(B, x.device, sdtype) if state is None else InfiniState(*state)
        n = token_count(st.length)
        heads = (B, L, H, P)
        q, k, v = (p(x).view(heads).to(sdtype) for p in (self.q_proj, self.k_proj, self.v_proj))
        ext_k, ext_v = torch.cat([st.k, k], 1), torch.cat([st.v, v], 1)  # (B, T + L, H, P)
        base = self.config.rope_base
        q_rot = rope(q, n[:, None] + torch.arange(L, device=x.device), base)
        k_rot = rope(ext_k, positions(n, T, L), base)

        def attend(q_blk, kv, q_pos, k_pos):
            seg_start = torch.div(q_pos, S, rounding_mode="floor") * S
            return softmax_attend(q_blk, kv[0], kv[1], (k_pos <= q_pos) & (k_pos >= seg_start))

        block = L if call.mode == "reference" else S
        local = local_attention(q_rot, [k_rot, ext_v], n, T, block, attend)
        real = call_lengths(call.lengths, B, L, x.device)
        retrieved, mem, z = self._memory(q, ext_k, ext_v, st.mem, st.z, n, real)
        g = torch.sigmoid(self.beta)
        y = self.o_proj((g * retrieved + (1 - g) * local).reshape(B, L, D).to(x.dtype))
        end = T + real
        return y, InfiniState(mem, z, tail(ext_k, end, T), tail(ext_v, end, T), (n + real).to(st.length.dtype))

    @float32_core
    def _memory(self, q: Tensor, ext_k: Tensor, ext_v: Tensor, mem: Tensor, z: Tensor, n: Tensor,
                real: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Retrieval for every new query (B, L, H, P) and the memory after every segment completed in
        this call. Segments are read per row from its current segment's start (ext index T - n mod S)."""
        S, T, eps = self.config.segment_len, self.config.segment_len - 1, self.config.eps
        L = q.shape[1]
        phase = n % S
        start = T - phase
        n_blocks = -(-(T + L) // S)
        sk = block_view(elu1(ext_k), start, n_blocks, S)  # (B, nb, S, H, P)
        vb = block_view(ext_v, start, n_blocks, S)
        sq = block_view(torch.cat([ext_k.new_zeros(ext_k.shape[0], T, *q.shape[2:]), elu1(q)], 1),
                        start, n_blocks, S)
        done = phase + real  # tokens of the aligned view that are real, per row
        reads = []
        for j in range(n_blocks):
            reads.append(_retrieve(sq[:, j], mem, z, eps))
            complete = ((j + 1) * S <= done)[:, None, None, None]
            sk_j, v_j = sk[:, j], vb[:, j]
            if self.config.update == "delta":
                v_j = v_j - _retrieve(sk_j, mem, z, eps)
            mem = torch.where(complete, mem + torch.einsum("bshk,bshv->bhkv", sk_j, v_j), mem)
            z = torch.where(complete[..., 0], z + sk_j.sum(1), z)
        return unblock(torch.stack(reads, 1), phase, L), mem, z


def _retrieve(sq: Tensor, mem: Tensor, z: Tensor, eps: float) -> Tensor:
    """σ(q) M / (σ(q) z + eps): sq (B, S, H, P), mem (B, H, P, P), z (B, H, P) -> (B, S, H, P)."""
    num = torch.einsum("bshk,bhkv->bshv", sq, mem)
    return num / (torch.einsum("bshk,bhk->bsh", sq, z)[..., None] + eps)


__all__ = ["InfiniAttention", "InfiniAttentionConfig", "InfiniState", "elu1"]
