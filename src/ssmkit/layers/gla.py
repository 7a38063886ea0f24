"""Gated Linear Attention (Yang et al. 2024, "Gated Linear Attention Transformers with
Hardware-Efficient Training").

Per head h (H heads, key size K = expand_k · D / H, value size V = expand_v · D / H):

    q_t = W_q x_t,   k_t = W_k x_t,   v_t = W_v x_t
    α_t = sigmoid(W_α2 W_α1 x_t + b_α)^{1/τ}    (low-rank r, τ = 16: log α_t = logsigmoid(·) / τ)
    S_t = diag(α_t) S_{t-1} + k_t v_tᵀ,   o_t = K^{-1/2} S_tᵀ q_t             S: (K, V), α_t ∈ (0, 1)^K
    y_t = W_o (RMSNorm_head(o_t) ⊙ swish(W_r x_t + b_r))

(paper section 4.4, eqs. for the GLA layer; defaults as the paper: expand_k 0.5, expand_v 1,
4 heads, r = 16, τ = 16). The per-head norm is RMSNorm with one weight shared by the heads, as in
the authors' flash-linear-attention layer (the paper writes LayerNorm). That layer's output gate
has no bias b_r (``gate_bias=False``) and can be left out (``output_gate=False``: y_t = W_o
RMSNorm_head(o_t)). The decay gate (W_α1, W_α2, b_α) is tagged. Padded steps get log α = 0 and
k = 0. State: (S,) (B, H, K, V). Derivation: docs/math/linear_attention.md.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import check
from ..ops import linear_attention as linear_attention_op
from ..ops.linear_attention import linear_attention, linear_attention_step
from .base import MixerConfig, SequenceMixer, tag_ssm_param
from .call import ForwardCall
from .registry import register_mixer


@dataclasses.dataclass
class GLAConfig(MixerConfig):
    n_heads: int = 4  # H (the paper's 4); must divide the key and value widths
    expand_k: float = 0.5  # H K = expand_k * D
    expand_v: float = 1.0  # H V = expand_v * D
    gate_low_rank: int = 16  # r of W_α1 (D -> r), W_α2 (r -> H K)
    gate_temperature: float = 16.0  # τ: log α = logsigmoid(logits) / τ, decays close to 1
    norm_eps: float = 1e-5
    chunk_size: int = 64  # chunk length of the chunked mode (a power of two)
    ssm_lr: float | None = None  # learning rate of the decay gate (None: the optimizer's)
    output_gate: bool = True  # y = W_o (RMSNorm(o) ⊙ swish(W_r x + b_r)); False: y = W_o RMSNorm(o)
    gate_bias: bool = True  # the paper's b_r (flash-linear-attention's layer has none)

    def __post_init__(self) -> None:
        check(self.n_heads >= 1, "n_heads", f"must be >= 1, got {self.n_heads}")
        check(self.expand_k > 0, "expand_k", f"must be > 0, got {self.expand_k}")
        check(self.expand_v > 0, "expand_v", f"must be > 0, got {self.expand_v}")
        check(self.gate_low_rank >= 1, "gate_low_rank", f"must be >= 1, got {self.gate_low_rank}")
        check(self.gate_temperature > 0, "gate_temperature", f"must be > 0, got {self.gate_temperature}")
        check(self.norm_eps > 0, "norm_eps", f"must be > 0, got {self.norm_eps}")
        cs = self.chunk_size
        check(cs >= 1 and cs & (cs - 1) == 0, "chunk_size", f"must be a power of two >= 1, got {cs!r}")
        check(self.ssm_lr is None or self.ssm_lr > 0, "ssm_lr", f"must be None or > 0, got {self.ssm_lr}")


@register_mixer("gla")
class GLA(SequenceMixer):
    """Gated linear attention: data-dependent decay per key channel, swish output gate."""
    cp_state = ("diag",)  # context parallelism: S decays along K (docs/distributed.md)

    Config = GLAConfig
    config: GLAConfig
    modes = linear_attention_op.MODES  # triton (CUDA), chunked, parallel, reference
    packed_modes = ("chunked", "parallel", "reference")  # the op resets at a document start

    def __init__(self, d_model: int, mode: str = "auto", **cfg) -> None:
        super().__init__(d_model, mode, **cfg)
        c = self.config
        key_width, value_width = int(d_model * c.expand_k), int(d_model * c.expand_v)
        H = c.n_heads
        for name, width in (("expand_k", key_width), ("expand_v", value_width)):
            check(width >= H and width % H == 0, "n_heads",
                  f"must divide int({name} * d_model) = {width}, got {H}")
        self.n_heads, self.key_dim, self.value_dim = H, key_width // H, value_width // H
        self.q_proj = nn.Linear(d_model, key_width, bias=False)
        self.k_proj = nn.Linear(d_model, key_width, bias=False)
        self.v_proj = nn.Linear(d_model, value_width, bias=False)
        self.gate_down = nn.Linear(d_model, c.gate_low_rank, bias=False)  # W_α1
        self.gate_up = nn.Linear(c.gate_low_rank, key_width, bias=True)  # W_α2, b_α
        self.r_proj = nn.Linear(d_model, value_width, bias=c.gate_bias) if c.output_gate else None  # W_r, b_r
        self.norm = nn.RMSNorm(self.value_dim, eps=c.norm_eps)
        self.o_proj = nn.Linear(value_width, d_model, bias=False)
        linears = (self.q_proj, self.k_proj, self.v_proj, self.gate_down, self.gate_up, self.r_proj, self.o_proj)
        for lin in (lin for lin in linears if lin is not None):
            nn.init.xavier_uniform_(lin.weight, gain=2**-2.5)  # the authors' init
            if lin.bias is not None:
                nn.init.zeros_(lin.bias)
        for p in (self.gate_down.weight, self.gate_up.weight, self.gate_up.bias):
            tag_ssm_param(p, lr=c.ssm_lr)

    def _inputs(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """x (..., D) -> q, k (..., H, K), v (..., H, V), log α (..., H, K)."""
        H = self.n_heads
        q = self.q_proj(x).unflatten(-1, (H, self.key_dim))
        k = self.k_proj(x).unflatten(-1, (H, self.key_dim))
        v = self.v_proj(x).unflatten(-1, (H, self.value_dim))
        logits = self.gate_up(self.gate_down(x)).unflatten(-1, (H, self.key_dim))
        return q, k, v, F.logsigmoid(logits) / self.config.gate_temperature

    def _readout(self, o: Tensor, x: Tensor) -> Tensor:
        """o (..., H, V), x (..., D) -> y (..., D)."""
        o = self.norm(o).flatten(-2)
        return self.o_proj(o if self.r_proj is None else o * F.silu(self.r_proj(x)))

    def _forward(self, x: Tensor, state, call: ForwardCall):
        q, k, v, log_decay = self._inputs(x)
        S0 = None if state is None else state[0]
        # padded steps: no input, decay 1
        o, S = linear_attention(q, call.zero_pads(k), v, call.zero_pads(log_decay), S0, scale=self.key_dim**-0.5,
                                mode=call.mode, chunk_size=self.config.chunk_size, starts=call.starts)
        return self._readout(o, x), (S,)

    def _step(self, x_t: Tensor, state, dt: Tensor | None):
        o, S = linear_attention_step(*self._inputs(x_t), state[0], scale=self.key_dim**-0.5)
        return self._readout(o, x_t), (S,)

    def _zero_state(self, batch_size, device, dtype):
        return (torch.zeros(batch_size, self.n_heads, self.key_dim, self.value_dim, device=device, dtype=dtype),)

    @property
    def state_size(self) -> int:
        return self.n_heads * self.key_dim * self.value_dim
