"""What S4D and DSS share: a diagonal LTI SSM per channel inside the S4D-style standalone layer.

Dimension legend: B batch, L length, D model width (= H channels), N complex modes, C chunk length.

A family only says how its parameters become the discrete diagonal system (``DiagonalSystem``)

    h_t = dA * h_{t-1} + dB * u_t,    y_t = Re(sum_n C_n h_t,n) + D u_t     (per channel)

and this base runs it in every mode (``_diagonal_ssm``, docs/math/s4d.md):

- ``fft``:       the Vandermonde kernel through ``long_conv`` mode fft, the state by a chunked
                 reversed Vandermonde contraction (``diagonal_fft``);
- ``chunked``:   the recurrence through ``linear_scan`` mode ``chunked``, C tokens per
                 call so that the states held at once are (B, C, H, N) (``diagonal_scan``);
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

from ..config import check
from ..core.discretize import discretize_diag
from ..ops.linear_scan import linear_scan_step
from ._complex_io import complex_dtype
from ._diagonal_ssm import DiagonalSystem, diagonal_fft, diagonal_scan
from .base import MixerConfig, SequenceMixer
from .call import ForwardCall


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
        check(n >= 2 and n % 2 == 0, "d_state",
              f"must be an even int >= 2 (N/2 complex conjugate pairs), got {n!r}")
        check(self.dt_min > 0, "dt_min", f"must be > 0, got {self.dt_min}")
        check(self.dt_max >= self.dt_min, "dt_max", f"must be >= dt_min={self.dt_min}, got {self.dt_max}")
        check(0.0 <= self.dropout < 1.0, "dropout", f"must be in [0, 1), got {self.dropout}")
        check(self.ssm_lr is None or self.ssm_lr > 0, "ssm_lr", f"must be None or > 0, got {self.ssm_lr}")
        check(self.scan_chunk >= 1, "scan_chunk", f"must be an int >= 1, got {self.scan_chunk!r}")


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
    cp_state = ("diag",)  # context parallelism: the diagonal SSM state (docs/distributed.md)

    modes = ("fft", "chunked", "reference")  # long_conv's fft, then linear_scan's modes
    dt_modes = ("chunked", "reference")  # fft needs one step for every token (an LTI kernel)
    # the scans reset at a document start (its decay zeroed); the fft's kernel spans the whole row
    packed_modes = ("chunked", "reference")
    config: DiagonalLTIConfig

    def __init__(self, d_model: int, mode: str = "auto", **cfg) -> None:
        super().__init__(d_model, mode, **cfg)
        H = d_model
        self.D = nn.Parameter(torch.randn(H))  # skip connection, as in the S4D code
        self.activation = nn.GELU()
        self.dropout = nn.Dropout(self.config.dropout)
        self.output_linear = nn.Linear(H, 2 * H)

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
    def _zero_state(self, batch_size, device, dtype):
        return (torch.zeros(batch_size, self.d_model, self.config.d_state // 2, dtype=complex_dtype(dtype),
                            device=device),)

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

    def _step(self, x_t: Tensor, state: tuple[Tensor], dt: Tensor | None) -> tuple[Tensor, tuple[Tensor]]:
        s = self.discrete_system() if dt is None else self.discrete_system_at(dt)  # (H, N) or (B, H, N)
        _, h = linear_scan_step(s.dA, s.dB * x_t[..., None], state[0])  # (B, H, N)
        return self.output_block(h, x_t, s.C), (h,)

    def _forward(self, x: Tensor, state: tuple[Tensor] | None, call: ForwardCall) -> tuple[Tensor, tuple[Tensor] | None]:
        h0 = None if state is None else state[0]
        chunk = self.config.scan_chunk if call.mode == "chunked" else x.shape[1]
        if call.dt is not None:  # the base allows only dt_modes here
            # each piece discretized per token (B, c, H, N): the time-varying decays never exist
            # for the whole length at once
            cs = self.continuous_system()
            y, h = diagonal_scan(x, h0, call, cs.C, chunk,
                                 lambda t0, u: _time_varying_terms(cs, call.dt[:, t0:t0 + u.shape[1]], u))
        else:
            s = self.discrete_system()
            if call.mode == "fft":
                y, h = diagonal_fft(x, h0, call.lengths, s, call.need_state)
            else:
                y, h = diagonal_scan(x, h0, call, s.C, chunk, lambda t0, u: (s.dA, s.dB * u))
        return self._post(y, x), (h,) if call.need_state else None
