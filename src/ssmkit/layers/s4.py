"""S4: Gu, Goel, Re 2022, "Efficiently Modeling Long Sequences with Structured State Spaces".

Per channel h (H = D channels) an N-dim real SSM, held in the eigenbasis of the normal part of
its HiPPO initialization as N/2 complex modes (each mode's conjugate implicit) plus a rank-R term:

    A = diag(Lambda) - P^T conj(P),  Lambda = -exp(log_A_real) + i A_imag,  dt = exp(log_dt)
    (dA, dB) = bilinear(A, B, dt),   h_t = dA h_{t-1} + dB u_t,   y_t = 2 Re(C h_t) + D u_t

followed by GELU, dropout and Linear(D, 2D) + GLU (the S4 standalone layer). Lambda, P, B come in
``n_ssm`` copies tiled over the channels (copy h mod n_ssm); C, dt, D are per channel.

The low-rank term couples each mode with its conjugate, so dA acts real-linearly on the stored
half h: every dense computation works on r = [Re h; Im h] in R^N, where A is a real (N, N) matrix
(docs/math/s4.md). Modes:

- ``fft``:       K = dplr_kernel(Lambda, P, P, B, C~, dt, L) (Cauchy + Woodbury + inverse FFT) with
                 C~ = C (I - dA^L) recomputed at each call from the trainable C (log2 L squarings
                 of the dense dA: O(H N^3 log L)), then ``long_conv`` mode fft. The initial-state
                 term C dA^{t+1} h0 and the final state come from chunked Krylov matrices
                 ([c; c dA; ...] and [dB, dA dB, ...], C columns) contracted as matmuls and
                 combined over chunks with dA^C, dA^2C, ... (``core.krylov``).
- ``reference``: the recurrence on the dense dA, token by token (also what ``step`` runs).
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple

import torch
from torch import Tensor, nn

from ..config import check
from ..core.cauchy import dplr_kernel
from ..core.hippo import dplr, low_rank
from ..core.init import dt_init
from ..core.krylov import MatrixPowers, reversed_input_state, zero_input_response
from ..core.precision import float32_core
from ..ops.long_conv import long_conv
from ._complex_io import complex_dtype
from .base import MixerConfig, SequenceMixer, tag_ssm_param
from .call import ForwardCall
from .registry import register_mixer

# HiPPO measures whose normal part has N/2 eigenvalues with Im > 0 and their conjugates (fout has
# eigenvalues 0, which the conjugate-pair layout cannot hold).
MEASURES = ("legs", "legt", "lagt")
_MAX_RE = -1e-4  # legt / lagt eigenvalues have Re = 0: clamp (as S4) so that log(-Re) exists
_CHUNK = 128  # C: Krylov columns per chunk of the fft-mode state computations


@dataclasses.dataclass
class S4Config(MixerConfig):
    d_state: int = 64  # N: real state size per channel; N/2 complex modes stored (conjugates implicit)
    n_ssm: int | None = None  # copies of (Lambda, P, B) tiled over the channels; None: one per channel
    measure: str = "legs"  # HiPPO measure of the DPLR initialization: "legs" | "legt" | "lagt"
    rank: int = 1  # R: rank of the low-rank term P (legt needs 2)
    dt_min: float = 1e-3  # smallest initial step dt (log-uniform on [dt_min, dt_max] per channel)
    dt_max: float = 1e-1  # largest initial step dt
    dropout: float = 0.0  # dropout after the GELU, before the output projection
    ssm_lr: float | None = 1e-3  # learning rate of Lambda, P, B and dt (None: the optimizer's default)

    def __post_init__(self) -> None:
        n = self.d_state
        check(n >= 2 and n % 2 == 0, "d_state",
              f"must be an even int >= 2 (N/2 complex conjugate pairs), got {n!r}")
        check(self.n_ssm is None or self.n_ssm >= 1, "n_ssm",
              f"must be None or an int >= 1, got {self.n_ssm!r}")
        check(self.measure in MEASURES, "measure", f"must be one of {MEASURES}, got {self.measure!r}")
        try:
            low_rank(self.measure, n, self.rank)
        except ValueError as e:
            check(False, "rank", str(e))
        check(self.dt_min > 0, "dt_min", f"must be > 0, got {self.dt_min}")
        check(self.dt_max >= self.dt_min, "dt_max", f"must be >= dt_min={self.dt_min}, got {self.dt_max}")
        check(0.0 <= self.dropout < 1.0, "dropout", f"must be in [0, 1), got {self.dropout}")
        check(self.ssm_lr is None or self.ssm_lr > 0, "ssm_lr", f"must be None or > 0, got {self.ssm_lr}")


class S4System(NamedTuple):
    """One call's system. Complex half-mode form (H, N/2) / (R, H, N/2) for the kernel; dense
    real form on r = [Re h; Im h] for everything else: dA (H, N, N), dB (H, N), c (H, N) with
    y = c . r = 2 Re(C h)."""

    Lambda: Tensor
    P: Tensor
    B: Tensor
    C: Tensor
    dt: Tensor
    dA: Tensor
    dB: Tensor
    c: Tensor


def _complex_diag(d: Tensor) -> Tensor:
    """The real (..., N, N) matrix of h -> d * h on r = [Re h; Im h], for d (..., N/2) complex."""
    re, im = torch.diag_embed(d.real), torch.diag_embed(d.imag)
    return torch.cat([torch.cat([re, -im], -1), torch.cat([im, re], -1)], -2)


def dense_real_form(Lambda: Tensor, P: Tensor, B: Tensor) -> tuple[Tensor, Tensor]:
    """(A (..., N, N), B (..., N)) real acting on r = [Re h; Im h] of the half-mode DPLR system.

    h' = Lambda h - 2 sum_r P_r Re(P_r^* h) + B u  (the conjugate half contributes conj(P_r^* h)).
    Lambda, B (..., N/2), P (R, ..., N/2) complex.
    """
    p = _to_real(P)  # (R, ..., N)
    A = _complex_diag(Lambda) - 2 * (p[..., :, None] * p[..., None, :]).sum(0)
    return A, _to_real(B)


def bilinear_real(Lambda: Tensor, P: Tensor, B: Tensor, dt: Tensor) -> tuple[Tensor, Tensor]:
    """Bilinear (dA (..., N, N), dB (..., N)) of ``dense_real_form`` by Woodbury, without a solve.

    M = I - dt/2 A = D + U V with D = complex_diag(1 - dt Lambda / 2), U = dt p, V = p^T
    (p = [Re P; Im P] as columns); M^{-1} = D^{-1} - D^{-1} U (I_R + V D^{-1} U)^{-1} V D^{-1},
    and since I + dt/2 A = 2 I - M:  dA = 2 M^{-1} - I,  dB = dt M^{-1} B.
    """
    dt = dt[..., None]
    Dinv = _complex_diag(1 / (1 - dt * Lambda / 2))  # (..., N, N)
    p = _to_real(P).movedim(0, -1)  # (..., N, R)
    DU = Dinv @ (dt[..., None] * p)  # (..., N, R)
    VD = p.transpose(-1, -2) @ Dinv  # (..., R, N)
    eye_r = torch.eye(p.shape[-1], dtype=p.dtype, device=p.device)
    Minv = Dinv - DU @ torch.linalg.solve(eye_r + VD @ (dt[..., None] * p), VD)
    eye = torch.eye(Minv.shape[-1], dtype=p.dtype, device=p.device)
    return 2 * Minv - eye, dt * (Minv @ _to_real(B)[..., None])[..., 0]


def _dense_step(s: S4System, r: Tensor, x_t: Tensor) -> Tensor:
    """One step of the recurrence on r = [Re h; Im h]: dA r + dB x_t, r (B, H, N), x_t (B, H)."""
    return (s.dA @ r[..., None])[..., 0] + s.dB * x_t[..., None]


def _to_real(h: Tensor) -> Tensor:
    return torch.cat([h.real, h.imag], -1)


def _to_complex(r: Tensor) -> Tensor:
    n = r.shape[-1] // 2
    return torch.complex(r[..., :n], r[..., n:])


@register_mixer("s4")
class S4(SequenceMixer):
    """S4 (DPLR) layer (B, L, D) -> (B, L, D); state (h,) with h (B, H, N/2) complex."""
    cp_state = ("dense",)  # DPLR: A = Lambda - P Q* mixes the N/2 modes of a channel (docs/distributed.md)

    Config = S4Config
    config: S4Config
    modes = ("fft", "reference")

    def __init__(self, d_model: int, mode: str = "auto", **cfg) -> None:
        super().__init__(d_model, mode, **cfg)
        c, H = self.config, d_model
        n = c.n_ssm or H
        check(H % n == 0, "n_ssm", f"must divide d_model={H}, got {n}")
        dtype = torch.get_default_dtype()
        Nh = c.d_state // 2
        Lam, P, B, _ = dplr(c.measure, c.d_state, c.rank)
        Lam, P, B = Lam[:Nh], P[:, :Nh], B[:Nh]  # Im Lambda > 0 half; Lambda[Nh:] are the conjugates

        def ssm(t: Tensor, lr: float | None = c.ssm_lr) -> nn.Parameter:
            return tag_ssm_param(nn.Parameter(t.to(dtype).contiguous()), lr)

        self.log_A_real = ssm(torch.log(-Lam.real.clamp(max=_MAX_RE)).expand(n, Nh))
        self.A_imag = ssm(Lam.imag.expand(n, Nh))
        self.P = ssm(torch.view_as_real(P)[:, None].expand(-1, n, -1, -1))  # (R, n, N/2, 2)
        self.B = ssm(torch.view_as_real(B).expand(n, -1, -1))  # (n, N/2, 2)
        self.log_dt = ssm(dt_init(H, c.dt_min, c.dt_max))
        # C ~ CN(0, 1) as in the S4 code; no weight decay, the model's own learning rate.
        self.C = ssm(torch.view_as_real(torch.randn(H, Nh, dtype=torch.complex64)), lr=None)
        self.D = nn.Parameter(torch.randn(H))  # skip connection, as in the S4 code
        self.activation = nn.GELU()
        self.dropout = nn.Dropout(c.dropout)
        self.output_linear = nn.Linear(H, 2 * H)

    # ----------------------------------------------------------------- system
    def system(self) -> S4System:
        """The continuous parameters tiled to H channels and their bilinear discretization."""
        H = self.d_model
        reps = H // self.log_A_real.shape[0]
        Lam = torch.complex(-torch.exp(self.log_A_real), self.A_imag).repeat(reps, 1)  # (H, N/2)
        P = torch.view_as_complex(self.P.contiguous()).repeat(1, reps, 1)  # (R, H, N/2)
        B = torch.view_as_complex(self.B.contiguous()).repeat(reps, 1)  # (H, N/2)
        C = torch.view_as_complex(self.C.contiguous())  # (H, N/2)
        dt = torch.exp(self.log_dt)
        dA, dB = bilinear_real(Lam, P, B, dt)
        return S4System(Lam, P, B, C, dt, dA, dB, 2 * torch.cat([C.real, -C.imag], -1))

    def kernel(self, L: int, s: S4System | None = None, pw: MatrixPowers | None = None) -> Tensor:
        """K (H, L) with K_l = 2 Re(C dA^l dB), through the DPLR generating function."""
        s = self.system() if s is None else s
        pw = MatrixPowers(s.dA) if pw is None else pw
        ct = s.c - pw.left(s.c, L)  # c (I - dA^L), real form; back to the complex half: C~ = (ct_re - i ct_im) / 2
        Nh = s.Lambda.shape[-1]
        Ct = torch.complex(ct[..., :Nh], -ct[..., Nh:]) / 2
        return dplr_kernel(s.Lambda, s.P, s.P, s.B, Ct, s.dt, L)

    # ----------------------------------------------------------------- interface
    def _zero_state(self, batch_size, device, dtype):
        return (torch.zeros(batch_size, self.d_model, self.config.d_state // 2, dtype=complex_dtype(dtype),
                            device=device),)

    @property
    def state_size(self) -> int:
        return self.d_model * self.config.d_state

    def _post(self, y: Tensor, u: Tensor) -> Tensor:
        y = self.dropout(self.activation(y + self.D * u))
        return nn.functional.glu(self.output_linear(y), dim=-1)

    def _step(self, x_t: Tensor, state, dt: Tensor | None):
        y, h = self._ssm_step(x_t, state[0])
        return self._post(y, x_t), (h,)

    def _forward(self, x: Tensor, state, call: ForwardCall):
        y, h = self._ssm(x, None if state is None else state[0], call)
        return self._post(y, x), (h,)

    # The SSM (kernel, convolution, state) runs in float32 under autocast; _post's projection may not.
    @float32_core
    def _ssm_step(self, x_t: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        s = self.system()
        r = _dense_step(s, _to_real(h), x_t)  # (B, H, N)
        return (s.c * r).sum(-1), _to_complex(r)

    @float32_core
    def _ssm(self, x: Tensor, h0: Tensor | None, call: ForwardCall) -> tuple[Tensor, Tensor]:
        s = self.system()
        r0 = None if h0 is None else _to_real(h0)
        if call.mode == "fft":
            y, r = self._forward_fft(x, r0, call.lengths, s)
        else:
            y, r = self._forward_reference(x, r0, call, s)
        return y, _to_complex(r)

    # ----------------------------------------------------------------- modes
    def _forward_reference(self, x: Tensor, r0: Tensor | None, call: ForwardCall, s: S4System):
        B, L, H = x.shape
        r = x.new_zeros(B, H, s.dA.shape[-1]) if r0 is None else r0
        mask = call.real(L)
        ys = []
        for t in range(L):
            r_new = _dense_step(s, r, x[:, t])
            # Padded steps are the identity on the state.
            r = r_new if mask is None else torch.where(mask[:, t, None, None], r_new, r)
            ys.append((s.c * r).sum(-1))
        return torch.stack(ys, 1), r

    def _forward_fft(self, x: Tensor, r0: Tensor | None, lengths: Tensor | None, s: S4System):
        B, L, H = x.shape
        pw = MatrixPowers(s.dA)
        y, _ = long_conv(x, self.kernel(L, s, pw), mode="fft")  # (B, L, H)
        C = min(_CHUNK, 1 << (L - 1).bit_length())
        # Final state: sum_s dA^s dB v_s with v_b[s] = u_b[len_b - 1 - s] (each row reversed).
        if lengths is None:
            v = x.flip(1)
        else:
            idx = lengths[:, None] - 1 - torch.arange(L, device=x.device)  # (B, L)
            v = x.gather(1, idx.clamp(min=0)[..., None].expand(B, L, H)) * (idx >= 0)[..., None]
        r = reversed_input_state(v, s.dB, pw, C)  # (B, H, N)
        if r0 is not None:
            # Final state term dA^{len_b} h0, per row through the binary expansion of len_b.
            n = L if lengths is None else lengths
            r = r + pw.apply(r0.permute(1, 2, 0), n).permute(2, 0, 1)
            y = y + zero_input_response(s.c, r0, pw, L, C)
        return y, r
