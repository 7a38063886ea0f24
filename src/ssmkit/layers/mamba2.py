"""Mamba-2 (Dao & Gu 2024, "Transformers are SSMs"): the SSD layer.

    [z, xBC, dt] = in_proj(u)                   z, x: (B, L, E), B, C: (B, L, G·N), dt: (B, L, H)
    xBC          = silu(causal_depthwise_conv(xBC))
    Δ            = clamp(softplus(dt + dt_bias), dt_limit)                               (B, L, H)
    h_t[h]       = exp(Δ_t[h] A[h]) h_{t-1}[h] + Δ_t[h] x_t[h] ⊗ B_t[g(h)]   h: (P, N), A = -exp(A_log)
    y_t[h]       = h_t[h] C_t[g(h)] + D[h] x_t[h]
    out          = out_proj(RMSNorm_grouped(y ⊙ silu(z)))        (gate before norm, as mamba_ssm)

E = expand·D = H·P heads of size P (head_dim). Parameter names follow mamba_ssm / Hugging Face
(in_proj, conv1d, dt_bias, A_log, D, norm.weight, out_proj). Padded steps get Δ = 0, the
identity on the state. The state is (conv_state (B, d_conv-1, E + 2GN), ssm_state (B, H, P, N)).

Irregular sampling (docs/irregular.md): per-token time deltas dt (B, L) scale the step after the
clamp, Δ_t = dt_t · clamp(softplus(...)), in every mode (the same rule as Mamba's).
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import check
from ..core.init import softplus_dt_bias
from ..ops import ssd as ssd_op
from ..ops.short_conv import conv_state_at, short_conv, short_conv_step
from ..ops.ssd import ssd, ssd_step
from .base import MixerConfig, SequenceMixer, tag_ssm_param
from .call import ForwardCall
from .registry import register_mixer


@dataclasses.dataclass
class Mamba2Config(MixerConfig):
    d_state: int = 64  # N
    d_conv: int = 4
    expand: int = 2  # E = expand * D
    head_dim: int = 16  # P (the paper uses 64; small widths need smaller heads)
    n_groups: int = 1  # G groups of B/C shared by H/G heads
    chunk_size: int = 32  # C of chunked SSD: L·H·C decay vs L·H·P·N/C state floats; 32 beat 64 at L=16k
    dt_min: float = 1e-3
    dt_max: float = 0.1
    dt_init_floor: float = 1e-4
    dt_limit: tuple[float, float] = (0.0, float("inf"))
    A_init_range: tuple[float, float] = (1.0, 16.0)
    norm_eps: float = 1e-5
    conv_bias: bool = True
    bias: bool = False
    ssm_lr: float | None = 1e-3

    def __post_init__(self) -> None:
        for name in ("d_state", "d_conv", "expand", "head_dim", "n_groups", "chunk_size"):
            check(getattr(self, name) >= 1, name, f"must be >= 1, got {getattr(self, name)}")
        check(0 < self.dt_min <= self.dt_max, "dt_min", f"need 0 < dt_min <= dt_max, got {self.dt_min}, {self.dt_max}")
        check(0 <= self.dt_limit[0] < self.dt_limit[1], "dt_limit", f"need 0 <= low < high, got {self.dt_limit}")
        check(0 < self.A_init_range[0] <= self.A_init_range[1], "A_init_range", f"need 0 < low <= high, got {self.A_init_range}")
        check(self.ssm_lr is None or self.ssm_lr > 0, "ssm_lr", f"must be None or > 0, got {self.ssm_lr}")


@register_mixer("mamba2")
class Mamba2(SequenceMixer):
    """SSD mixer (Mamba-2). Modes: ``chunked`` (SSD algorithm), ``quadratic`` (masked dual form), ``reference``."""
    cp_state = ("halo", "diag")  # context parallelism: conv window, SSD state (scalar decay per head)

    Config = Mamba2Config
    modes = ssd_op.MODES  # triton (CUDA), chunked, quadratic, reference
    packed_modes = ("chunked", "quadratic", "reference")  # conv window and SSD reset at a document start
    accepts_dt = True  # Δ_t = dt_t · clamp(softplus(...))

    def __init__(self, d_model: int, mode: str = "auto", **cfg) -> None:
        super().__init__(d_model, mode, **cfg)
        c = self.config
        E = c.expand * d_model
        check(E % c.head_dim == 0, "head_dim", f"must divide expand*d_model={E}, got {c.head_dim}")
        H = E // c.head_dim
        check(H % c.n_groups == 0, "n_groups", f"must divide the number of heads {H}, got {c.n_groups}")
        self.d_inner, self.n_heads = E, H
        self.conv_dim = E + 2 * c.n_groups * c.d_state
        self.in_proj = nn.Linear(d_model, E + self.conv_dim + H, bias=c.bias)
        self.conv1d = nn.Conv1d(self.conv_dim, self.conv_dim, c.d_conv, groups=self.conv_dim,
                                padding=c.d_conv - 1, bias=c.conv_bias)
        self.dt_bias = nn.Parameter(softplus_dt_bias(H, c.dt_min, c.dt_max, c.dt_init_floor))
        self.A_log = nn.Parameter(torch.log(torch.empty(H).uniform_(*c.A_init_range)))
        self.D = nn.Parameter(torch.ones(H))
        self.norm = nn.RMSNorm(E, eps=c.norm_eps)  # applied per group of E/G channels in _gated_norm
        self.out_proj = nn.Linear(E, d_model, bias=c.bias)
        for p in (self.dt_bias, self.A_log, self.D):
            tag_ssm_param(p, lr=c.ssm_lr)

    def _gated_norm(self, y: Tensor, z: Tensor) -> Tensor:
        """RMS-normalize y ⊙ silu(z) within each of the G groups, then scale by the norm weight."""
        g = y * F.silu(z)
        G = self.config.n_groups
        g = g.unflatten(-1, (G, -1))
        g = g * torch.rsqrt(g.pow(2).mean(-1, keepdim=True) + self.config.norm_eps)
        return g.flatten(-2) * self.norm.weight

    def _project(self, u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        E = self.d_inner
        return self.in_proj(u).split([E, self.conv_dim, self.n_heads], dim=-1)

    def _ssm_inputs(self, xbc: Tensor, dt: Tensor, time_delta: Tensor | None) -> tuple[Tensor, ...]:
        """The activated conv output (..., E + 2GN), the projected step (..., H) and time deltas (...)
        | None -> x (..., H, P), B, C (..., G, N), Δ (..., H) after bias, softplus, clamp (and times dt)."""
        c = self.config
        x, B, C = xbc.split([self.d_inner, c.n_groups * c.d_state, c.n_groups * c.d_state], dim=-1)
        x = x.unflatten(-1, (self.n_heads, c.head_dim))
        B = B.unflatten(-1, (c.n_groups, c.d_state))
        C = C.unflatten(-1, (c.n_groups, c.d_state))
        delta = F.softplus(dt + self.dt_bias).clamp(*c.dt_limit)
        if time_delta is not None:
            delta = delta * time_delta[..., None]
        return x, B, C, delta

    def _forward(self, x: Tensor, state, call: ForwardCall):
        z, xbc, dt = self._project(x)
        conv_state, ssm_state = (None, None) if state is None else state
        xc, conv_final = short_conv(xbc, self.conv1d.weight[:, 0, :], self.conv1d.bias, conv_state, starts=call.starts)
        if call.lengths is not None:
            conv_final = conv_state_at(xbc, conv_state, call.lengths, self.config.d_conv)
        xs, B, C, delta = self._ssm_inputs(F.silu(xc), dt, call.dt)
        A = -torch.exp(self.A_log)
        y, ssm_final = ssd(xs, call.zero_pads(delta), A, B, C, self.D, initial_state=ssm_state, mode=call.mode,
                           chunk_size=self.config.chunk_size, starts=call.starts)  # Δ = 0: padded steps are identities
        return self.out_proj(self._gated_norm(y.flatten(-2), z)), (conv_final, ssm_final)

    def _step(self, x_t: Tensor, state, dt: Tensor | None):
        conv_state, h = state  # h (B, H, P, N)
        z, xbc, dt_proj = self._project(x_t)
        xc, conv_state = short_conv_step(xbc, self.conv1d.weight[:, 0, :], self.conv1d.bias, conv_state)
        xs, B, C, delta = self._ssm_inputs(F.silu(xc), dt_proj, dt)
        y, h = ssd_step(xs, delta, -torch.exp(self.A_log), B, C, self.D, state=h)  # y (B, H, P)
        return self.out_proj(self._gated_norm(y.flatten(-2), z)), (conv_state, h)

    def _zero_state(self, batch_size, device, dtype):
        c = self.config
        return (
            torch.zeros(batch_size, c.d_conv - 1, self.conv_dim, device=device, dtype=dtype),
            torch.zeros(batch_size, self.n_heads, c.head_dim, c.d_state, device=device, dtype=dtype),
        )

    @property
    def state_size(self) -> int:
        c = self.config
        return self.conv_dim * (c.d_conv - 1) + self.d_inner * c.d_state

