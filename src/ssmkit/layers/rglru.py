"""RG-LRU: the recurrent block of Griffin / Hawk (De et al. 2024, "Griffin: Mixing Gated Linear
Recurrences with Local Attention for Efficient Language Models"), Fig. 2 and Sec. 2.4.

    g   = GeLU(W_y x)                                   gate branch (tanh GeLU, as the paper's code)
    u   = causal_depthwise_conv(W_x' x)                 kernel 4 (with bias), width W = D_RNN
    r_t = σ(W_a u_t + b_a),   i_t = σ(W_x u_t + b_x)     W_a, W_x block-diagonal (num_heads blocks)
    log a_t = c r_t log σ(Λ)                            a_t = a^{c r_t}, a = σ(Λ), c = 8
    h_t = a_t ⊙ h_{t-1} + sqrt(1 - a_t²) ⊙ (i_t ⊙ u_t)
    out = W_out (g ⊙ h)

Λ starts with a^c uniform on [a_min, a_max] = [0.9, 0.999] (paper Sec. 2.4; the released code
puts a itself on that ring instead). sqrt(1 - a_t²) is computed as sqrt(-expm1(2 log a_t)),
exact near a_t = 1. Modes: ops.linear_scan's, ``chunked`` and ``reference`` (its loop).
Padded steps get a_t = 1 and input 0. The state is (conv_state (B, 3, W), h (B, W)).

``reset_at_start`` (off by default; the RecurrentGemma loader turns it on) applies the rule of the
official Griffin / RecurrentGemma code at the first token of a sequence: a_t = 0 and no
sqrt(1 - a_t²) factor, so h_t = i_t ⊙ u_t. The first token is the first real token after
``init_state`` (or with no state), in every mode and in ``step``, so the state then carries a third
tensor, ``started`` (B,): 0 until a row has seen a token, 1 after. The rule takes a (B, L) mask of
start positions (``_recurrence_inputs``), so the starts of packed documents are more True entries.
Derivation and the normalization argument: docs/math/rglru.md.
"""
from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import check
from ..ops import linear_scan as linear_scan_op
from ..ops.linear_scan import linear_scan, linear_scan_step
from ..ops.short_conv import conv_state_at, short_conv, short_conv_step
from ._block_diagonal import BlockDiagonalLinear
from .base import MixerConfig, SequenceMixer, tag_ssm_param
from .call import ForwardCall
from .registry import register_mixer

@dataclasses.dataclass
class RGLRUConfig(MixerConfig):
    lru_width: int | None = None  # W = D_RNN; None: 4D/3 rounded up to a multiple of num_heads
    num_heads: int = 4  # diagonal blocks of the gate weights W_a and W_x
    conv_kernel: int = 4  # temporal convolution before the RG-LRU
    c: float = 8.0  # the constant c of a_t = a^(c r_t)
    a_min: float = 0.9  # at init a^c is uniform on [a_min, a_max]
    a_max: float = 0.999
    ssm_lr: float | None = None  # learning rate of Λ and the gate weights (None: the optimizer's)
    reset_at_start: bool = False  # RecurrentGemma's first-token rule: a = 0, no sqrt(1 - a²) factor

    def __post_init__(self) -> None:
        for name in ("num_heads", "conv_kernel"):
            v = getattr(self, name)
            check(v >= 1, name, f"must be an int >= 1, got {v!r}")
        w = self.lru_width
        check(w is None or w >= 1, "lru_width", f"must be None or an int >= 1, got {w!r}")
        check(w is None or w % self.num_heads == 0, "lru_width",
              f"must be divisible by num_heads={self.num_heads}, got {w}")
        check(self.c > 0, "c", f"must be > 0, got {self.c}")
        check(0.0 < self.a_min < self.a_max < 1.0, "a_min", f"need 0 < a_min < a_max < 1, got {self.a_min}, {self.a_max}")
        check(self.ssm_lr is None or self.ssm_lr > 0, "ssm_lr", f"must be None or > 0, got {self.ssm_lr}")


def rglru_lambda_init(W: int, c: float, a_min: float, a_max: float) -> Tensor:
    """Λ (W,) float64 with σ(Λ)^c uniform on [a_min, a_max]: Λ = logit(u^(1/c))."""
    log_a = torch.log(torch.empty(W, dtype=torch.float64).uniform_(a_min, a_max)) / c
    return log_a - torch.log(-torch.expm1(log_a))


