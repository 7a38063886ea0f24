"""S4D: Gu, Goel, Gupta, Ré 2022, "On the Parameterization and Initialization of Diagonal State
Space Models".

Per channel h (H = D channels), N/2 complex modes with their implicit conjugates:

    A = -exp(log_A_real) + i A_imag,   dt = exp(log_dt),   (dA, dB) = discretize(A, B, dt)
    h_t = dA h_{t-1} + dB u_t,   y_t = 2 Re(C h_t) + D u_t      (K_l = 2 Re(sum_n C_n dB_n dA_n^l))

followed by GELU, dropout and Linear(D, 2D) + GLU. The modes (fft / chunked / reference) and state
handling live in ``_diagonal_lti``; the derivations in docs/math/s4d.md. Per-token time deltas
dt (B, L) scale the step (irregular sampling, chunked / reference modes; docs/irregular.md).
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

from ..core.init import S4D_KINDS, dt_init, s4d_init
from ._diagonal_lti import ContinuousSystem, DiagonalLTI, DiagonalLTIConfig, real_to_complex
from ..config import check
from .base import tag_ssm_param
from .registry import register_mixer

DISCRETIZATIONS = ("zoh", "bilinear")


@dataclasses.dataclass
class S4DConfig(DiagonalLTIConfig):
    init: str = "legs"  # diagonal A: "legs" | "inv" | "lin" | "real" (the paper's S4D-LegS/Inv/Lin/Real)
    discretization: str = "zoh"  # "zoh" | "bilinear"
    trainable_B: bool = False  # False: B fixed to ones (the paper's default); True: B trained from ones

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.init in S4D_KINDS, "init", f"must be one of {S4D_KINDS}, got {self.init!r}")
        check(self.discretization in DISCRETIZATIONS, "discretization",
              f"must be one of {DISCRETIZATIONS}, got {self.discretization!r}")


@register_mixer("s4d")
class S4D(DiagonalLTI):
    """S4D layer (B, L, D) -> (B, L, D); state (h,) with h (B, H, N/2) complex."""

    Config = S4DConfig
    config: S4DConfig
    accepts_dt = True  # token t uses the step dt_t · exp(log_dt) (docs/irregular.md)

    def __init__(self, d_model: int, mode: str = "auto", **cfg) -> None:
        super().__init__(d_model, mode, **cfg)
        c, H, Nh = self.config, d_model, self.config.d_state // 2
        dtype = torch.get_default_dtype()
        A = s4d_init(c.init, Nh).expand(H, Nh)
        self.log_dt = tag_ssm_param(nn.Parameter(dt_init(H, c.dt_min, c.dt_max).to(dtype)), c.ssm_lr)
        self.log_A_real = tag_ssm_param(nn.Parameter(torch.log(-A.real).to(dtype)), c.ssm_lr)
        self.A_imag = tag_ssm_param(nn.Parameter(A.imag.to(dtype)), c.ssm_lr)
        if c.trainable_B:
            B = torch.zeros(H, Nh, 2, dtype=dtype)
            B[..., 0] = 1.0
            self.B = tag_ssm_param(nn.Parameter(B), c.ssm_lr)
        else:
            self.register_parameter("B", None)
        # C ~ CN(0, 1) as in the S4D code; no weight decay, the model's own learning rate.
        self.C = tag_ssm_param(nn.Parameter(torch.view_as_real(torch.randn(H, Nh, dtype=torch.complex64)).to(dtype)))

    def continuous_system(self) -> ContinuousSystem:
        dt = torch.exp(self.log_dt)[:, None]  # (H, 1)
        A = torch.complex(-torch.exp(self.log_A_real), self.A_imag)  # (H, N)
        B = torch.ones_like(A) if self.B is None else real_to_complex(self.B)
        # The conjugate modes are implicit: their sum with the kept ones is 2 Re(...).
        return ContinuousSystem(A, B, 2 * real_to_complex(self.C), dt, self.config.discretization)
