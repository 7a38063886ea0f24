"""LRU: the Linear Recurrent Unit.

Orvieto, Smith, Gu, Fernando, Gulcehre, Pascanu, De 2023, "Resurrecting Recurrent Neural Networks
for Long Sequences". Equations implemented (derivation of the normalization: docs/math/lru.md):

    lambda = exp(-exp(nu_log) + i exp(theta_log))          (N,)  |lambda| < 1 for any nu_log
    gamma  = exp(gamma_log)                                (N,)  init sqrt(1 - |lambda|^2)
    h_t = lambda * h_{t-1} + gamma * (B x_t)               h (B, N) complex, B (N, D) complex
    z_t = Re(C h_t) + D * x_t                              C (D, N) complex, D (D,) real
    y_t = (W1 g_t + b1) * sigmoid(W2 g_t + b2),  g_t = GELU(z_t)

The last line is the paper's block output (its Fig. 1: a position-wise GLU after the recurrence;
GELU then GLU as in the minimal-LRU reproduction). Normalization, dropout and the residual belong
to the model's block. The recurrence runs through ``ops.linear_scan``, whose modes are the layer's:
``chunked`` (parallel over chunks) and ``reference`` (its loop).

Irregular sampling (docs/irregular.md): the LRU has no step, so per-token time deltas dt (B, L)
read lambda as the one-unit-of-time propagator of the continuous system h' = log(lambda) h + ...:

    h_t = lambda^{dt_t} h_{t-1} + r(dt_t) gamma (B x_t),   r(dt) = (lambda^{dt} - 1) / (lambda - 1)

the zero-order hold of that system (r(1) = 1: dt = 1 is the plain LRU).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.discretize import discretize_diag
from ..core.init import lru_init
from ..config import check
from ._complex_io import project_in, real_readout
from ._diagonal_rnn import DiagonalRNN
from .base import MixerConfig, tag_ssm_param
from .registry import register_mixer

@dataclass
class LRUConfig(MixerConfig):
    d_state: int = 128  # N: complex modes (state_size = 2N floats)
    # The ring r_min <= |lambda| <= r_max of the initial eigenvalues. Long-range tasks need it
    # close to the unit circle (paper Sec. 3.3); 0.9 / 0.999 is the LRA-style ring of public LRU
    # reproductions, PathFinder / PathX also use max_phase = pi / 10 (docs/math/lru.md).
    r_min: float = 0.9
    r_max: float = 0.999
    max_phase: float = 2 * math.pi  # initial phases arg(lambda) are uniform on [0, max_phase]
    ssm_lr: float | None = 1e-3  # learning rate of nu, theta, gamma, B, C (None: the global one)

    def __post_init__(self) -> None:
        v = self.d_state
        check(v > 0, "d_state", f"must be an int > 0, got {v!r}")
        check(
            0.0 <= self.r_min < self.r_max <= 1.0,
            "r_min",
            f"need 0 <= r_min < r_max <= 1, got r_min={self.r_min}, r_max={self.r_max}",
        )
        check(
            0.0 < self.max_phase <= 2 * math.pi,
            "max_phase",
            f"must be in (0, 2 pi], got {self.max_phase}",
        )
        check(self.ssm_lr is None or self.ssm_lr > 0, "ssm_lr", f"must be None or > 0, got {self.ssm_lr}")


@register_mixer("lru")
class LRU(DiagonalRNN):
    """LRU (Orvieto et al. 2023): h_t = lambda h_{t-1} + gamma B x_t, z_t = Re(C h_t) + D x_t, GLU out.

    x: (B, L, D) -> y: (B, L, D); state ``(h,)`` with h (B, N) complex.
    """

    Config = LRUConfig
    projection_params = ("B_re", "B_im", "C_re", "C_im")  # per-token matmuls (benchmarks/projections.py)
    accepts_dt = True  # lambda^{dt_t} with the zero-order-hold input scaling (module doc)

    def __init__(self, d_model: int, mode: str = "auto", **cfg) -> None:
        super().__init__(d_model, mode, **cfg)
        c = self.config
        N, D = c.d_state, d_model
        self.n_modes = N
        dtype = torch.get_default_dtype()
        nu_log, theta_log, gamma_log = lru_init(N, c.r_min, c.r_max, c.max_phase)

        def ssm_param(t: Tensor) -> nn.Parameter:
            return tag_ssm_param(nn.Parameter(t.to(dtype)), lr=c.ssm_lr)

        self.nu_log, self.theta_log = ssm_param(nu_log), ssm_param(theta_log)
        self.gamma_log = ssm_param(gamma_log)
        # Glorot-style as in the paper: E|(B x)_n|^2 = |x|^2 / D, so with the gamma normalization
        # white-noise input gives unit state variance; C keeps the readout variance at that of h.
        self.B_re = ssm_param(torch.randn(N, D) / math.sqrt(2 * D))
        self.B_im = ssm_param(torch.randn(N, D) / math.sqrt(2 * D))
        self.C_re = ssm_param(torch.randn(D, N) / math.sqrt(N))
        self.C_im = ssm_param(torch.randn(D, N) / math.sqrt(N))
        self.D = nn.Parameter(torch.randn(D, dtype=dtype))
        self.out1 = nn.Linear(D, D)
        self.out2 = nn.Linear(D, D)

    # ----------------------------------------------------------------- the recurrence
    def log_eigenvalues(self) -> Tensor:
        """log(lambda) (N,) complex = -exp(nu_log) + i exp(theta_log): the continuous-time eigenvalues."""
        return torch.complex(-torch.exp(self.nu_log), torch.exp(self.theta_log))

    def eigenvalues(self) -> Tensor:
        """lambda (N,) complex = exp(-exp(nu_log) + i exp(theta_log))."""
        return torch.exp(self.log_eigenvalues())

    def eigenvalues_at(self, dt: Tensor) -> tuple[Tensor, Tensor]:
        """(lambda^{dt}, r(dt) = (lambda^{dt} - 1) / (lambda - 1)), both (..., N), for dt (...).

        Both through the zoh rule on log(lambda): lambda^dt = exp(dt z) and r = dt phi(dt z) / phi(z)
        with phi(z) = (e^z - 1) / z, smooth where lambda -> 1; dt = 1 gives (lambda, 1) exactly.
        """
        z = self.log_eigenvalues()
        one = torch.ones_like(z)
        decay, num = discretize_diag(z, one, dt[..., None], "zoh")
        _, den = discretize_diag(z, one, 1.0, "zoh")
        return decay, num / den

    def input_matrix(self) -> Tensor:
        """gamma * B (N, D) complex: the normalized input matrix."""
        return torch.exp(self.gamma_log)[:, None] * torch.complex(self.B_re, self.B_im)

    def output_block(self, h: Tensor, x: Tensor) -> Tensor:
        """The layer's output from its state and input, instantaneous in both (training.online reads
        it): Re(C h) + D x, then GELU and the GLU projection: h (..., N), x (..., D) -> (..., D)."""
        g = F.gelu(real_readout(h, self.C_re, self.C_im) + self.D * x)
        return self.out1(g) * torch.sigmoid(self.out2(g))

    def _recurrence_inputs(self, x: Tensor, dt: Tensor | None) -> tuple[Tensor, Tensor]:
        """x (..., D), dt (...) | None -> (decay (N,) | (..., N), input (..., N)) of h = a h + b."""
        bu = project_in(x, self.input_matrix())
        if dt is None:
            return self.eigenvalues(), bu
        lam, r = self.eigenvalues_at(dt)
        return lam, r * bu
