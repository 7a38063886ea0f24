"""Linear Transformer (Katharopoulos et al. 2020, "Transformers are RNNs").

Per head h (H heads of size K = V = D / H), with the feature map φ(x) = elu(x) + 1 > 0:

    q_t = φ(W_q x_t),  k_t = φ(W_k x_t),  v_t = W_v x_t
    S_t = S_{t-1} + k_t v_tᵀ,   z_t = z_{t-1} + k_t                  S: (K, V), z: (K,)
    o_t = S_tᵀ q_t / (z_tᵀ q_t + eps),   y_t = W_o [o_t over heads]

The normalizer z_t = Σ_{s≤t} φ(k_s) (the paper's denominator, eq. 6 / 18–20) rides along as an
extra value column of ones: with v'_t = [v_t, 1] the state S'_t = [S_t, z_t] (K, V+1) comes out
of one ``ops.linear_attention`` call (no decay), and the last output column is the denominator.
``eps`` (1e-6 as in the authors' code) only guards the division; φ > 0 keeps z_tᵀ q_t > 0 once a
token has been seen. Padded steps get k = 0: S' is unchanged. State: (S',) (B, H, K, V+1).
Derivation: docs/math/linear_attention.md.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from ..core.activations import elu_plus_one
from ..config import check
from ..ops import linear_attention as linear_attention_op
from ..ops.linear_attention import linear_attention, linear_attention_step
from .base import MixerConfig, SequenceMixer, resolve_heads, tag_ssm_param
from .call import ForwardCall
from .registry import register_mixer


@dataclasses.dataclass
class LinearAttentionConfig(MixerConfig):
    n_heads: int | None = None  # H; None: max(1, D // 64), head size 64
    eps: float = 1e-6  # added to the denominator z_tᵀ q_t
    bias: bool = True  # biases on the q, k, v, o projections
    chunk_size: int = 64  # chunk length of the chunked mode (a power of two)

    def __post_init__(self) -> None:
        h = self.n_heads
        check(h is None or h >= 1, "n_heads", f"must be None or an int >= 1, got {h!r}")
        check(self.eps > 0, "eps", f"must be > 0, got {self.eps}")
        cs = self.chunk_size
        check(cs >= 1 and cs & (cs - 1) == 0, "chunk_size", f"must be a power of two >= 1, got {cs!r}")


def elu_feature_map(x: Tensor) -> Tensor:
    """φ(x) = elu(x) + 1, positive everywhere (the paper's choice)."""
    return elu_plus_one(x)


@register_mixer("linear_attention")
class LinearAttention(SequenceMixer):
    """Causal linear attention with the elu+1 feature map and its normalizer, multi-head."""
    cp_state = ("diag",)  # context parallelism: S and its normalizer add up (docs/distributed.md)

    Config = LinearAttentionConfig
    config: LinearAttentionConfig
    modes = linear_attention_op.MODES  # triton (CUDA), chunked, parallel, reference
    packed_modes = ("chunked", "parallel", "reference")  # the op resets at a document start

    def __init__(self, d_model: int, mode: str = "auto", **cfg) -> None:
        super().__init__(d_model, mode, **cfg)
        c = self.config
        H = resolve_heads(c.n_heads, d_model)
        self.n_heads, self.head_dim = H, d_model // H
        self.q_proj = nn.Linear(d_model, d_model, bias=c.bias)
        self.k_proj = nn.Linear(d_model, d_model, bias=c.bias)
        self.v_proj = nn.Linear(d_model, d_model, bias=c.bias)
        self.o_proj = nn.Linear(d_model, d_model, bias=c.bias)
        # No decay to tag: the projections that write (k, like an SSM's B) and read (q, like C)
        # the state take the no-weight-decay group, at the model's learning rate.
        for lin in (self.q_proj, self.k_proj):
            tag_ssm_param(lin.weight, lr=None)

    def _qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x (..., D) -> q, k (..., H, K) feature-mapped, v' (..., H, V+1) with the ones column."""
        heads = (*x.shape[:-1], self.n_heads, self.head_dim)
        q = elu_feature_map(self.q_proj(x).reshape(heads))
        k = elu_feature_map(self.k_proj(x).reshape(heads))
        v = self.v_proj(x).reshape(heads)
        return q, k, torch.cat([v, torch.ones_like(v[..., :1])], dim=-1)

    def _readout(self, o: Tensor) -> Tensor:
        """o (..., H, V+1) = [numerator, denominator] -> y (..., D)."""
        o = o[..., :-1] / (o[..., -1:] + self.config.eps)
        return self.o_proj(o.flatten(-2))

    def _forward(self, x: Tensor, state, call: ForwardCall):
        q, k, v = self._qkv(x)
        S0 = None if state is None else state[0]
        # padded steps: k = 0, no input (there is no decay)
        o, S = linear_attention(q, call.zero_pads(k), v, None, S0, mode=call.mode, chunk_size=self.config.chunk_size,
                                starts=call.starts)
        return self._readout(o), (S,)

    def _step(self, x_t: Tensor, state, dt: Tensor | None):
        q, k, v = self._qkv(x_t)  # (B, H, K), (B, H, K), (B, H, V+1)
        o, S = linear_attention_step(q, k, v, None, state[0])
        return self._readout(o), (S,)

    def _zero_state(self, batch_size, device, dtype):
        H, P = self.n_heads, self.head_dim
        return (torch.zeros(batch_size, H, P, P + 1, device=device, dtype=dtype),)

    @property
    def state_size(self) -> int:
        return self.n_heads * self.head_dim * (self.head_dim + 1)
