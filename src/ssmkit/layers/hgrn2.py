"""HGRN2 (Qin et al. 2024, "HGRN2: Gated Linear RNNs with State Expansion").

HGRN's element-wise gated recurrence with its state expanded by an outer product. Per head h
(H = D / E heads of size E, the expand ratio; K = V = E):

    f_t = β + (1 − β) sigmoid(W_f x_t)      forget gate with lower bound β ∈ [0, 1)   (..., K)
    q_t = swish(W_q x_t)                    output gate, read out of the expanded state  (..., K)
    k_t = 1 − f_t,   v_t = W_i x_t          input gate tied to the forget gate; the input (..., V)
    S_t = diag(f_t) S_{t-1} + k_t v_tᵀ,   o_t = S_tᵀ q_t                  S: (K, V)
    y_t = W_o RMSNorm([o_t over heads])

(paper section 3, HGRN2 recurrence; layer details as in the authors' flash-linear-attention
layer: RMSNorm over the D outputs, no scale on q). β is a per-layer constant: HGRN stacks raise
it with depth (0 in the first layer); a model sets it per layer through ``lower_bound``.
log f and 1 − f are computed without cancellation: log f = logsigmoid(z) for β = 0,
1 − f = (1 − β) sigmoid(−z). ``scale_q`` multiplies q by K^{-1/2}, as flash-linear-attention's
layer does (its kernels' default scale); the RMSNorm after the readout removes that factor but for
its eps. The forget gate W_f is tagged. Padded steps get log f = 0 and
k = 0. State: (S,) (B, H, K, V). Derivation: docs/math/linear_attention.md.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import check
from ..ops import linear_attention as linear_attention_op
from ..ops.linear_attention import linear_attention, linear_attention_step
from .base import MixerConfig, SequenceMixer, tag_ssm_param
from .call import ForwardCall
from .registry import register_mixer


@dataclasses.dataclass
class HGRN2Config(MixerConfig):
    expand_ratio: int = 128  # E = K = V per head; min(E, D) is used, and it must divide D
    lower_bound: float = 0.0  # β: forget gates live in [β, 1); 0 in a first layer
    norm_eps: float = 1e-5
    chunk_size: int = 64  # chunk length of the chunked mode (a power of two)
    ssm_lr: float | None = None  # learning rate of the forget gate (None: the optimizer's)
    scale_q: bool = False  # q · K^-1/2 before the readout (flash-linear-attention's layer)

    def __post_init__(self) -> None:
        check(self.expand_ratio >= 1, "expand_ratio", f"must be >= 1, got {self.expand_ratio}")
        check(0.0 <= self.lower_bound < 1.0, "lower_bound", f"must be in [0, 1), got {self.lower_bound}")
        check(self.norm_eps > 0, "norm_eps", f"must be > 0, got {self.norm_eps}")
        cs = self.chunk_size
        check(cs >= 1 and cs & (cs - 1) == 0, "chunk_size", f"must be a power of two >= 1, got {cs!r}")
        check(self.ssm_lr is None or self.ssm_lr > 0, "ssm_lr", f"must be None or > 0, got {self.ssm_lr}")


@register_mixer("hgrn2")
class HGRN2(SequenceMixer):
    """Gated linear RNN with outer-product state expansion and a lower-bounded forget gate."""
    cp_state = ("diag",)  # context parallelism: S decays along K (docs/distributed.md)

    Config = HGRN2Config
    config: HGRN2Config
    modes = linear_attention_op.MODES  # triton (CUDA), chunked, parallel, reference
    packed_modes = ("chunked", "parallel", "reference")  # the op resets at a document start

    def __init__(self, d_model: int, mode: str = "auto", **cfg) -> None:
        super().__init__(d_model, mode, **cfg)
        c = self.config
        E = min(c.expand_ratio, d_model)
        check(d_model % E == 0, "expand_ratio", f"min(expand_ratio, d_model) = {E} must divide d_model={d_model}")
        self.n_heads, self.head_dim = d_model // E, E
        self.q_proj = nn.Linear(d_model, d_model, bias=False)
        self.f_proj = nn.Linear(d_model, d_model, bias=False)
        self.i_proj = nn.Linear(d_model, d_model, bias=False)
        self.norm = nn.RMSNorm(d_model, eps=c.norm_eps)
        self.o_proj = nn.Linear(d_model, d_model, bias=False)
        for lin in (self.q_proj, self.f_proj, self.i_proj, self.o_proj):
            nn.init.xavier_uniform_(lin.weight, gain=2**-2.5)  # the authors' init
        tag_ssm_param(self.f_proj.weight, lr=c.ssm_lr)

    def _inputs(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """x (..., D) -> q, k (..., H, K), v (..., H, V), log f (..., H, K)."""
        heads = (self.n_heads, self.head_dim)
        beta = self.config.lower_bound
        z = self.f_proj(x).unflatten(-1, heads)
        if beta == 0.0:
            log_f = F.logsigmoid(z)
        else:
            log_f = torch.log(beta + (1.0 - beta) * torch.sigmoid(z))  # >= log β: no underflow
        k = (1.0 - beta) * torch.sigmoid(-z)  # 1 - f
        q = F.silu(self.q_proj(x).unflatten(-1, heads))
        return q, k, self.i_proj(x).unflatten(-1, heads), log_f

    def _scale(self) -> float:
        return self.head_dim**-0.5 if self.config.scale_q else 1.0

    def _readout(self, o: Tensor) -> Tensor:
        return self.o_proj(self.norm(o.flatten(-2)))

    def _forward(self, x: Tensor, state, call: ForwardCall):
        q, k, v, log_f = self._inputs(x)
        S0 = None if state is None else state[0]
        # padded steps: no input, decay 1
        o, S = linear_attention(q, call.zero_pads(k), v, call.zero_pads(log_f), S0, scale=self._scale(),
                                mode=call.mode, chunk_size=self.config.chunk_size, starts=call.starts)
        return self._readout(o), (S,)

    def _step(self, x_t: Tensor, state, dt: Tensor | None):
        o, S = linear_attention_step(*self._inputs(x_t), state[0], scale=self._scale())
        return self._readout(o), (S,)

    def _zero_state(self, batch_size, device, dtype):
        return (torch.zeros(batch_size, self.n_heads, self.head_dim, self.head_dim, device=device, dtype=dtype),)

    @property
    def state_size(self) -> int:
        return self.n_heads * self.head_dim * self.head_dim
