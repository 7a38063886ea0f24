"""DSS: Gupta, Gu, Berant 2022, "Diagonal State Spaces are as Effective as Structured State Spaces".

Per channel h (H = D channels), with Lambda (N/2,) shared by all channels as in the DSS code,
w (H, N/2) and dt = exp(log_dt) (H,):

    DSS-exp:      K_k = Re(sum_n w_n (e^{Lambda_n dt} - 1) / Lambda_n * e^{Lambda_n k dt})
    DSS-softmax:  K_k = Re(sum_n w_n / Lambda_n * softmax_k(Lambda_n k dt)),  softmax over k < l_max
                      = DSS-exp with w_n divided by (e^{Lambda_n dt l_max} - 1).

Both are the diagonal recurrence dA = e^{Lambda dt}, dB = (e^{Lambda dt} - 1)/Lambda,
C = w (exp) or w / (e^{Lambda dt l_max} - 1) (softmax), derived in docs/math/dss.md, so every
mode of ``_diagonal_lti`` (fft / chunked / reference, step, carried state) applies.

Two choices differ from the paper, both so that the layer is a stable streaming recurrence:
the softmax normalizes over a fixed length ``l_max`` (the paper uses the input length, which
would make the kernel change with L and break split / step equivalence), and Re(Lambda) < 0 is
enforced by Lambda = -exp(log_neg_re) + i im in both variants (the paper lets softmax have
Re(Lambda) > 0, whose recurrence grows without bound past l_max).
"""
from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from ..core.init import dt_init, s4d_init
from ._diagonal_lti import ContinuousSystem, DiagonalLTI, DiagonalLTIConfig, real_to_complex
from ._diagonal_ssm import DiagonalSystem
from ..config import check
from .base import tag_ssm_param
from .registry import register_mixer

VARIANTS = ("softmax", "exp")


@dataclasses.dataclass
class DSSConfig(DiagonalLTIConfig):
    variant: str = "softmax"  # kernel parametrization: "softmax" (DSS-softmax) | "exp" (DSS-exp)
    l_max: int = 1024  # softmax only: the length L the softmax normalizes over (fixed; see module doc)

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.variant in VARIANTS, "variant", f"must be one of {VARIANTS}, got {self.variant!r}")
        check(self.l_max >= 1, "l_max", f"must be an int >= 1, got {self.l_max!r}")


@register_mixer("dss")
class DSS(DiagonalLTI):
    """DSS layer (B, L, D) -> (B, L, D); state (h,) with h (B, H, N/2) complex."""

    Config = DSSConfig
    config: DSSConfig
    accepts_dt = True  # its recurrence is the zoh of (Lambda, 1) (docs/irregular.md)

    def __init__(self, d_model: int, mode: str = "auto", **cfg) -> None:
        super().__init__(d_model, mode, **cfg)
        c, H, Nh = self.config, d_model, self.config.d_state // 2
        dtype = torch.get_default_dtype()
        # The Im > 0 half of the HiPPO-LegS normal part's eigenvalues (DSS "hippo_skew_pos_imag").
        Lam = s4d_init("legs", Nh)
        self.log_dt = tag_ssm_param(nn.Parameter(dt_init(H, c.dt_min, c.dt_max).to(dtype)), c.ssm_lr)
        self.Lambda_log_neg_re = tag_ssm_param(nn.Parameter(torch.log(-Lam.real).to(dtype)), c.ssm_lr)
        self.Lambda_im = tag_ssm_param(nn.Parameter(Lam.imag.to(dtype)), c.ssm_lr)
        # w ~ N(0, 1) in real and imaginary parts, as in the DSS code.
        self.W = tag_ssm_param(nn.Parameter(torch.randn(H, Nh, 2, dtype=dtype)))

    def _parts(self) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """(dt Lambda (H, N), Lambda (N,), ones, C (H, N), dt (H, 1))."""
        dt = torch.exp(self.log_dt)[:, None]  # (H, 1)
        Lam = torch.complex(-torch.exp(self.Lambda_log_neg_re), self.Lambda_im)  # (N,)
        dtL = dt * Lam  # (H, N)
        C = real_to_complex(self.W)
        if self.config.variant == "softmax":
            # 1 / sum_{k < l_max} e^{Lambda dt k} = (e^{Lambda dt} - 1) / (e^{Lambda dt l_max} - 1);
            # the numerator is already in dB.
            C = C / torch.expm1(dtL * self.config.l_max)
        return dtL, Lam, torch.ones_like(Lam), C, dt

    def discrete_system(self) -> DiagonalSystem:
        dtL, Lam, _, C, _ = self._parts()
        return DiagonalSystem(torch.exp(dtL), dtL, torch.expm1(dtL) / Lam, C)

    def continuous_system(self) -> ContinuousSystem:
        """(Lambda, B = 1, C, dt, zoh): per-token steps dt_t · dt rediscretize (Lambda, 1) while C
        (the softmax normalization included) stays the learned-step readout."""
        return ContinuousSystem(*self._parts()[1:], "zoh")
