"""GRU baseline: Cho et al. 2014, "Learning Phrase Representations using RNN Encoder-Decoder".

The cell in PyTorch's convention (gate order r, z, n; the reset gate applied after W_hn h, as in
cuDNN), hidden size K (``d_hidden``):

    r = sigmoid(W_ir x + b_ir + W_hr h + b_hr),   z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
    h_t = (1 - z) * n + z * h_{t-1},              y_t = W_out h_t + b_out   (D,)

Modes: ``fused`` runs torch's fused GRU kernel (``torch.gru``; rows of different lengths packed so that the final state
is taken after each row's length), ``reference`` the equations in a Python loop in float64.
``step`` is the same cell. State: (h,), h (B, K). The recurrent matrix W_hh is tagged for the
no-weight-decay group (lr=None keeps the global learning rate). docs/math/recurrences.md.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from ..core.precision import float32_core
from ..config import check
from ._fused_rnn import RNNWeights, fused_rnn
from .base import MixerConfig, SequenceMixer, tag_ssm_param
from .call import ForwardCall, lengths_mask
from .registry import register_mixer


@dataclasses.dataclass
class GRUConfig(MixerConfig):
    d_hidden: int | None = None  # K: hidden size; None: d_model

    def __post_init__(self) -> None:
        k = self.d_hidden
        check(k is None or k >= 1, "d_hidden", f"must be None or an int >= 1, got {k!r}")


def gru_cell(x: Tensor, h: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor, b_hh: Tensor) -> Tensor:
    """One GRU step: x (B, D), h (B, K) -> h (B, K)."""
    xr, xz, xn = (x @ w_ih.T + b_ih).chunk(3, dim=-1)
    hr, hz, hn = (h @ w_hh.T + b_hh).chunk(3, dim=-1)
    r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
    n = torch.tanh(xn + r * hn)
    return (1 - z) * n + z * h


@register_mixer("gru")
class GRU(SequenceMixer):
    """Single-layer GRU (B, L, D) -> (B, L, D); state (h,) with h (B, K)."""
    cp_refusal = ("a nonlinear recurrence: the outgoing state is no affine function of the incoming one, so a "
                  "chunk cannot start before the previous chunk has finished")

    Config = GRUConfig
    config: GRUConfig
    modes = ("fused", "reference")
    packed_modes = ("fused", "reference")  # a packed row runs document by document (nn.GRU cannot reset)

    def __init__(self, d_model: int, mode: str = "auto", **cfg) -> None:
        super().__init__(d_model, mode, **cfg)
        K = self.config.d_hidden or d_model
        self.d_hidden = K
        self.rnn = RNNWeights("gru", d_model, K)  # nn.GRU's parameters and names
        tag_ssm_param(self.rnn.weight_hh_l0, lr=None)
        self.out_proj = nn.Linear(K, d_model)

    def _weights(self, dtype: torch.dtype) -> tuple[Tensor, ...]:
        r = self.rnn
        return tuple(p.to(dtype) for p in (r.weight_ih_l0, r.weight_hh_l0, r.bias_ih_l0, r.bias_hh_l0))

    def _zero_state(self, batch_size, device, dtype) -> tuple[Tensor]:
        return (torch.zeros(batch_size, self.d_hidden, device=device, dtype=dtype),)

    @property
    def state_size(self) -> int:
        return self.d_hidden

    def _step(self, x_t: Tensor, state, dt: Tensor | None) -> tuple[Tensor, tuple[Tensor]]:
        h = self._cell(x_t, state[0])
        return self.out_proj(h), (h,)

    def _forward(self, x: Tensor, state, call: ForwardCall):
        if call.starts is not None:  # a packed row: each document from the zero state, no padded step
            pieces = [self._recurrence(p, None, None, call.mode)[0] for p in x.split(call.document_sizes(), dim=1)]
            return self.out_proj(torch.cat(pieces, dim=1)), None
        hs, final = self._recurrence(x, state, call.lengths, call.mode)
        return self.out_proj(hs), final

    # The recurrence runs in float32 under autocast (core.precision); out_proj may run in bf16.
    @float32_core
    def _cell(self, x_t: Tensor, h: Tensor) -> Tensor:
        return gru_cell(x_t, h, *self._weights(x_t.dtype))

    @float32_core
    def _recurrence(self, x: Tensor, state, lengths: Tensor | None, mode: str):
        B, L, _ = x.shape
        h0 = (self.init_state(B, x.device, x.dtype) if state is None else state)[0]
        if mode == "reference":
            hs, h = self._reference(x, h0, lengths)
            return hs, (h,)
        return fused_rnn("gru", x, (h0,), self.rnn, lengths, lambda x_t, h: (self._cell(x_t, h),))

    def _reference(self, x: Tensor, h: Tensor, lengths: Tensor | None):
        """The cell equations token by token in float64; padded steps keep the state."""
        dt = x.dtype
        w = self._weights(torch.float64)
        h = h.double()
        mask = None if lengths is None else lengths_mask(lengths, x.shape[1])[..., None]
        hs = []
        for t in range(x.shape[1]):
            h_new = gru_cell(x[:, t].double(), h, *w)
            h = h_new if mask is None else torch.where(mask[:, t], h_new, h)
            hs.append(h)
        return torch.stack(hs, 1).to(dt), h.to(dt)
