"""RetNet multi-scale retention (Sun et al. 2023, "Retentive Network: A Successor to Transformer").

Per head h (H heads, key size K = D / H, value size V = value_factor · D / H), token t:

    q_t = R(t) W_q x_t,   k_t = R(t) W_k x_t,   v_t = W_v x_t          R(t): rotary positions
    S_t = γ_h S_{t-1} + k_t v_tᵀ,   o_t = K^{-1/2} S_tᵀ q_t               γ_h = 1 − 2^{−5−h}
    y_t = W_o (swish(W_g x_t) ⊙ GroupNorm_H([o_t over heads]))

(paper eqs. 1–2 and 8–9; the parallel form is (Q Kᵀ ∘ D) V with D_nm = γ^{n−m}). Positions use
the plain rotary embedding (RoPE, shared with ``attention``) where the paper has xPos (RoPE
with an extra per-position scale). The official code's extra normalizations of the parallel and
recurrent forms (dividing the decay mask and q kᵀ by row sums, rescaling the state) are
per-(head, token) rescalings that GroupNorm removes, so they are left out (only eps sees them).

``norm="rmsnorm"`` replaces the GroupNorm by flash-linear-attention's RetNet norm: an RMSNorm of
each head's V values with one weight shared by the heads, no bias (y_t = W_o (RMSNorm_head(o_t) ⊙
swish(W_g x_t))).

γ_h is stored as ``decay_logit`` = logit(γ_h) so log γ = logsigmoid(decay_logit) < 0 always; the
paper keeps it fixed (``learn_decay=False``: the parameter is frozen but tagged). Padded steps get
log-decay 0 and k = 0. State: (S (B, H, K, V), offset (B,) float, the tokens seen, for positions).
Derivation: docs/math/linear_attention.md.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import check
from ..ops import linear_attention as linear_attention_op
from ..ops.linear_attention import linear_attention, linear_attention_step
from .attention import rope
from .base import MixerConfig, SequenceMixer, resolve_heads, tag_ssm_param
from .call import ForwardCall
from .registry import register_mixer


@dataclasses.dataclass
class RetNetConfig(MixerConfig):
    n_heads: int | None = None  # H; None: max(1, D // 64); head h decays by γ_h = 1 - 2^(-5-h)
    value_factor: int = 2  # V = value_factor * D / H (the paper's d_v = 2 d)
    rope_base: float = 10000.0  # RoPE frequency base
    norm_eps: float = 1e-6  # the norm's epsilon
    norm: str = "groupnorm"  # "groupnorm" (the paper's) | "rmsnorm" (per head, shared weight: fla's)
    learn_decay: bool = False  # the paper's γ are fixed; True trains them
    bias: bool = False  # biases on the q, k, v, g, o projections
    chunk_size: int = 64  # chunk length of the chunked mode (a power of two)
    ssm_lr: float | None = None  # learning rate of the decays when learned (None: the optimizer's)

    def __post_init__(self) -> None:
        h = self.n_heads
        check(h is None or h >= 1, "n_heads", f"must be None or an int >= 1, got {h!r}")
        check(self.value_factor >= 1, "value_factor", f"must be >= 1, got {self.value_factor}")
        check(self.rope_base > 1.0, "rope_base", f"must be > 1, got {self.rope_base}")
        check(self.norm_eps > 0, "norm_eps", f"must be > 0, got {self.norm_eps}")
        check(self.norm in NORMS, "norm", f"must be one of {NORMS}, got {self.norm!r}")
        cs = self.chunk_size
        check(cs >= 1 and cs & (cs - 1) == 0, "chunk_size", f"must be a power of two >= 1, got {cs!r}")
        check(self.ssm_lr is None or self.ssm_lr > 0, "ssm_lr", f"must be None or > 0, got {self.ssm_lr}")


NORMS = ("groupnorm", "rmsnorm")


def retention_decays(n_heads: int) -> Tensor:
    """γ_h = 1 - 2^(-5-h), h = 0 … H-1 (paper, section 2.2), in float64."""
    return 1.0 - 2.0 ** (-5.0 - torch.arange(n_heads, dtype=torch.float64))


def retention_decay_logits(n_heads: int) -> Tensor:
    """logit(γ_h) in float64: the stored form of the decays (``decay_logit``)."""
    gamma = retention_decays(n_heads)
    return torch.log(gamma) - torch.log1p(-gamma)


@register_mixer("retnet")
class RetNet(SequenceMixer):
    """Multi-scale retention: per-head fixed decays, RoPE, GroupNorm, swish gate."""
    cp_state = ("diag", "count")  # context parallelism: S decays per head; the position counter

    Config = RetNetConfig
    config: RetNetConfig
    modes = linear_attention_op.MODES  # triton (CUDA), chunked, parallel, reference
    packed_modes = ("chunked", "parallel", "reference")  # positions and the op restart at a document

    def __init__(self, d_model: int, mode: str = "auto", **cfg) -> None:
        super().__init__(d_model, mode, **cfg)
        c = self.config
        H = resolve_heads(c.n_heads, d_model)
        K = d_model // H
        check(K % 2 == 0, "n_heads", f"key size d_model/n_heads = {K} must be even for RoPE (n_heads={H})")
        V = c.value_factor * K
        self.n_heads, self.key_dim, self.value_dim = H, K, V
        self.q_proj = nn.Linear(d_model, H * K, bias=c.bias)
        self.k_proj = nn.Linear(d_model, H * K, bias=c.bias)
        self.v_proj = nn.Linear(d_model, H * V, bias=c.bias)
        self.g_proj = nn.Linear(d_model, H * V, bias=c.bias)
        self.o_proj = nn.Linear(H * V, d_model, bias=c.bias)
        if c.norm == "groupnorm":
            self.group_norm = nn.GroupNorm(H, H * V, eps=c.norm_eps)
        else:
            self.rms_norm = nn.RMSNorm(V, eps=c.norm_eps)
        for lin in (self.q_proj, self.k_proj, self.v_proj, self.g_proj, self.o_proj):
            nn.init.xavier_uniform_(lin.weight, gain=2**-2.5)  # the official code's init
            if lin.bias is not None:
                nn.init.zeros_(lin.bias)
        self.decay_logit = nn.Parameter(retention_decay_logits(H).to(torch.get_default_dtype()),
                                        requires_grad=c.learn_decay)
        tag_ssm_param(self.decay_logit, lr=c.ssm_lr)

    def log_decay(self) -> Tensor:
        """log γ_h (H,), < 0."""
        return F.logsigmoid(self.decay_logit)

    def _qkv(self, x: Tensor, pos: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x (B, L, D), positions pos (B, L) -> q, k (B, L, H, K) rotated, v (B, L, H, V)."""
        B, L, _ = x.shape
        H, K = self.n_heads, self.key_dim
        q = rope(self.q_proj(x).view(B, L, H, K), pos, self.config.rope_base)
        k = rope(self.k_proj(x).view(B, L, H, K), pos, self.config.rope_base)
        return q, k, self.v_proj(x).view(B, L, H, self.value_dim)

    def _readout(self, o: Tensor, x: Tensor) -> Tensor:
        """o (..., H, V), x (..., D) -> y (..., D).

        GroupNorm with H groups over the H V channels of a token is a LayerNorm over each head's
        V values followed by the per-channel affine map: the same numbers, and torch's GroupNorm
        kernel is slow on (tokens, channels) inputs without spatial extent."""
        if self.config.norm == "rmsnorm":
            normed = self.rms_norm(o).flatten(-2)
        else:
            gn = self.group_norm
            normed = F.layer_norm(o, (self.value_dim,), eps=gn.eps).flatten(-2) * gn.weight + gn.bias
        return self.o_proj(F.silu(self.g_proj(x)) * normed)

    def _forward(self, x: Tensor, state, call: ForwardCall):
        B, L, _ = x.shape
        S0, offset = (None, x.new_zeros(B)) if state is None else state
        # positions continue from the state; in a packed row they restart at each document
        pos = offset.detach().round().long()[:, None] + call.positions(L, x.device)
        q, k, v = self._qkv(x, pos)
        log_decay = self.log_decay().to(x.dtype)
        if call.lengths is None:
            seen = offset + L
        else:  # padded steps: identity (decay 1, no input), so the decay goes per step
            k = call.zero_pads(k)
            log_decay = call.zero_pads(log_decay.expand(B, L, -1))  # (B, L, H)
            seen = offset + call.lengths.to(x.dtype)
        o, S = linear_attention(q, k, v, log_decay, S0, scale=self.key_dim**-0.5, mode=call.mode,
                                chunk_size=self.config.chunk_size, starts=call.starts)
        return self._readout(o, x), (S, seen)

    def _step(self, x_t: Tensor, state, dt: Tensor | None):
        S, offset = state
        pos = offset.detach().round().long()[:, None]
        q, k, v = (t[:, 0] for t in self._qkv(x_t[:, None], pos))  # (B, H, K|V)
        o, S = linear_attention_step(q, k, v, self.log_decay().to(x_t.dtype), S, scale=self.key_dim**-0.5)
        return self._readout(o, x_t), (S, offset + 1)

    def _zero_state(self, batch_size, device, dtype):
        S = torch.zeros(batch_size, self.n_heads, self.key_dim, self.value_dim, device=device, dtype=dtype)
        return (S, torch.zeros(batch_size, device=device, dtype=dtype))

    @property
    def state_size(self) -> int:
        return self.n_heads * self.key_dim * self.value_dim + 1
