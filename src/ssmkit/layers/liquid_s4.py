"""Liquid-S4: Hasani, Lechner, Wang, Chahine, Amini, Rus 2023, "Liquid Structural State-Space
Models" (ICLR), with the PB ("powers of B") liquid kernel, on the diagonal S4D system.

The paper's linearized liquid time-constant SSM x' = (A + B u) x + B u, discretized,
x_t = (dA + dB u_t) x_{t-1} + dB u_t, unrolls to y = K * u + K_liquid * u_correlations. The PB
kernel keeps, for each order p = 2..P, the coefficient C dB^p of the product of the p most recent
inputs (docs/math/liquid_s4.md derives why these are exactly the terms with dA^0):

    h_t = dA h_{t-1} + dB u_t,    y_t = Re(C h_t) + D u_t + sum_{p=2}^{P} kappa_p prod_{j<p} u_{t-j}
    kappa_p = Re(sum_n C_n dB_n^p)          (per channel; C includes the conjugate factor 2)

followed by the S4D head (GELU, dropout, Linear(D, 2D), GLU). dA, dB, C are S4D's (diagonal,
bilinear by default as in S4); the paper builds on the DPLR S4 kernel, whose PB term has the same
form. The liquid term is a polynomial in the last P inputs, so the exact recurrent state is the
S4D state plus those inputs: (h (B, H, N/2) complex, u_hist (B, P-1, H), oldest first).

Modes: ``fft`` (S4D's FFT convolution with exact state carry + the vectorized product terms) and
``reference`` (the recurrence above token by token).
"""
from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from ..config import check
from ..ops.linear_scan import linear_scan_step
from ..ops.short_conv import conv_state_at
from ._diagonal_ssm import DiagonalSystem, diagonal_fft
from .call import ForwardCall
from .registry import register_mixer
from .s4d import S4D, S4DConfig


@dataclasses.dataclass
class LiquidS4Config(S4DConfig):
    discretization: str = "bilinear"  # "bilinear" (S4's, the paper's) | "zoh"
    liquid_order: int = 2  # P: highest order of the input-correlation terms (P >= 2)

    def __post_init__(self) -> None:
        super().__post_init__()
        p = self.liquid_order
        check(p >= 2, "liquid_order", f"must be an int >= 2 (order 1 is plain S4D), got {p!r}")


@register_mixer("liquid_s4")
class LiquidS4(S4D):
    """Liquid-S4 (PB kernel) layer (B, L, D) -> (B, L, D); state (h, u_hist)."""
    cp_state = ("diag", "halo")  # the SSM state; the last inputs of the product terms

    Config = LiquidS4Config
    config: LiquidS4Config
    modes = ("fft", "reference")
    packed_modes = ()  # its liquid kernel spans the row: packed rows run their documents as rows
    accepts_dt = False  # the liquid product terms have no continuous-time step to rescale

    def liquid_coefficients(self, s: DiagonalSystem) -> Tensor:
        """kappa (P-1, H): kappa_p = Re(sum_n C_n dB_n^p) for p = 2..P."""
        dBp, out = s.dB, []
        for _ in range(self.config.liquid_order - 1):
            dBp = dBp * s.dB  # products, not pow: exact powers for every p
            out.append((s.C * dBp).real.sum(-1))
        return torch.stack(out)

    # ----------------------------------------------------------------- interface
    def _zero_state(self, batch_size, device, dtype) -> tuple[Tensor, Tensor]:
        (h,) = super()._zero_state(batch_size, device, dtype)
        return h, torch.zeros(batch_size, self.config.liquid_order - 1, self.d_model, device=device, dtype=dtype)

    @property
    def state_size(self) -> int:
        return self.d_model * (self.config.d_state + self.config.liquid_order - 1)

    def _step(self, x_t: Tensor, state, dt: Tensor | None):
        s = self.discrete_system()
        y, h, hist = self._cell(x_t, *state, s, self.liquid_coefficients(s))
        return self._post(y, x_t), (h, hist)

    def _forward(self, x: Tensor, state, call: ForwardCall):
        B, L, H = x.shape
        s = self.discrete_system()
        kappa = self.liquid_coefficients(s)
        h0, hist = (None, None) if state is None else state
        if call.mode == "reference":
            y, h, hist = self._reference(x, h0, hist, call, s, kappa)
            return self._post(y, x), (h, hist)
        y, h = diagonal_fft(x, h0, call.lengths, s, call.need_state)
        if hist is None:
            hist = x.new_zeros(B, self.config.liquid_order - 1, H)
        y = y + self._liquid(x, hist, kappa)
        if not call.need_state:
            return self._post(y, x), None
        n = torch.full((B,), L, device=x.device) if call.lengths is None else call.lengths
        return self._post(y, x), (h, conv_state_at(x, hist, n, self.config.liquid_order))

    # ----------------------------------------------------------------- pieces
    def _liquid(self, x: Tensor, hist: Tensor, kappa: Tensor) -> Tensor:
        """sum_p kappa_p prod_{j<p} u_{t-j} (B, L, H), the inputs before x taken from hist."""
        P, L = self.config.liquid_order, x.shape[1]
        ext = torch.cat([hist, x], 1)  # ext[:, i] = u_{i-(P-1)}
        prod, out = x, torch.zeros_like(x)
        for p in range(2, P + 1):
            prod = prod * ext[:, P - p : P - p + L]  # times u_{t-(p-1)}
            out = out + kappa[p - 2] * prod
        return out

    @staticmethod
    def _cell(x_t: Tensor, h: Tensor, hist: Tensor, s: DiagonalSystem, kappa: Tensor):
        """One token: x_t (B, H) -> (y_t before the head, h, hist)."""
        _, h = linear_scan_step(s.dA, s.dB * x_t[..., None], h)
        y, prod = (s.C * h).real.sum(-1), x_t
        P = hist.shape[1] + 1
        for p in range(2, P + 1):
            prod = prod * hist[:, P - p]  # hist[:, P-1-j] = u_{t-j}
            y = y + kappa[p - 2] * prod
        return y, h, torch.cat([hist[:, 1:], x_t[:, None]], 1)

    def _reference(self, x, h0, hist, call: ForwardCall, s, kappa):
        B, L, H = x.shape
        h, hist0 = self.init_state(B, x.device, x.dtype)
        h = h if h0 is None else h0
        hist = hist0 if hist is None else hist
        mask = call.real(L)
        ys = []
        for t in range(L):
            y_t, h_new, hist_new = self._cell(x[:, t], h, hist, s, kappa)
            if mask is not None:  # padded steps keep the state
                h = torch.where(mask[:, t, None, None], h_new, h)
                hist = torch.where(mask[:, t, None, None], hist_new, hist)
            else:
                h, hist = h_new, hist_new
            ys.append(y_t)
        return torch.stack(ys, 1), h, hist
