"""mLSTM: the matrix-memory LSTM block of xLSTM (Beck et al. 2024, "xLSTM: Extended Long
Short-Term Memory"), the pre-up-projection mLSTM block of the paper's Fig. 10 / its code.

    [x_m, z] = proj_up(x)                                  x_m, z: (B, L, E), E = proj_factor·D
    x_c      = silu(causal_depthwise_conv(x_m))            kernel conv_kernel, state: last K-1 inputs
    q, k     = W_q x_c, W_k x_c / sqrt(P);  v = W_v x_m     block-diagonal (qkv_blocksize), H heads of P
    log i_t  = w_i·[q, k, v] + b_i,   log f_t = logsigmoid(w_f·[q, k, v] + b_f)   (or exp gate: log f = f̃)
    m_t = max(log f_t + m_{t-1}, log i_t);  C_t = f' C_{t-1} + i' k_t v_tᵀ;  n_t = f' n_{t-1} + i' k_t
    h_t = C_tᵀ q_t / max(|n_tᵀ q_t|, exp(-m_t))            = the paper's C q / max(|nᵀq|, 1)
    out = proj_down((LayerNorm_per_head(h) ⊙ w_norm + skip ⊙ x_c) ⊙ silu(z))

The cell is ``ops.mlstm`` (stabilized; equations and modes in its README, derivation in
docs/math/mlstm.md). Included from the xLSTM code: block-diagonal q/k/v (LinearHeadwiseExpand),
gates fed by [q, k, v], the per-head norm with weight only, the learnable skip, its inits.
Left to the model's block: pre-LayerNorm, residual, dropout. Differences: E = proj_factor·D
is not rounded up to a multiple of 64, and the denominator has no +1e-6 (max(|nᵀq|, e^{-m}) > 0
already; an eps would make the output depend on the stabilizer m). Padded steps get log f = 0
and log i = -inf, the identity on (C, n, m). The state is (conv_state (B, K-1, E),
C (B, H, P, P), n (B, H, P), m (B, H)).
"""
from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import check
from ..ops import mlstm as mlstm_op
from ..ops.mlstm import mlstm, mlstm_step
from ..ops.short_conv import conv_state_at, short_conv, short_conv_step
from ._block_diagonal import BlockDiagonalLinear
from .base import MixerConfig, SequenceMixer, tag_ssm_param
from .call import ForwardCall
from .registry import register_mixer

FORGET_GATES = ("sigmoid", "exp")


@dataclasses.dataclass
class MLSTMConfig(MixerConfig):
    proj_factor: float = 2.0  # E = round(proj_factor * D), the width of each up-projected branch
    num_heads: int = 4  # H; head size P = E / H for queries, keys and values
    conv_kernel: int = 4  # causal depthwise convolution before q and k
    qkv_blocksize: int = 4  # size of the diagonal blocks of the q, k, v projections
    forget_gate: str = "sigmoid"  # "sigmoid": log f = logsigmoid(f~); "exp": log f = f~
    chunk_size: int = 128  # T of the chunked mode
    norm_eps: float = 1e-5  # per-head LayerNorm
    bias: bool = False  # biases of proj_up, proj_down and the q, k, v projections
    ssm_lr: float | None = None  # learning rate of the gate parameters (None: the optimizer's)

    def __post_init__(self) -> None:
        check(self.proj_factor > 0, "proj_factor", f"must be > 0, got {self.proj_factor}")
        for name in ("num_heads", "conv_kernel", "qkv_blocksize", "chunk_size"):
            v = getattr(self, name)
            check(v >= 1, name, f"must be an int >= 1, got {v!r}")
        check(self.forget_gate in FORGET_GATES, "forget_gate", f"must be one of {FORGET_GATES}, got {self.forget_gate!r}")
        check(self.norm_eps > 0, "norm_eps", f"must be > 0, got {self.norm_eps}")
        check(self.ssm_lr is None or self.ssm_lr > 0, "ssm_lr", f"must be None or > 0, got {self.ssm_lr}")


