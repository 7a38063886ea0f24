"""Mamba (Gu & Dao 2023, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces").

    [x, z]   = in_proj(u)                                  x, z: (B, L, E), E = expand·D
    x        = silu(causal_depthwise_conv(x))              kernel d_conv, state: last d_conv-1 inputs
    [δ, B, C] = x_proj(x)                                  δ: (B, L, R) rank R = dt_rank; B, C: (B, L, N)
    Δ        = softplus(dt_proj(δ))                        (B, L, E), dt_proj carries the Δ bias
    h_t      = exp(Δ_t A) ⊙ h_{t-1} + Δ_t B_t x_t           h: (B, E, N), A = -exp(A_log) (E, N)
    y_t      = (C_t · h_t + D ⊙ x_t) ⊙ silu(z_t);  out = out_proj(y)

Parameter names follow mamba_ssm / Hugging Face (in_proj, conv1d, x_proj, dt_proj, A_log, D,
out_proj) so checkpoints map one to one. Padding: a step with Δ = 0 is the identity on the scan
state, so padded steps get Δ = 0; the conv state is gathered at each row's length.
The state is (conv_state (B, d_conv-1, E), ssm_state (B, E, N)).

Irregular sampling (docs/irregular.md): per-token time deltas dt (B, L) scale the selective step,
Δ_t = dt_t · softplus(dt_proj(δ_t)), in every mode. The decay exp(Δ_t A) is then the exact
propagator over the elapsed time; the input term Δ_t B_t x_t is the paper's Euler-like rule
(exact for an impulse of weight Δ_t B_t x_t at the sample time, not for a held input).
"""
from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import check
from ..core.activations import softplus
from ..core.init import softplus_dt_bias
from ..ops import selective_scan as selective_scan_op
from ..ops.selective_scan import selective_scan, selective_scan_step
from ..ops.short_conv import conv_state_at, short_conv, short_conv_step
from .base import MixerConfig, SequenceMixer, tag_ssm_param
from .call import ForwardCall
from .registry import register_mixer


@dataclasses.dataclass
class MambaConfig(MixerConfig):
    d_state: int = 16  # N
    d_conv: int = 4  # kernel of the causal depthwise convolution
    expand: int = 2  # E = expand * D
    dt_rank: int | None = None  # R; None = ceil(D / 16) as in the paper
    dt_min: float = 1e-3
    dt_max: float = 0.1
    dt_init_floor: float = 1e-4
    dt_scale: float = 1.0
    conv_bias: bool = True
    bias: bool = False  # in_proj / out_proj bias
    ssm_lr: float | None = 1e-3

    def __post_init__(self) -> None:
        for name in ("d_state", "d_conv", "expand"):
            check(getattr(self, name) >= 1, name, f"must be >= 1, got {getattr(self, name)}")
        check(self.dt_rank is None or self.dt_rank >= 1, "dt_rank", f"must be None or >= 1, got {self.dt_rank}")
        check(0 < self.dt_min <= self.dt_max, "dt_min", f"need 0 < dt_min <= dt_max, got {self.dt_min}, {self.dt_max}")
        check(self.ssm_lr is None or self.ssm_lr > 0, "ssm_lr", f"must be None or > 0, got {self.ssm_lr}")


