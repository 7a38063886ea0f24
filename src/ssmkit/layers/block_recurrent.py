"""Block-Recurrent Transformer layer (Hutchins, Schlag, Wu, Dyer, Neyshabur 2022, "Block-Recurrent
Transformers").

The sequence is cut into blocks of W tokens (at absolute positions 0, W, 2W, ...); a set of N state
vectors c (N, D) carries across blocks. With the tokens' keys and values K_x, V_x and the state's
keys and values K_c, V_c = W_k^c (LN(c) + e), W_v^c (LN(c) + e) (e: learned state ids), shared by
both directions as in the paper:

    vertical (tokens of block b, state c_{b-1} from before the block):
        self  = sliding-window attention of q_t (RoPE) over its block and the previous one (causal)
        cross = softmax(q_t K_c^T / sqrt(P)) V_c                     every state vector
        y_t   = W_o [self, cross]                                   (the stack adds residual + MLP)
    horizontal (after block b, every state vector i at once):
        h     = W_o^c [softmax(Q_c K_c^T) V_c, softmax(Q_c K_x^T) V_x]     (the block's W tokens)
        c'    = gate_1(c_{b-1}, h),   c_b = gate_2(c', MLP(LN(c')))

with the paper's gates (residual connections of the recurrent direction replaced by gates):

    fixed: c_new = c ⊙ g + (W_z h + b_z) ⊙ (1 - g),  g = sigmoid(b_g) learned, input-independent
    lstm:  i = σ(W_i h + b_i - 1),  f = σ(W_f h + b_f + 1),  z = tanh(W_z h + b_z),  c_new = c ⊙ f + z ⊙ i

Before the first block completes a row reads the learned initial state c_0. Derivation:
docs/math/block_recurrent.md.

State: ``BlockRecurrentState(c, k, v, length)``: c (B, N, D) after the last completed block, the
tokens' keys and values of the last 2W - 1 tokens (B, 2W - 1, H, P), unrotated (the previous block
and the partial current one: the window of the last token of a block, and the tokens the state
reads when the block completes, so a split inside a block is exact), and the token count.
Constant size: N D + 2 (2W - 1) D + 1 floats.

Modes: ``chunked`` (block-sized query blocks for the sliding window) and ``reference`` (one dense
block); the state runs block by block in both (block-aligned per row: ``layers._window``).
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple

import torch
from torch import Tensor, nn

from ..config import check
from ..core.precision import float32_core
from ._window import (block_view, call_lengths, check_window_field, local_attention, positions, softmax_attend,
                      state_dtype, tail, token_count, unblock)
from .attention import rope, rope_heads
from .base import MixerConfig, SequenceMixer, tag_ssm_param
from .call import ForwardCall
from .registry import register_mixer

GATES = ("fixed", "lstm")


class BlockRecurrentState(NamedTuple):
    c: Tensor  # (B, N, D) recurrent state vectors after the last completed block
    k: Tensor  # (B, 2W - 1, H, P) keys of the last 2W - 1 tokens (unrotated), right-aligned
    v: Tensor  # (B, 2W - 1, H, P) their values
    length: Tensor  # (B,) float: tokens seen per row


@dataclasses.dataclass
class BlockRecurrentConfig(MixerConfig):
    block_len: int = 64  # W: tokens per block (the sliding window spans this block and the previous)
    n_state: int = 32  # N: recurrent state vectors
    gate: str = "fixed"  # the recurrent direction's gates: "fixed" or "lstm"
    n_heads: int | None = None  # H; None: max(1, D // 64)
    rope_base: float = 10000.0
    ffn_mult: int = 2  # hidden width multiple of the state's MLP
    bias: bool = True  # biases on the projections

    def __post_init__(self) -> None:
        check_window_field(self.block_len, "block_len")
        check_window_field(self.n_state, "n_state")
        check(self.gate in GATES, "gate", f"must be one of {GATES}, got {self.gate!r}")
        h = self.n_heads
        check(h is None or h >= 1, "n_heads", f"must be None or an int >= 1, got {h!r}")
        check(self.rope_base > 1.0, "rope_base", f"must be > 1, got {self.rope_base}")
        check(self.ffn_mult >= 1, "ffn_mult", f"must be an int >= 1, got {self.ffn_mult!r}")


class Gate(nn.Module):
    """c_new from c (B, N, D) and the update h (B, N, D): the paper's fixed or LSTM-style gate."""

    def __init__(self, d_model: int, kind: str) -> None:
        super().__init__()
        self.kind = kind
        if kind == "fixed":
            self.z = nn.Linear(d_model, d_model)
            # sigmoid(1) = 0.73 of the old state kept at init, like the LSTM gate's forget bias +1
            self.keep = tag_ssm_param(nn.Parameter(torch.ones(d_model)))
        else:
            self.izf = nn.Linear(d_model, 3 * d_model)

    def forward(self, c: Tensor, h: Tensor) -> Tensor:
        if self.kind == "fixed":
            g = torch.sigmoid(self.keep)
            return c * g + self.z(h) * (1 - g)
        i, z, f = self.izf(h).chunk(3, dim=-1)
        return c * torch.sigmoid(f + 1.0) + torch.tanh(z) * torch.sigmoid(i - 1.0)