@register_mixer("mlstm")
class MLSTM(SequenceMixer):
    """xLSTM mLSTM block (B, L, D) -> (B, L, D). Modes: ``chunked`` (chunkwise parallel), ``reference``."""
    # context parallelism: conv window; exp(m) * (C, n) passes affinely, decayed by exp(sum log f)
    cp_state = ("halo", "scaled", "scaled", "stabilizer")

    Config = MLSTMConfig
    modes = mlstm_op.MODES  # chunked, reference
    packed_modes = ("chunked", "reference")  # the conv window and the op reset at a document start

    def __init__(self, d_model: int, mode: str = "auto", **cfg) -> None:
        super().__init__(d_model, mode, **cfg)
        c = self.config
        E = round(c.proj_factor * d_model)
        check(E >= 1 and E % c.num_heads == 0, "num_heads",
              f"must divide the inner width E = round(proj_factor * d_model) = {E}, got {c.num_heads}")
        check(E % c.qkv_blocksize == 0, "qkv_blocksize", f"must divide the inner width E = {E}, got {c.qkv_blocksize}")
        self.d_inner, self.head_dim = E, E // c.num_heads
        self.proj_up = nn.Linear(d_model, 2 * E, bias=c.bias)
        self.conv1d = nn.Conv1d(E, E, c.conv_kernel, groups=E, padding=c.conv_kernel - 1)
        blocks = E // c.qkv_blocksize
        self.q_proj, self.k_proj, self.v_proj = (BlockDiagonalLinear(E, blocks, c.bias) for _ in range(3))
        self.igate = nn.Linear(3 * E, c.num_heads)
        self.fgate = nn.Linear(3 * E, c.num_heads)
        self.norm_weight = nn.Parameter(torch.ones(E))
        self.skip = nn.Parameter(torch.ones(E))
        self.proj_down = nn.Linear(E, d_model, bias=c.bias)
        # xLSTM init: "small init" sqrt(2 / 5D) in, Wang 2 / sqrt(D) out, constant-in-input gates
        # with forget biases linspace(3, 6) (long memory at the start of training).
        small = math.sqrt(2 / (5 * d_model))
        with torch.no_grad():
            for w in (self.proj_up.weight, self.q_proj.weight, self.k_proj.weight, self.v_proj.weight):
                w.normal_(0.0, small)
            self.proj_down.weight.normal_(0.0, 2 / math.sqrt(d_model))
            self.fgate.weight.zero_()
            self.fgate.bias.copy_(torch.linspace(3.0, 6.0, c.num_heads))
            self.igate.weight.zero_()
            self.igate.bias.normal_(0.0, 0.1)
            for lin in (self.proj_up, self.proj_down):
                if lin.bias is not None:
                    lin.bias.zero_()
        for p in (*self.igate.parameters(), *self.fgate.parameters()):
            tag_ssm_param(p, lr=c.ssm_lr)

    # ----------------------------------------------------------------- pieces
    def _cell_inputs(self, xc: Tensor, xm: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """x_c, x_m (..., E) -> q, k (scaled), v (..., H, P), log i, log f (..., H)."""
        q, k, v = self.q_proj(xc), self.k_proj(xc), self.v_proj(xm)
        H, P = self.config.num_heads, self.head_dim
        # Both gates read [q, k, v]: one (2H, 3E) weight split by input, so each of q, k, v is
        # read once and the (..., 3E) concatenation is never built (thin GEMMs are memory-bound).
        W = torch.cat([self.igate.weight, self.fgate.weight]).split(self.d_inner, dim=1)
        gates = q @ W[0].T + k @ W[1].T + v @ W[2].T + torch.cat([self.igate.bias, self.fgate.bias])
        log_i, f = gates.split(H, dim=-1)
        log_f = F.logsigmoid(f) if self.config.forget_gate == "sigmoid" else f
        q, k, v = (t.unflatten(-1, (H, P)) for t in (q, k / math.sqrt(P), v))
        return q, k, v, log_i, log_f

    def _output(self, h: Tensor, xc: Tensor, z: Tensor) -> Tensor:
        """h (..., H, P) -> per-head LayerNorm (weight only), skip, output gate, proj_down."""
        h = F.layer_norm(h, (self.head_dim,), eps=self.config.norm_eps).flatten(-2) * self.norm_weight
        return self.proj_down((h + self.skip * xc) * F.silu(z))

    # ----------------------------------------------------------------- forward / step
    def _proj_up_halves(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x (B, L, D) -> x_m, z (B, L, E), each from its half of proj_up's weight, so each is
        contiguous (chunks of one (B, L, 2E) output are strided: every element-wise pass and
        matmul after them read them strided; issue 19)."""
        W, b = self.proj_up.weight, self.proj_up.bias
        E = self.d_inner
        return (F.linear(x, W[:E], None if b is None else b[:E]),
                F.linear(x, W[E:], None if b is None else b[E:]))

    def _forward(self, x: Tensor, state, call: ForwardCall):
        xm, z = self._proj_up_halves(x)  # (B, L, E) each
        conv_state, *cell_state = (None,) * 4 if state is None else state
        xc, conv_final = short_conv(xm, self.conv1d.weight[:, 0, :], self.conv1d.bias, conv_state, starts=call.starts)
        if call.lengths is not None:
            conv_final = conv_state_at(xm, conv_state, call.lengths, self.config.conv_kernel)
        xc = F.silu(xc)
        q, k, v, log_i, log_f = self._cell_inputs(xc, xm)
        # log i = -inf, log f = 0: padded steps are the identity on (C, n, m)
        log_i, log_f = call.fill_pads(log_i, -torch.inf), call.zero_pads(log_f)
        h0 = None if state is None else tuple(cell_state)
        h, (C, n, m) = mlstm(q, k, v, log_i, log_f, h0, mode=call.mode, chunk_size=self.config.chunk_size,
                             starts=call.starts)
        return self._output(h, xc, z), (conv_final, C, n, m)

    def _step(self, x_t: Tensor, state, dt: Tensor | None):
        conv_state, *cell_state = state
        xm, z = self.proj_up(x_t).chunk(2, dim=-1)  # (B, E)
        xc, conv_state = short_conv_step(xm, self.conv1d.weight[:, 0, :], self.conv1d.bias, conv_state)
        xc = F.silu(xc)
        h, (C, n, m) = mlstm_step(*self._cell_inputs(xc, xm), tuple(cell_state))
        return self._output(h, xc, z), (conv_state, C, n, m)

    def cp_log_decay(self, x: Tensor, state) -> Tensor:
        """sum_t log f_t over x (B, L, D) after ``state``'s conv window: (B, H), the log of the chunk's
        decay of exp(m) * (C, n) (context parallelism, docs/distributed.md)."""
        xm, _ = self.proj_up(x).chunk(2, dim=-1)
        xc, _ = short_conv(xm, self.conv1d.weight[:, 0, :], self.conv1d.bias, state[0])
        *_, log_f = self._cell_inputs(F.silu(xc), xm)
        return log_f.sum(dim=1)

    def _zero_state(self, batch_size, device, dtype):
        E, H, P, K = self.d_inner, self.config.num_heads, self.head_dim, self.config.conv_kernel

        def zeros(*shape: int) -> Tensor:
            return torch.zeros(batch_size, *shape, dtype=dtype, device=device)

        return zeros(K - 1, E), zeros(H, P, P), zeros(H, P), zeros(H)

    @property
    def state_size(self) -> int:
        H, P = self.config.num_heads, self.head_dim
        return (self.config.conv_kernel - 1) * self.d_inner + H * (P * P + P + 1)