@register_mixer("rglru")
class RGLRU(SequenceMixer):
    """Griffin's recurrent block (B, L, D) -> (B, L, D). Modes: ``chunked`` (linear scan), ``reference``."""
    cp_state = ("halo", "diag")  # context parallelism: conv window, the gated diagonal recurrence

    Config = RGLRUConfig
    modes = linear_scan_op.MODES
    packed_modes = ("chunked", "reference")  # the conv window and the decay reset at a document start

    def __init__(self, d_model: int, mode: str = "auto", **cfg) -> None:
        super().__init__(d_model, mode, **cfg)
        c = self.config
        H = c.num_heads
        W = c.lru_width or H * math.ceil(4 * d_model / (3 * H))
        self.lru_width = W
        self.linear_y = nn.Linear(d_model, W)
        self.linear_x = nn.Linear(d_model, W)
        self.conv1d = nn.Conv1d(W, W, c.conv_kernel, groups=W, padding=c.conv_kernel - 1)
        self.gate_a = BlockDiagonalLinear(W, H, bias=True)
        self.gate_x = BlockDiagonalLinear(W, H, bias=True)
        with torch.no_grad():  # LeCun normal per block, zero biases (the paper's code)
            for g in (self.gate_a, self.gate_x):
                g.weight.normal_(0.0, 1 / math.sqrt(W // H))
        dtype = torch.get_default_dtype()
        self.a_param = nn.Parameter(rglru_lambda_init(W, c.c, c.a_min, c.a_max).to(dtype))  # Λ
        self.linear_out = nn.Linear(W, d_model)
        for p in (self.a_param, *self.gate_a.parameters(), *self.gate_x.parameters()):
            tag_ssm_param(p, lr=c.ssm_lr)

    def _recurrence_inputs(self, u: Tensor, start: Tensor | None) -> tuple[Tensor, Tensor]:
        """u (..., W) the conv output -> (a_t, sqrt(1 - a_t²) i_t u_t), both (..., W).

        ``start`` (..., 1) bool marks the tokens that begin a sequence (``reset_at_start``): there
        a_t = 0 and the input is i_t u_t, unscaled. None: no token starts one."""
        r, i = torch.sigmoid(self.gate_a(u)), torch.sigmoid(self.gate_x(u))
        log_a = self.config.c * r * F.logsigmoid(self.a_param)
        a, gated = torch.exp(log_a), i * u
        b = torch.sqrt(-torch.expm1(2 * log_a)) * gated
        if start is None:
            return a, b
        return torch.where(start, 0.0, a), torch.where(start, gated, b)

    def _forward(self, x: Tensor, state, call: ForwardCall):
        B, L, _ = x.shape
        g = F.gelu(self.linear_y(x), approximate="tanh")
        xb = self.linear_x(x)
        conv_state, h0 = (None, None) if state is None else state[:2]
        started = None if state is None or not self.config.reset_at_start else state[2]
        u, conv_final = short_conv(xb, self.conv1d.weight[:, 0, :], self.conv1d.bias, conv_state,
                                   starts=call.starts)
        if call.lengths is not None:
            conv_final = conv_state_at(xb, conv_state, call.lengths, self.config.conv_kernel)
        start = None
        if self.config.reset_at_start:
            # a row starts at its first token when it has seen none (right-padded: t = 0 is real
            # unless the row is empty, and an empty row's pads are identities below)
            fresh = torch.ones(B, dtype=torch.bool, device=x.device) if started is None else started == 0
            start = torch.zeros(B, L, 1, dtype=torch.bool, device=x.device)
            start[:, 0, 0] = fresh
            if call.starts is not None:  # every document of a packed row starts a sequence
                start = start | call.starts[..., None]
        a, b = self._recurrence_inputs(u, start)
        a = call.zero_starts(a)  # a packed row: the state is dropped at each document start
        # padded steps are identities: a = 1, input 0
        h, h_last = linear_scan(call.one_pads(a), call.zero_pads(b), h0, mode=call.mode)
        final = (conv_final, h_last)
        if self.config.reset_at_start:
            seen = x.new_ones(B) if call.lengths is None else (call.lengths > 0).to(x.dtype)
            final += (seen if started is None else torch.maximum(started, seen),)
        return self.linear_out(g * h), final

    def _step(self, x_t: Tensor, state, dt: Tensor | None):
        conv_state, h = state[:2]
        g = F.gelu(self.linear_y(x_t), approximate="tanh")
        u, conv_state = short_conv_step(self.linear_x(x_t), self.conv1d.weight[:, 0, :], self.conv1d.bias, conv_state)
        start = (state[2] == 0)[:, None] if self.config.reset_at_start else None
        _, h = linear_scan_step(*self._recurrence_inputs(u, start), h)
        new = (conv_state, h) + ((torch.ones_like(state[2]),) if self.config.reset_at_start else ())
        return self.linear_out(g * h), new

    def _zero_state(self, batch_size, device, dtype):
        W, K = self.lru_width, self.config.conv_kernel
        zeros = (torch.zeros(batch_size, K - 1, W, dtype=dtype, device=device),
                 torch.zeros(batch_size, W, dtype=dtype, device=device))
        if self.config.reset_at_start:  # started: no token seen yet
            zeros += (torch.zeros(batch_size, dtype=dtype, device=device),)
        return zeros

    @property
    def state_size(self) -> int:
        return self.config.conv_kernel * self.lru_width + int(self.config.reset_at_start)