@register_mixer("mamba")
class Mamba(SequenceMixer):
    """Selective SSM mixer (Mamba-1). Modes: ``cpp`` (compiled CPU scan), ``chunked``, ``reference``."""
    cp_state = ("halo", "diag")  # context parallelism: conv window, selective SSM state

    Config = MambaConfig
    modes = selective_scan_op.MODES  # triton (CUDA), cpp (CPU, when it builds), chunked, reference
    packed_modes = ("cpp", "chunked", "reference")  # the conv window and the scan reset at a document start
    accepts_dt = True  # Δ_t = dt_t · softplus(...)

    def __init__(self, d_model: int, mode: str = "auto", **cfg) -> None:
        super().__init__(d_model, mode, **cfg)
        c = self.config
        E, N = c.expand * d_model, c.d_state
        self.d_inner = E
        self.dt_rank = c.dt_rank or math.ceil(d_model / 16)
        self.in_proj = nn.Linear(d_model, 2 * E, bias=c.bias)
        self.conv1d = nn.Conv1d(E, E, c.d_conv, groups=E, padding=c.d_conv - 1, bias=c.conv_bias)
        self.x_proj = nn.Linear(E, self.dt_rank + 2 * N, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, E, bias=True)
        self.out_proj = nn.Linear(E, d_model, bias=c.bias)
        # S4D-Real init A_n = -(n+1); dt log-uniform in [dt_min, dt_max] through the softplus bias.
        self.A_log = nn.Parameter(torch.log(torch.arange(1, N + 1, dtype=torch.float32)).repeat(E, 1))
        self.D = nn.Parameter(torch.ones(E))
        std = self.dt_rank**-0.5 * c.dt_scale
        nn.init.uniform_(self.dt_proj.weight, -std, std)
        with torch.no_grad():
            self.dt_proj.bias.copy_(softplus_dt_bias(E, c.dt_min, c.dt_max, c.dt_init_floor))
        for p in (self.A_log, self.D, self.dt_proj.bias):
            tag_ssm_param(p, lr=c.ssm_lr)

    # ----------------------------------------------------------------- the shared pieces
    def _ssm_inputs(self, conv_out: Tensor, time_delta: Tensor | None) -> tuple[Tensor, ...]:
        """The conv output (..., E) and time deltas (...) | None -> x (..., E) after the SiLU, Δ (..., E)
        after the softplus (and times dt), B, C (..., N)."""
        xc = F.silu(conv_out)
        N = self.config.d_state
        dt, B, C = self.x_proj(xc).split([self.dt_rank, N, N], dim=-1)
        delta = softplus(F.linear(dt, self.dt_proj.weight) + self.dt_proj.bias)  # dt_proj carries the Δ bias
        if time_delta is not None:
            delta = delta * time_delta[..., None]
        return xc, delta, B, C

    def _conv_weight(self) -> Tensor:
        return self.conv1d.weight[:, 0, :]  # (E, K)

    # ----------------------------------------------------------------- forward / step
    def _in_proj_halves(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x (B, L, D) -> x, z (B, L, E), each from its half of in_proj's weight, so each is contiguous:
        chunks of one (B, L, 2E) output are strided views, and the scan kernel copied z (one
        more pass over (B, L, E) at long L; issue 19)."""
        W, b = self.in_proj.weight, self.in_proj.bias
        E = self.d_inner
        return (F.linear(x, W[:E], None if b is None else b[:E]),
                F.linear(x, W[E:], None if b is None else b[E:]))

    def _forward(self, x: Tensor, state, call: ForwardCall):
        xi, z = self._in_proj_halves(x)  # (B, L, E) each
        conv_state, ssm_state = (None, None) if state is None else state
        conv_out, conv_final = short_conv(xi, self._conv_weight(), self.conv1d.bias, conv_state, starts=call.starts)
        if call.lengths is not None:
            conv_final = conv_state_at(xi, conv_state, call.lengths, self.config.d_conv)
        xc, delta, B, C = self._ssm_inputs(conv_out, call.dt)
        A = -torch.exp(self.A_log)
        y, ssm_final = selective_scan(xc, call.zero_pads(delta), A, B, C, self.D, z, initial_state=ssm_state,
                                      mode=call.mode, starts=call.starts)  # Δ = 0: padded steps are identities
        return self.out_proj(y), (conv_final, ssm_final)

    def _step(self, x_t: Tensor, state, dt: Tensor | None):
        conv_state, h = state
        xi, z = self.in_proj(x_t).chunk(2, dim=-1)  # (B, E)
        conv_out, conv_state = short_conv_step(xi, self._conv_weight(), self.conv1d.bias, conv_state)
        xc, delta, B, C = self._ssm_inputs(conv_out, dt)
        y, h = selective_scan_step(xc, delta, -torch.exp(self.A_log), B, C, self.D, z, state=h)
        return self.out_proj(y), (conv_state, h)

    def _zero_state(self, batch_size, device, dtype):
        E, K, N = self.d_inner, self.config.d_conv, self.config.d_state
        return (torch.zeros(batch_size, K - 1, E, device=device, dtype=dtype),
                torch.zeros(batch_size, E, N, device=device, dtype=dtype))

    @property
    def state_size(self) -> int:
        return self.d_inner * (self.config.d_conv - 1 + self.config.d_state)
