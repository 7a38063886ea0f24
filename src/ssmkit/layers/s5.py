"""S5: one MIMO diagonal SSM over all D channels.

Smith, Warrington, Linderman 2023, "Simplified State Space Layers for Sequence Modeling".
Equations implemented (derivation and the dense-SSM equivalence: docs/math/s5.md), with P' modes
(P' = P/2 with ``conj_sym``, else P) and per-mode steps dt = exp(log_dt):

    Lambda = Lambda_re + i Lambda_im                      (P',)   Re clamped <= -1e-4 if clip_eigs
    (dLambda, dB) = discretize_diag(Lambda, B~, dt)      zoh or bilinear, dB (P', D)
    h_t = dLambda * h_{t-1} + dB x_t                      h (B, P') complex
    z_t = c Re(C~ h_t) + D * x_t                          c = 2 with conj_sym, else 1
    y_t = GELU(z_t) * sigmoid(W GELU(z_t) + b)            "half_glu", the S5 paper's default

B~ = V^{-1} B and C~ = C V are the input / output matrices in the eigenbasis V of the block-
diagonal HiPPO-N matrix (``core.init.s5_init``); they are trained directly, stored as real and
imaginary parts. The recurrence runs through ``ops.linear_scan``, whose modes are the layer's:
``chunked`` (parallel over chunks) and ``reference`` (its sequential loop).

Irregular sampling (docs/irregular.md): per-token time deltas dt (B, L) discretize token t with
the steps dt_t · dt (every mode), so dLambda and dB vary over time.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.discretize import discretize_diag
from ..core.init import dt_init, s5_init
from ..config import check
from ._complex_io import project_in, real_readout
from ._diagonal_rnn import DiagonalRNN
from .base import MixerConfig, tag_ssm_param
from .registry import register_mixer

DISCRETIZATIONS = ("zoh", "bilinear")
ACTIVATIONS = ("half_glu", "full_glu", "gelu")


@dataclass
class S5Config(MixerConfig):
    d_state: int = 64  # P: size of the HiPPO-N matrix; P' = P/2 modes are kept with conj_sym
    blocks: int = 4  # J: HiPPO-N blocks of size P/J on the diagonal of the initial A
    conj_sym: bool = True  # keep one mode of each conjugate pair and read out 2 Re(C~ h)
    discretization: str = "zoh"  # "zoh" or "bilinear"
    dt_min: float = 1e-3  # per-mode steps dt are log-uniform on [dt_min, dt_max] at init
    dt_max: float = 1e-1
    clip_eigs: bool = False  # clamp Re(Lambda) <= -1e-4 so training cannot make a mode unstable
    activation: str = "half_glu"  # "half_glu" (paper default), "full_glu" or "gelu"
    ssm_lr: float | None = 1e-3  # learning rate of Lambda, log_dt, B~, C~ (None: the global one)

    def __post_init__(self) -> None:
        for name in ("d_state", "blocks"):
            v = getattr(self, name)
            check(v > 0, name, f"must be an int > 0, got {v!r}")
        check(
            self.d_state % self.blocks == 0,
            "blocks",
            f"must divide d_state={self.d_state} (each block is a HiPPO-N of size "
            f"d_state/blocks), got {self.blocks}",
        )
        check(
            not self.conj_sym or (self.d_state // self.blocks) % 2 == 0,
            "conj_sym",
            f"needs an even block size d_state/blocks, got {self.d_state}/{self.blocks}="
            f"{self.d_state // self.blocks} (a real eigenvalue has no conjugate partner)",
        )
        check(
            self.discretization in DISCRETIZATIONS,
            "discretization",
            f"must be one of {DISCRETIZATIONS}, got {self.discretization!r}",
        )
        check(
            0 < self.dt_min <= self.dt_max,
            "dt_min",
            f"need 0 < dt_min <= dt_max, got dt_min={self.dt_min}, dt_max={self.dt_max}",
        )
        check(
            self.activation in ACTIVATIONS,
            "activation",
            f"must be one of {ACTIVATIONS}, got {self.activation!r}",
        )
        check(self.ssm_lr is None or self.ssm_lr > 0, "ssm_lr", f"must be None or > 0, got {self.ssm_lr}")


@register_mixer("s5")
class S5(DiagonalRNN):
    """S5 (Smith et al. 2023): a MIMO diagonal SSM h_t = dLambda h_{t-1} + dB x_t over all D channels.

    x: (B, L, D) -> y: (B, L, D); state ``(h,)`` with h (B, P') complex. See the module docstring
    for the equations and ``S5Config`` for the options.
    """

    Config = S5Config
    accepts_dt = True  # token t uses the steps dt_t · exp(log_dt)

    def __init__(self, d_model: int, mode: str = "auto", **cfg) -> None:
        super().__init__(d_model, mode, **cfg)
        c = self.config
        P, D = c.d_state, d_model
        dtype = torch.get_default_dtype()
        Lam, V = s5_init(P, c.blocks)  # complex128
        if c.conj_sym:
            # s5_init sorts each block by decreasing Im: its first half holds one mode per pair.
            # Indices, not a boolean mask: their count is known without reading values (a build
            # on the meta device, as create_mixer's memory check does, cannot read any).
            bs = P // c.blocks
            keep = (torch.arange(c.blocks)[:, None] * bs + torch.arange(bs // 2)).flatten()
        else:
            keep = torch.arange(P)
        Lam, V, Vinv = Lam[keep], V[:, keep], V.mH[keep]  # V is unitary: V^{-1} = V^*
        self.n_modes = keep.numel()
        # Initial B, C as in the S5 code: real B (P, D) and complex C (D, P), entries of std
        # 1/sqrt(P) (lecun-normal over the full state size), then mapped into the eigenbasis.
        B = torch.randn(P, D, dtype=torch.float64) / math.sqrt(P)
        C = torch.complex(torch.randn(D, P, dtype=torch.float64), torch.randn(D, P, dtype=torch.float64))
        Bt, Ct = Vinv @ B.to(Vinv.dtype), (C / math.sqrt(P)) @ V

        def ssm_param(t: Tensor) -> nn.Parameter:
            return tag_ssm_param(nn.Parameter(t.to(dtype)), lr=c.ssm_lr)

        self.Lambda_re, self.Lambda_im = ssm_param(Lam.real), ssm_param(Lam.imag)
        self.log_dt = ssm_param(dt_init(self.n_modes, c.dt_min, c.dt_max))
        self.B_re, self.B_im = ssm_param(Bt.real), ssm_param(Bt.imag)  # (P', D)
        self.C_re, self.C_im = ssm_param(Ct.real), ssm_param(Ct.imag)  # (D, P')
        self.D = nn.Parameter(torch.randn(D, dtype=dtype))
        self.out1 = nn.Linear(D, D) if c.activation == "full_glu" else None
        self.out2 = nn.Linear(D, D) if c.activation in ("half_glu", "full_glu") else None

    # ----------------------------------------------------------------- the SSM
    def eigenvalues(self) -> Tensor:
        """Lambda (P',) complex, the continuous-time eigenvalues (clamped when ``clip_eigs``)."""
        Lam_re = self.Lambda_re.clamp(max=-1e-4) if self.config.clip_eigs else self.Lambda_re
        return torch.complex(Lam_re, self.Lambda_im)

    def discrete(self) -> tuple[Tensor, Tensor]:
        """(dLambda (P',), dB (P', D)) complex: the discretized diagonal system."""
        dA, scale = self.discrete_at(None)
        return dA, scale[:, None] * torch.complex(self.B_re, self.B_im)

    def discrete_at(self, dt: Tensor | None) -> tuple[Tensor, Tensor]:
        """(dLambda, s) (..., P') complex with dB = s[..., None] * B~, for steps dt (...) · exp(log_dt)
        (dt None: the learned steps, shape (P',))."""
        Lam = self.eigenvalues()
        step = torch.exp(self.log_dt)
        if dt is not None:
            step = dt[..., None] * step
        return discretize_diag(Lam, torch.ones_like(Lam), step, self.config.discretization)

    def _readout(self, h: Tensor, x: Tensor) -> Tensor:
        """c Re(C~ h) + D x: h (..., P') complex, x (..., D) -> (..., D)."""
        y = real_readout(h, self.C_re, self.C_im)
        return (2 * y if self.config.conj_sym else y) + self.D * x

    def output_block(self, h: Tensor, x: Tensor) -> Tensor:
        """The layer's output from its state and input, instantaneous in both (training.online reads
        it): the activation of c Re(C~ h) + D x; h (..., P') complex, x (..., D) -> (..., D)."""
        return self._activate(self._readout(h, x))

    def _activate(self, z: Tensor) -> Tensor:
        g = F.gelu(z)
        if self.config.activation == "half_glu":
            return g * torch.sigmoid(self.out2(g))
        if self.config.activation == "full_glu":
            return self.out1(g) * torch.sigmoid(self.out2(g))
        return g

    # ----------------------------------------------------------------- mixer interface
    def _recurrence_inputs(self, x: Tensor, dt: Tensor | None) -> tuple[Tensor, Tensor]:
        """x (..., D), dt (...) | None -> (dLambda (P',) | (..., P'), dB x (..., P')) of h = a h + b."""
        if dt is None:
            dA, dB = self.discrete()
            return dA, project_in(x, dB)
        dA, scale = self.discrete_at(dt)
        return dA, scale * project_in(x, torch.complex(self.B_re, self.B_im))