@register_mixer("block_recurrent")
class BlockRecurrent(SequenceMixer):
    """Sliding-window attention + cross-attention to N recurrent state vectors updated once per block."""
    cp_refusal = ("its recurrent state is rewritten between blocks by attention and gates: a nonlinear map of "
                  "the incoming state")

    Config = BlockRecurrentConfig
    config: BlockRecurrentConfig
    modes = ("chunked", "reference")
    block_fields = ("block_len",)
    carry_field = "block_len"

    def __init__(self, d_model: int, mode: str = "auto", **cfg) -> None:
        super().__init__(d_model, mode, **cfg)
        c = self.config
        H, P = rope_heads(c.n_heads, d_model)
        self.n_heads, self.head_dim = H, P
        D, N = d_model, c.n_state
        lin = lambda i, o, bias=c.bias: nn.Linear(i, o, bias=bias)  # noqa: E731
        # tokens: queries (vertical), keys and values (vertical self, horizontal cross), output of [self, cross]
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = lin(D, D), lin(D, D), lin(D, D), lin(2 * D, D)
        # state: queries (horizontal), keys and values (horizontal self, vertical cross: no rotation, so
        # no key bias, which the softmax would cancel), output of [self, cross]
        self.sq_proj, self.sk_proj, self.sv_proj, self.so_proj = lin(D, D), lin(D, D, False), lin(D, D), lin(2 * D, D)
        self.state_ids = nn.Parameter(torch.randn(N, D) * 0.02)
        self.c0 = nn.Parameter(torch.randn(N, D) * 0.02)
        self.state_norm, self.mlp_norm = nn.LayerNorm(D), nn.LayerNorm(D)
        self.mlp = nn.Sequential(lin(D, c.ffn_mult * D), nn.GELU(), lin(c.ffn_mult * D, D))
        self.gate1, self.gate2 = Gate(D, c.gate), Gate(D, c.gate)
        for p in (self.c0, self.state_ids):
            tag_ssm_param(p)

    @property
    def history(self) -> int:
        """T = 2W - 1 tokens: the window of a block's last token, and the partial block."""
        return 2 * self.config.block_len - 1

    def _zero_state(self, batch_size, device, dtype) -> BlockRecurrentState:
        kv = torch.zeros(batch_size, self.history, self.n_heads, self.head_dim, device=device, dtype=dtype)
        return BlockRecurrentState(torch.zeros(batch_size, self.config.n_state, self.d_model, device=device, dtype=dtype),
                                   kv, kv.clone(), torch.zeros(batch_size, device=device, dtype=dtype))

    @property
    def state_size(self) -> int:
        return self.config.n_state * self.d_model + 2 * self.history * self.d_model + 1

    def _step(self, x_t: Tensor, state: BlockRecurrentState, dt: Tensor | None) -> tuple[Tensor, BlockRecurrentState]:
        y, new = self._forward(x_t[:, None], state, ForwardCall("chunked"))
        return y[:, 0], new

    def _forward(self, x: Tensor, state: BlockRecurrentState | None,
                 call: ForwardCall) -> tuple[Tensor, BlockRecurrentState]:
        B, L, D = x.shape
        W, T = self.config.block_len, self.history
        heads = (B, L, self.n_heads, self.head_dim)
        sdtype = state_dtype(x)
        st = self.init_state(B, x.device, sdtype) if state is None else BlockRecurrentState(*state)
        n = token_count(st.length)
        q, k, v = (p(x).view(heads).to(sdtype) for p in (self.q_proj, self.k_proj, self.v_proj))
        ext_k, ext_v = torch.cat([st.k, k], 1), torch.cat([st.v, v], 1)  # (B, T + L, H, P)
        base = self.config.rope_base
        q_rot = rope(q, n[:, None] + torch.arange(L, device=x.device), base)

        def attend(q_blk, kv, q_pos, k_pos):
            block_start = torch.div(q_pos, W, rounding_mode="floor") * W
            return softmax_attend(q_blk, kv[0], kv[1], (k_pos <= q_pos) & (k_pos >= block_start - W) & (k_pos >= 0))

        block = L if call.mode == "reference" else W
        local = local_attention(q_rot, [rope(ext_k, positions(n, T, L), base), ext_v], n, T, block, attend)
        real = call_lengths(call.lengths, B, L, x.device)
        cross, c = self._recurrence(q, ext_k, ext_v, st.c, n, real)
        y = self.o_proj(torch.cat([local, cross], -1).reshape(B, L, 2 * D).to(x.dtype))
        end = T + real
        return y, BlockRecurrentState(c, tail(ext_k, end, T), tail(ext_v, end, T), (n + real).to(st.length.dtype))

    def _state_kv(self, c: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """c (B, N, D) -> the state's queries, keys, values (B, N, H, P)."""
        s = self.state_norm(c) + self.state_ids
        shape = (*c.shape[:2], self.n_heads, self.head_dim)
        return self.sq_proj(s).view(shape), self.sk_proj(s).view(shape), self.sv_proj(s).view(shape)

    @float32_core
    def _recurrence(self, q: Tensor, ext_k: Tensor, ext_v: Tensor, c: Tensor, n: Tensor,
                    real: Tensor) -> tuple[Tensor, Tensor]:
        """The vertical cross-attention of every new token (B, L, H, P) to the state before its block,
        and the state after every block completed in this call (read per row from its current
        block's start, ext index T - n mod W)."""
        W, T, L = self.config.block_len, self.history, q.shape[1]
        phase = n % W
        start = T - phase
        n_blocks = -(-(L + W - 1) // W)
        kb, vb = block_view(ext_k, start, n_blocks, W), block_view(ext_v, start, n_blocks, W)  # (B, nb, W, H, P)
        qb = block_view(torch.cat([q.new_zeros(q.shape[0], T, *q.shape[2:]), q], 1), start, n_blocks, W)
        c = torch.where((n < W)[:, None, None], self.c0, c)  # no block completed yet: the learned c_0
        done = phase + real
        reads = []
        for j in range(n_blocks):
            sq, sk, sv = self._state_kv(c)
            reads.append(softmax_attend(qb[:, j], sk, sv, None))
            h = self.so_proj(torch.cat([softmax_attend(sq, sk, sv, None),
                                        softmax_attend(sq, kb[:, j], vb[:, j], None)], -1).flatten(-2))
            c1 = self.gate1(c, h)
            new = self.gate2(c1, self.mlp(self.mlp_norm(c1)))
            c = torch.where(((j + 1) * W <= done)[:, None, None], new, c)
        return unblock(torch.stack(reads, 1), phase, L), c


__all__ = ["BlockRecurrent", "BlockRecurrentConfig", "BlockRecurrentState", "Gate"]
