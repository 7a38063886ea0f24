"""H3: Hungry Hungry Hippos (Fu, Dao, Saab, Thomas, Rudra, Ré 2023, "Hungry Hungry Hippos:
Towards Language Modeling with State Space Models"), the multi-head layer of its Sec. 3.

    q, k, v = W_q x, W_k x, W_v x                                      (B, L, D), H = D / P heads
    k̄_t     = SSM_shift(k)_t = Σ_{l<S} c_l k_{t-l} + d ⊙ k_t            shift SSM: A = shift matrix,
                                                                       B = e_1, so its kernel is c (S taps)
    per head, for the P x P outer product kv_t = k̄_t v_tᵀ, every entry through one diagonal SSM:
    s_t = dA s_{t-1} + dB kv_t,   o_t = 2 Re(C s_t) + D kv_t           S4D (zoh), N/2 complex modes
    y_t = q_tᵀ o_t  (per head, sums over the key index),   out = W_o y

so out = W_o (Q ⊙ SSM_diag(SSM_shift(K) ⊙ V)) for P = 1 (the paper's code default, head_dim=1).
Modes: ``fft`` (the shift kernel and the diagonal kernel K_l = 2 Re(Σ C dB dA^l), from
core.vandermonde, applied by FFT convolution; incoming state through its zero-input response,
final state by the chunked reversed Vandermonde contraction) and ``reference`` (the shift FIR
tap by tap and the diagonal recurrence by a loop). The state is (shift_state (B, S-1, D): the last
S-1 keys, ssm_state (B, H, P, P, N/2) complex). Derivation: docs/math/h3.md.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from ..config import check
from ..core.discretize import discretize_diag
from ..core.init import S4D_KINDS, dt_init, s4d_init
from ..ops.linear_scan import linear_scan_step
from ..ops.long_conv import long_conv, long_conv_step
from ..ops.short_conv import conv_state_at
from ._complex_io import complex_dtype
from ._diagonal_lti import real_to_complex
from ._diagonal_ssm import DiagonalSystem, diagonal_fft, diagonal_scan
from .base import MixerConfig, SequenceMixer, tag_ssm_param
from .call import ForwardCall
from .registry import register_mixer


@dataclasses.dataclass
class H3Config(MixerConfig):
    d_state: int = 64  # N: real state size of the diagonal SSM per entry (N/2 complex modes)
    d_shift: int = 64  # S: state size of the shift SSM = taps of its kernel (the H3 code uses d_state)
    head_dim: int = 1  # P: H = D / P heads, each with a P x P outer-product memory
    init: str = "lin"  # S4D init of the diagonal A: "legs" | "inv" | "lin" | "real"
    dt_min: float = 1e-3  # dt log-uniform on [dt_min, dt_max] per head
    dt_max: float = 1e-1
    ssm_lr: float | None = 1e-3  # learning rate of A and dt (None: the optimizer's)

    def __post_init__(self) -> None:
        for name in ("d_shift", "head_dim"):
            v = getattr(self, name)
            check(v >= 1, name, f"must be an int >= 1, got {v!r}")
        n = self.d_state
        check(n >= 2 and n % 2 == 0, "d_state",
              f"must be an even int >= 2 (N/2 complex conjugate pairs), got {n!r}")
        check(self.init in S4D_KINDS, "init", f"must be one of {S4D_KINDS}, got {self.init!r}")
        check(0 < self.dt_min <= self.dt_max, "dt_min", f"need 0 < dt_min <= dt_max, got {self.dt_min}, {self.dt_max}")
        check(self.ssm_lr is None or self.ssm_lr > 0, "ssm_lr", f"must be None or > 0, got {self.ssm_lr}")


@register_mixer("h3")
class H3(SequenceMixer):
    """H3 layer (B, L, D) -> (B, L, D). Modes: ``fft``, ``reference``."""
    cp_state = ("halo", "diag")  # the shift SSM holds the last inputs; the diagonal SSM

    Config = H3Config
    modes = ("fft", "reference")

    def __init__(self, d_model: int, mode: str = "auto", **cfg) -> None:
        super().__init__(d_model, mode, **cfg)
        c = self.config
        check(d_model % c.head_dim == 0, "head_dim", f"must divide d_model={d_model}, got {c.head_dim}")
        H, Nh, dtype = d_model // c.head_dim, c.d_state // 2, torch.get_default_dtype()
        self.n_heads = H
        self.q_proj, self.k_proj, self.v_proj = (nn.Linear(d_model, d_model) for _ in range(3))
        # Shift SSM: kernel taps c_l (lag l) and skip d, as the H3 code (C ~ N(0, 1), D ~ N(0, 1)).
        self.shift_C = tag_ssm_param(nn.Parameter(torch.randn(d_model, c.d_shift)))
        self.shift_D = nn.Parameter(torch.randn(d_model))
        A = s4d_init(c.init, Nh).expand(H, Nh)
        self.log_dt = tag_ssm_param(nn.Parameter(dt_init(H, c.dt_min, c.dt_max).to(dtype)), c.ssm_lr)
        self.log_A_real = tag_ssm_param(nn.Parameter(torch.log(-A.real).to(dtype)), c.ssm_lr)
        self.A_imag = tag_ssm_param(nn.Parameter(A.imag.to(dtype)), c.ssm_lr)
        self.C = tag_ssm_param(nn.Parameter(torch.view_as_real(torch.randn(H, Nh, dtype=torch.complex64)).to(dtype)))
        self.D = nn.Parameter(torch.randn(H))
        self.output_linear = nn.Linear(d_model, d_model)

    # ----------------------------------------------------------------- the two SSMs
    def shift_kernel(self) -> Tensor:
        """(D, S): tap l multiplies k_{t-l}; the skip d joins tap 0."""
        return torch.cat([self.shift_C[:, :1] + self.shift_D[:, None], self.shift_C[:, 1:]], dim=1)

    def discrete_system(self) -> DiagonalSystem:
        """The diagonal SSM per head, (H, N/2) complex; C already doubled for the implicit conjugates."""
        dt = torch.exp(self.log_dt)[:, None]
        A = torch.complex(-torch.exp(self.log_A_real), self.A_imag)
        dA, dB = discretize_diag(A, torch.ones_like(A), dt, "zoh")
        return DiagonalSystem(dA, dt * A, dB, 2 * real_to_complex(self.C))

    def _qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return self.q_proj(x), self.k_proj(x), self.v_proj(x)

    def _outer(self, kbar: Tensor, v: Tensor) -> Tensor:
        """(..., D), (..., D) -> the per-head outer products (..., H, P, P)."""
        P = self.config.head_dim
        return kbar.unflatten(-1, (-1, P))[..., :, None] * v.unflatten(-1, (-1, P))[..., None, :]

    def _readout(self, q: Tensor, o: Tensor) -> Tensor:
        """q (..., D), o (..., H, P, P) -> W_o of q_hᵀ o_h (sum over the key index)."""
        y = (q.unflatten(-1, (-1, self.config.head_dim))[..., None] * o).sum(-2)
        return self.output_linear(y.flatten(-2))

    # ----------------------------------------------------------------- forward / step
    def _forward(self, x: Tensor, state, call: ForwardCall):
        B, L, D = x.shape
        P, H = self.config.head_dim, self.n_heads
        q, k, v = self._qkv(x)
        shift_state, s0 = (None, None) if state is None else state
        kbar, shift_final = long_conv(k, self.shift_kernel(), shift_state, mode=call.mode)
        if call.lengths is not None:
            shift_final = conv_state_at(k, shift_state, call.lengths, self.config.d_shift)
        kv = self._outer(kbar, v)  # (B, L, H, P, P)
        # Fold the P x P entries into the batch: every entry is one more sequence for the same SSM.
        u = kv.permute(0, 3, 4, 1, 2).reshape(B * P * P, L, H)
        h0 = None if s0 is None else s0.permute(0, 2, 3, 1, 4).reshape(B * P * P, H, -1)
        n = None if call.lengths is None else call.lengths.repeat_interleave(P * P)
        sys = self.discrete_system()
        if call.mode == "fft":
            y, h = diagonal_fft(u, h0, n, sys)
        else:  # the recurrence: linear_scan's reference loop over the whole sequence
            y, h = diagonal_scan(u, h0, ForwardCall("reference", n), sys.C, L, lambda t0, ui: (sys.dA, sys.dB * ui))
        o = y.reshape(B, P, P, L, H).permute(0, 3, 4, 1, 2) + self.D[:, None, None] * kv
        h = h.reshape(B, P, P, H, -1).permute(0, 3, 1, 2, 4)  # (B, H, P, P, N/2)
        return self._readout(q, o), (shift_final, h)

    def _step(self, x_t: Tensor, state, dt: Tensor | None):
        shift_state, s = state  # s (B, H, P, P, N/2)
        q, k, v = self._qkv(x_t)
        kbar, shift_state = long_conv_step(k, self.shift_kernel(), shift_state)
        kv = self._outer(kbar, v)  # (B, H, P, P)
        sys = self.discrete_system()
        dA, dB, C = (t[:, None, None, :] for t in (sys.dA, sys.dB, sys.C))  # (H, 1, 1, N/2)
        _, s = linear_scan_step(dA, dB * kv[..., None], s)
        o = (C * s).real.sum(-1) + self.D[:, None, None] * kv
        return self._readout(q, o), (shift_state, s)

    def _zero_state(self, batch_size, device, dtype):
        c, P = self.config, self.config.head_dim
        return (torch.zeros(batch_size, c.d_shift - 1, self.d_model, dtype=dtype, device=device),
                torch.zeros(batch_size, self.n_heads, P, P, c.d_state // 2, dtype=complex_dtype(dtype), device=device))

    @property
    def state_size(self) -> int:
        c = self.config
        return (c.d_shift - 1) * self.d_model + self.n_heads * c.head_dim**2 * c.d_state

