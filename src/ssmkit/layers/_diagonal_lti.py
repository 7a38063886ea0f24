"""What S4D and DSS share: a diagonal LTI SSM per channel inside the S4D-style standalone layer.

Dimension legend: B batch, L length, D model width (= H channels), N complex modes, C chunk length.

A family only says how its parameters become the discrete diagonal system (``DiagonalSystem``)

    h_t = dA * h_{t-1} + dB * u_t,    y_t = Re(sum_n C_n h_t,n) + D u_t     (per channel)

and this base runs it in every mode (docs/math/s4d.md):

- ``fft``:       y = K * u with K_l = Re(sum_n C_n dB_n dA_n^l) (core.vandermonde) through
                 ``long_conv`` mode fft; an incoming state adds Re(sum_n C_n dA_n^{t+1} h0_n); the
                 final state is dA^len h0 + dB * sum_t dA^{L-1-t} w_t with w the input, each row
                 right-aligned, a chunked matmul (``vandermonde_contract``), never (B, H, N, L);
- ``chunked``:   the recurrence through ``linear_scan`` mode ``chunked``, C tokens per
                 call so that the states held at once are (B, C, H, N);
- ``reference``: the recurrence through ``linear_scan`` mode ``reference`` over the whole sequence.

Then y -> Linear(D, 2D) -> GLU of dropout(GELU(y)), the S4D paper's standalone layer.

Irregular sampling (docs/irregular.md): a family that also gives its ``continuous_system``
(A, B, C, learned step, rule) accepts per-token time deltas dt (B, L): token t is discretized
with the step dt_t · Δ, so the system is no longer LTI and only the chunked / reference modes run it
(``dt_modes``). C stays the learned-step readout.
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple

import torch
from torch import Tensor, nn

from ..core.discretize import discretize_diag
from ..core.vandermonde import (
    initial_state_output,
    vandermonde_contract,
    vandermonde_kernel,
    vandermonde_powers,
)
from ..ops import linear_scan as linear_scan_op
from ..ops.long_conv import long_conv
from ..config import check
from .base import MixerConfig, SequenceMixer, lengths_mask


@dataclasses.dataclass
class DiagonalLTIConfig(MixerConfig):
    d_state: int = 64  # N: real state size per channel; N/2 complex modes (conjugate pairs folded)
    dt_min: float = 1e-3  # smallest initial step dt (dt log-uniform on [dt_min, dt_max] per channel)
    dt_max: float = 1e-1  # largest initial step dt
    dropout: float = 0.0  # dropout after the GELU, before the output projection
    ssm_lr: float | None = 1e-3  # learning rate of A and dt (None: the optimizer's default)
    scan_chunk: int = 256  # C: tokens per linear_scan call in "chunked" mode (memory O(B C H N))

    def __post_init__(self) -> None:
        n = self.d_state
        check(isinstance(n, int) and not isinstance(n, bool) and n >= 2 and n % 2 == 0, "d_state",
              f"must be an even int >= 2 (N/2 complex conjugate pairs), got {n!r}")
        check(self.dt_min > 0, "dt_min", f"must be > 0, got {self.dt_min}")
        check(self.dt_max >= self.dt_min, "dt_max", f"must be >= dt_min={self.dt_min}, got {self.dt_max}")
        check(0.0 <= self.dropout < 1.0, "dropout", f"must be in [0, 1), got {self.dropout}")
        check(self.ssm_lr is None or self.ssm_lr > 0, "ssm_lr", f"must be None or > 0, got {self.ssm_lr}")
        check(isinstance(self.scan_chunk, int) and self.scan_chunk >= 1, "scan_chunk",
              f"must be an int >= 1, got {self.scan_chunk!r}")


class DiagonalSystem(NamedTuple):
    """The discrete system, every field (H, N) complex; log_dA = log(dA) (kept exact for zoh)."""

    dA: Tensor
    log_dA: Tensor
    dB: Tensor
    C: Tensor


class ContinuousSystem(NamedTuple):
    """The continuous diagonal system behind ``DiagonalSystem``: A, B, C (H, N) complex, the learned
    step (H, 1) and the discretization rule ("zoh" | "bilinear") that maps them to (dA, dB)."""

    A: Tensor
    B: Tensor
    C: Tensor
    step: Tensor
    method: str


def real_to_complex(p: Tensor) -> Tensor:
    """A complex parameter stored as real (..., 2) (so that ``module.double()`` converts it)."""
    return torch.view_as_complex(p.contiguous())


def _discretize(c: ContinuousSystem, step: Tensor) -> DiagonalSystem:
    dA, dB = discretize_diag(c.A, c.B, step, c.method)
    # zoh: log dA = step A exactly; bilinear: dA = (1 + sA/2)/(1 - sA/2) is never 0 for Re A < 0.
    log_dA = step * c.A if c.method == "zoh" else torch.log(dA)
    return DiagonalSystem(dA, log_dA, dB, c.C)


def _time_varying_terms(c: ContinuousSystem, dt: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
    """dt (B, C), u (B, C, H, 1) -> (dA_t, dB_t u_t) (B, C, H, N) for the steps dt_t · Δ.

    The same rules as ``discretize_diag`` in fewer passes over the (B, C, H, N) slab (it is the
    cost of the dt path): zoh as expm1(sA) · (B / A) u, exact for A != 0 (Re A < 0 in these
    families; an A that underflowed to 0 takes discretize_diag's limit instead).
    """
    step = dt[..., None, None] * c.step  # (B, C, H, 1)
    if c.method == "zoh" and not bool((c.A == 0).any()):
        sA = step * c.A
        return torch.exp(sA), torch.expm1(sA) * ((c.B / c.A) * u)
    dA, dB = discretize_diag(c.A, c.B, step, c.method)
    return dA, dB * u


class DiagonalLTI(SequenceMixer):
    """Base of the diagonal LTI families; subclasses implement ``discrete_system``."""

    modes = ("fft", "chunked", "reference")  # long_conv's fft, then linear_scan's modes
    final_state_optional = True  # fft mode skips the state contraction when no one asks for it
    config: DiagonalLTIConfig

    def __init__(self, d_model: int, mode: str = "auto", **cfg) -> None:
        super().__init__(d_model, mode, **cfg)
        H = d_model
        self.D = nn.Parameter(torch.randn(H))  # skip connection, as in the S4D code
        self.activation = nn.GELU()
        self.dropout = nn.Dropout(self.config.dropout)
        self.output_linear = nn.Linear(H, 2 * H)

    dt_modes = ("chunked", "reference")  # fft needs one step for every token (an LTI kernel)

    def continuous_system(self) -> ContinuousSystem:
        """(A, B, C, learned step, rule); a family gives this (and gets ``discrete_system`` from it)
        or overrides ``discrete_system`` alone, in which case it takes no dt."""
        raise NotImplementedError(f"{type(self).__name__} defines neither continuous_system() nor discrete_system()")

    def discrete_system(self) -> DiagonalSystem:
        """The discrete system at the learned step, every field (H, N)."""
        c = self.continuous_system()
        return _discretize(c, c.step)

    def discrete_system_at(self, dt: Tensor) -> DiagonalSystem:
        """The system discretized with step dt · Δ: dt (...) -> dA, log_dA, dB (..., H, N); C (H, N).

        dt = 1 gives ``discrete_system()``'s values (1 · Δ is Δ exactly, then the same rule).
        """
        c = self.continuous_system()
        return _discretize(c, dt[..., None, None] * c.step)  # step (..., H, 1)

    # ----------------------------------------------------------------- interface
    def init_state(
        self, batch_size: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> tuple[Tensor]:
        cdtype = torch.promote_types(dtype or self.D.dtype, torch.complex64)  # float64 -> complex128
        return (torch.zeros(batch_size, self.d_model, self.config.d_state // 2, dtype=cdtype,
                            device=device or self.D.device),)

    @property
    def state_size(self) -> int:
        return self.d_model * self.config.d_state

    def output_block(self, h: Tensor, x: Tensor, C: Tensor | None = None) -> Tensor:
        """The layer's output from its state and input, instantaneous in both (training.online reads
        it): h (B, H, N) complex, x (B, H) -> (B, H); C the system's readout (default: the current one)."""
        C = self.discrete_system().C if C is None else C
        return self._post((C * h).real.sum(-1), x)

    def _post(self, y: Tensor, u: Tensor) -> Tensor:
        y = self.dropout(self.activation(y + self.D * u))
        return nn.functional.glu(self.output_linear(y), dim=-1)

    def _step(self, x_t: Tensor, state: tuple[Tensor], dt: Tensor | None = None) -> tuple[Tensor, tuple[Tensor]]:
        s = self.discrete_system() if dt is None else self.discrete_system_at(dt)  # (H, N) or (B, H, N)
        h = s.dA * state[0] + s.dB * x_t[..., None]  # (B, H, N)
        return self.output_block(h, x_t, s.C), (h,)

    def _forward(
        self, x: Tensor, state: tuple[Tensor] | None, lengths: Tensor | None, mode: str, need_state: bool,
        dt: Tensor | None = None,
    ) -> tuple[Tensor, tuple[Tensor] | None]:
        h0 = None if state is None else state[0]
        if dt is not None:  # the base allows only dt_modes here
            chunk = self.config.scan_chunk if mode == "chunked" else x.shape[1]
            y, h = self._forward_scan(x, h0, lengths, None, chunk, mode, dt)
            return self._post(y, x), (h,) if need_state else None
        s = self.discrete_system()
        if mode == "fft":
            y, h = self._forward_fft(x, h0, lengths, s, need_state)
        else:
            chunk = self.config.scan_chunk if mode == "chunked" else x.shape[1]
            y, h = self._forward_scan(x, h0, lengths, s, chunk, mode)
        return self._post(y, x), (h,) if need_state else None

    # ----------------------------------------------------------------- modes
    def _forward_fft(
        self, x: Tensor, h0: Tensor | None, lengths: Tensor | None, s: DiagonalSystem, need_state: bool
    ) -> tuple[Tensor, Tensor | None]:
        B, L, H = x.shape
        # Time-major copy (B, H, L), made once: long_conv's FFT and the state contraction both
        # run along time, and its (B, L, H) view hands long_conv contiguous rows.
        xt = x.transpose(1, 2).contiguous()
        powers = vandermonde_powers(s.dA, L, s.log_dA)  # shared by the three contractions
        K = vandermonde_kernel(s.C * s.dB, s.dA, L, powers=powers)  # (H, L)
        y, _ = long_conv(xt.transpose(1, 2), K, mode="fft")  # (B, L, H)
        if h0 is not None:
            y = y + initial_state_output(s.C, h0, s.dA, L, powers=powers).transpose(1, 2)
        if not need_state:
            return y, None
        # Final state after len_b tokens: sum_t dA^{L-1-t} dB w_t with row b right-aligned in w
        # (its last real token at L-1), so that every row uses the same powers.
        if lengths is None:
            w, n = xt, torch.full((B,), L, device=x.device)
        else:
            idx = torch.arange(L, device=x.device) - (L - lengths[:, None])  # (B, L)
            w = xt.gather(2, idx.clamp(min=0)[:, None, :].expand(B, H, L)) * (idx >= 0)[:, None, :]
            n = lengths
        h = s.dB * vandermonde_contract(w, s.dA, powers=powers, reverse=True)  # (B, H, N)
        if h0 is not None:
            h = h + torch.exp(n.to(x.dtype)[:, None, None] * s.log_dA) * h0
        return y, h

    def _forward_scan(
        self, x: Tensor, h0: Tensor | None, lengths: Tensor | None, s: DiagonalSystem | None, chunk: int,
        mode: str, dt: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """The recurrence C tokens at a time; with dt (B, L) the system of each chunk is discretized
        per token (B, C, H, N), so the time-varying decays never exist for the whole length."""
        B, L, H = x.shape
        mask = None if lengths is None else lengths_mask(lengths, L)
        cs = None if dt is None else self.continuous_system()
        C = s.C if dt is None else cs.C
        h, ys = h0, []
        for t0 in range(0, L, chunk):
            u = x[:, t0:t0 + chunk, :, None]  # (B, C, H, 1)
            if dt is not None:
                a, b = _time_varying_terms(cs, dt[:, t0:t0 + chunk], u)  # (B, C, H, N) each
            else:
                a, b = s.dA, s.dB * u  # (H, N), (B, C, H, N)
            if mask is not None:
                # Padded steps are the identity: decay 1, input 0.
                m = mask[:, t0:t0 + chunk, None, None]
                a = torch.where(m, a, torch.ones_like(a))
                b = b * m
            hs, h = linear_scan_op.linear_scan(a, b, h, mode=mode)
            ys.append((C * hs).real.sum(-1))  # (B, C, H)
        return torch.cat(ys, dim=1), h
