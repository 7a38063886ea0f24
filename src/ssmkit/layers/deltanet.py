"""DeltaNet (Schlag et al. 2021, "Linear Transformers Are Secretly Fast Weight Programmers";
Yang et al. 2024, "Parallelizing Linear Transformers with the Delta Rule over Sequence Length")
and Gated DeltaNet (Yang et al. 2025, "Gated Delta Networks: Improving Mamba2 with Delta Rule").

Per head h (H heads, key size K = expand_k·D/H, value size V = expand_v·D/H):

    q, k, v  = silu(short_conv(W_q x)), silu(short_conv(W_k x)), silu(short_conv(W_v x))
    q, k     = q / ‖q‖, k / ‖k‖                          (per head, L2)
    β_t      = sigmoid(W_β x_t)                          (B, L, H), the write strength
    α_t      = exp(-exp(A_log) softplus(W_a x_t + dt_bias))    gated only; 1 otherwise
    S_t      = α_t S_{t-1} (I - β_t k_t k_tᵀ) + β_t v_t k_tᵀ,   o_t = S_t q_t / √K    S: (V, K)
    y        = W_o (RMSNorm_head(o) ⊙ silu(W_g x))       (without ``output_gate``: RMSNorm_head(o))

as in the authors' flash-linear-attention layers (DeltaNet / GatedDeltaNet: separate q/k/v short
convolutions with SiLU, L2-normalized q and k, one RMSNorm weight shared by the heads, the gated
norm RMSNorm(o)·silu(g)). Parameter names follow those layers. The state is (q_conv, k_conv,
v_conv (B, d_conv-1, H·K | H·K | H·V), S (B, H, K, V)); S is stored transposed, as in fla.
Padded steps get β = 0 (and log α = 0): identities on S. Derivation: docs/math/deltanet.md.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import check
from ..core.init import softplus_dt_bias
from ..ops import delta_rule as delta_rule_op
from ..ops.delta_rule import delta_rule, delta_rule_step
from ..ops.short_conv import conv_state_at, short_conv, short_conv_step
from .base import MixerConfig, SequenceMixer, tag_ssm_param
from .call import ForwardCall
from .registry import register_mixer


@dataclasses.dataclass
class DeltaNetConfig(MixerConfig):
    num_heads: int | None = None  # H; None: one head per 64 key channels (at least one)
    expand_k: float = 1.0  # H K = int(expand_k * D)
    expand_v: float = 1.0  # H V = int(expand_v * D)
    gated: bool = False  # Gated DeltaNet: a data-dependent scalar decay α_t per head and step
    d_conv: int = 4  # kernel of the short causal convolutions on q, k, v
    conv_bias: bool = False
    output_gate: bool = True  # RMSNorm(o) ⊙ silu(W_g x) instead of RMSNorm(o)
    norm_eps: float = 1e-5
    chunk_size: int = 64  # chunk length of the chunked mode
    A_init_range: tuple[float, float] = (0.0, 16.0)  # gated: exp(A_log) ~ U(A_init_range), as fla
    dt_min: float = 1e-3  # gated: softplus(dt_bias) ~ logU(dt_min, dt_max) at init, as Mamba-2
    dt_max: float = 0.1
    dt_init_floor: float = 1e-4
    ssm_lr: float | None = None  # lr of the tagged β / decay parameters (None: the optimizer's)

    def __post_init__(self) -> None:
        check(self.num_heads is None or self.num_heads >= 1, "num_heads",
              f"must be None or >= 1, got {self.num_heads}")
        check(self.expand_k > 0, "expand_k", f"must be > 0, got {self.expand_k}")
        check(self.expand_v > 0, "expand_v", f"must be > 0, got {self.expand_v}")
        check(self.d_conv >= 1, "d_conv", f"must be >= 1, got {self.d_conv}")
        check(self.norm_eps > 0, "norm_eps", f"must be > 0, got {self.norm_eps}")
        check(self.chunk_size >= 1, "chunk_size", f"must be >= 1, got {self.chunk_size}")
        check(0 <= self.A_init_range[0] < self.A_init_range[1], "A_init_range",
              f"need 0 <= low < high, got {self.A_init_range}")
        check(0 < self.dt_min <= self.dt_max, "dt_min",
              f"need 0 < dt_min <= dt_max, got {self.dt_min}, {self.dt_max}")
        check(self.ssm_lr is None or self.ssm_lr > 0, "ssm_lr", f"must be None or > 0, got {self.ssm_lr}")


def l2_normalize(x: Tensor, eps: float = 1e-6) -> Tensor:
    """x / sqrt(‖x‖² + eps) over the last dim (fla's l2norm: smooth at 0, unlike a max(‖x‖, eps))."""
    return x * torch.rsqrt(x.pow(2).sum(-1, keepdim=True) + eps)


@register_mixer("deltanet")
class DeltaNet(SequenceMixer):
    """DeltaNet / Gated DeltaNet mixer. Modes: ``chunked`` (WY / UT transform), ``reference`` (loop)."""
    cp_state = ("halo", "halo", "halo", "matrix")  # conv windows; S <- (I - b k k^T) S + b k v^T

    Config = DeltaNetConfig
    config: DeltaNetConfig
    modes = delta_rule_op.MODES  # chunked, reference
    packed_modes = ("chunked", "reference")  # the conv windows and the op reset at a document start

    def __init__(self, d_model: int, mode: str = "auto", **cfg) -> None:
        super().__init__(d_model, mode, **cfg)
        c = self.config
        key_width, value_width = int(c.expand_k * d_model), int(c.expand_v * d_model)
        check(key_width >= 1 and value_width >= 1, "expand_k",
              f"key and value widths must be >= 1, got {key_width} and {value_width}")
        H = c.num_heads if c.num_heads is not None else max(1, key_width // 64)
        for name, width in (("expand_k", key_width), ("expand_v", value_width)):
            check(width % H == 0, "num_heads", f"must divide int({name} * d_model) = {width}, got {H}")
        self.n_heads, self.head_k, self.head_v = H, key_width // H, value_width // H
        self.key_width, self.value_width = key_width, value_width
        self.q_proj = nn.Linear(d_model, key_width, bias=False)
        self.k_proj = nn.Linear(d_model, key_width, bias=False)
        self.v_proj = nn.Linear(d_model, value_width, bias=False)
        self.b_proj = nn.Linear(d_model, H, bias=False)  # β logits
        for name, width in (("q_conv1d", key_width), ("k_conv1d", key_width), ("v_conv1d", value_width)):
            setattr(self, name, nn.Conv1d(width, width, c.d_conv, groups=width, bias=c.conv_bias,
                                          padding=c.d_conv - 1))
        tag_ssm_param(self.b_proj.weight, lr=c.ssm_lr)
        if c.gated:
            self.a_proj = nn.Linear(d_model, H, bias=False)  # decay logits
            A = torch.empty(H).uniform_(*c.A_init_range).clamp_(min=1e-4)  # A = 0 would give log 0
            self.A_log = nn.Parameter(torch.log(A))
            self.dt_bias = nn.Parameter(softplus_dt_bias(H, c.dt_min, c.dt_max, c.dt_init_floor))
            for p in (self.A_log, self.dt_bias, self.a_proj.weight):
                tag_ssm_param(p, lr=c.ssm_lr)
        if c.output_gate:
            self.g_proj = nn.Linear(d_model, value_width, bias=False)
        self.o_norm = nn.RMSNorm(self.head_v, eps=c.norm_eps)  # one weight shared by the heads
        self.o_proj = nn.Linear(value_width, d_model, bias=False)

    # ----------------------------------------------------------------- pieces shared by forward/step
    def _conv_weights(self) -> list[tuple[Tensor, Tensor | None]]:
        return [(m.weight[:, 0, :], m.bias) for m in (self.q_conv1d, self.k_conv1d, self.v_conv1d)]

    def _heads(self, q: Tensor, k: Tensor, v: Tensor, x: Tensor) -> tuple[Tensor, ...]:
        """Activated conv outputs (..., H·K|H·V) and x -> per-head q, k, v, β, log α (or None)."""
        H = self.n_heads
        q = l2_normalize(F.silu(q).unflatten(-1, (H, self.head_k)))
        k = l2_normalize(F.silu(k).unflatten(-1, (H, self.head_k)))
        v = F.silu(v).unflatten(-1, (H, self.head_v))
        beta = torch.sigmoid(self.b_proj(x))
        log_alpha = None
        if self.config.gated:
            log_alpha = -torch.exp(self.A_log) * F.softplus(self.a_proj(x) + self.dt_bias)
        return q, k, v, beta, log_alpha

    def _output(self, o: Tensor, x: Tensor) -> Tensor:
        """o (..., H, V), x (..., D) -> (..., D)."""
        o = self.o_norm(o)
        if self.config.output_gate:
            o = o * F.silu(self.g_proj(x)).unflatten(-1, (self.n_heads, self.head_v))
        return self.o_proj(o.flatten(-2))

    # ----------------------------------------------------------------- SequenceMixer
    def _forward(self, x: Tensor, state, call: ForwardCall):
        conv_states, S = ([None] * 3, None) if state is None else (list(state[:3]), state[3])
        raw = [self.q_proj(x), self.k_proj(x), self.v_proj(x)]
        outs, finals = [], []
        for xi, (w, b), cs in zip(raw, self._conv_weights(), conv_states):
            y, final = short_conv(xi, w, b, cs, starts=call.starts)
            outs.append(y)
            finals.append(final if call.lengths is None else conv_state_at(xi, cs, call.lengths, self.config.d_conv))
        q, k, v, beta, log_alpha = self._heads(*outs, x)
        # β = 0, log α = 0: padded steps leave S unchanged
        log_alpha = None if log_alpha is None else call.zero_pads(log_alpha)
        o, S = delta_rule(q, k, v, call.zero_pads(beta), log_alpha, S, scale=self.head_k**-0.5, mode=call.mode,
                          chunk_size=self.config.chunk_size, starts=call.starts)
        return self._output(o, x), (*finals, S)

    def _step(self, x_t: Tensor, state, dt: Tensor | None):
        outs, new_conv = [], []
        for xi, (w, b), cs in zip((self.q_proj(x_t), self.k_proj(x_t), self.v_proj(x_t)),
                                  self._conv_weights(), state[:3]):
            y, cs = short_conv_step(xi, w, b, cs)
            outs.append(y)
            new_conv.append(cs)
        o, S = delta_rule_step(*self._heads(*outs, x_t), state[3], scale=self.head_k**-0.5)
        return self._output(o, x_t), (*new_conv, S)

    def _zero_state(self, batch_size, device, dtype):
        K1 = self.config.d_conv - 1
        return (
            torch.zeros(batch_size, K1, self.key_width, device=device, dtype=dtype),
            torch.zeros(batch_size, K1, self.key_width, device=device, dtype=dtype),
            torch.zeros(batch_size, K1, self.value_width, device=device, dtype=dtype),
            torch.zeros(batch_size, self.n_heads, self.head_k, self.head_v, device=device, dtype=dtype),
        )

    @property
    def state_size(self) -> int:
        conv = (self.config.d_conv - 1) * (2 * self.key_width + self.value_width)
        return conv + self.n_heads * self.head_k * self.head_v
