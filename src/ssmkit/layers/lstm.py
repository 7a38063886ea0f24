"""LSTM baseline: Hochreiter & Schmidhuber 1997 with the forget gate of Gers et al. 2000.

The cell, in PyTorch's gate order (i, f, g, o), hidden size K (``d_hidden``):

    [i, f, g, o] = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh          (4K,)
    c_t = sigmoid(f) * c_{t-1} + sigmoid(i) * tanh(g)
    h_t = sigmoid(o) * tanh(c_t),        y_t = W_out h_t + b_out   (D,)

W_ih is the input projection (D -> 4K); W_out maps K back to D. Modes: ``fused`` runs
torch's fused LSTM kernel (``torch.lstm``, one C++/cuDNN call, rows of different lengths packed so that the final state
is taken after each row's length) and ``reference`` the equations above in a Python loop in
float64. ``step`` is the same cell. State: (h, c), each (B, K).

The recurrent matrix W_hh is tagged for the no-weight-decay group (lr=None keeps the global
learning rate): it plays the role of an SSM's A. docs/math/recurrences.md.
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
class LSTMConfig(MixerConfig):
    d_hidden: int | None = None  # K: hidden and cell size; None: d_model
    forget_bias: float = 1.0  # initial forget-gate bias (Gers et al. 2000; Jozefowicz et al. 2015)

    def __post_init__(self) -> None:
        k = self.d_hidden
        check(k is None or k >= 1, "d_hidden", f"must be None or an int >= 1, got {k!r}")


def lstm_cell(x: Tensor, h: Tensor, c: Tensor, w_ih: Tensor, w_hh: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """One LSTM step: x (B, D), h, c (B, K) -> (h, c); b = b_ih + b_hh (4K,)."""
    i, f, g, o = (x @ w_ih.T + h @ w_hh.T + b).chunk(4, dim=-1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


@register_mixer("lstm")
class LSTM(SequenceMixer):
    """Single-layer LSTM (B, L, D) -> (B, L, D); state (h, c) with h, c (B, K)."""
    cp_refusal = ("a nonlinear recurrence: the outgoing state is no affine function of the incoming one, so a "
                  "chunk cannot start before the previous chunk has finished")

    Config = LSTMConfig
    config: LSTMConfig
    modes = ("fused", "reference")
    packed_modes = ("fused", "reference")  # a packed row runs document by document (nn.LSTM cannot reset)

    def __init__(self, d_model: int, mode: str = "auto", **cfg) -> None:
        super().__init__(d_model, mode, **cfg)
        K = self.config.d_hidden or d_model
        self.d_hidden = K
        self.rnn = RNNWeights("lstm", d_model, K)  # nn.LSTM's parameters and names
        with torch.no_grad():
            self.rnn.bias_ih_l0[K : 2 * K].fill_(self.config.forget_bias)
            self.rnn.bias_hh_l0[K : 2 * K].zero_()
        tag_ssm_param(self.rnn.weight_hh_l0, lr=None)
        self.out_proj = nn.Linear(K, d_model)

    def _weights(self, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
        r = self.rnn
        return r.weight_ih_l0.to(dtype), r.weight_hh_l0.to(dtype), (r.bias_ih_l0 + r.bias_hh_l0).to(dtype)

    def _zero_state(self, batch_size, device, dtype) -> tuple[Tensor, Tensor]:
        h = torch.zeros(batch_size, self.d_hidden, device=device, dtype=dtype)
        return h, h.clone()

    @property
    def state_size(self) -> int:
        return 2 * self.d_hidden

    def _step(self, x_t: Tensor, state, dt: Tensor | None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        h, c = self._cell(x_t, *state)
        return self.out_proj(h), (h, c)

    def _forward(self, x: Tensor, state, call: ForwardCall):
        if call.starts is not None:  # a packed row: each document from the zero state, no padded step
            pieces = [self._recurrence(p, None, None, call.mode)[0] for p in x.split(call.document_sizes(), dim=1)]
            return self.out_proj(torch.cat(pieces, dim=1)), None
        hs, final = self._recurrence(x, state, call.lengths, call.mode)
        return self.out_proj(hs), final

    # The recurrence runs in float32 under autocast (core.precision); out_proj may run in bf16.
    @float32_core
    def _cell(self, x_t: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        return lstm_cell(x_t, h, c, *self._weights(x_t.dtype))

    @float32_core
    def _recurrence(self, x: Tensor, state, lengths: Tensor | None, mode: str):
        B, L, _ = x.shape
        h0, c0 = self.init_state(B, x.device, x.dtype) if state is None else state
        if mode == "reference":
            return self._reference(x, h0, c0, lengths)
        return fused_rnn("lstm", x, (h0, c0), self.rnn, lengths, self._cell)

    def _reference(self, x: Tensor, h: Tensor, c: Tensor, lengths: Tensor | None):
        """The cell equations token by token in float64; padded steps keep the state."""
        dt = x.dtype
        w = self._weights(torch.float64)
        h, c = h.double(), c.double()
        mask = None if lengths is None else lengths_mask(lengths, x.shape[1])[..., None]  # (B, L, 1)
        hs = []
        for t in range(x.shape[1]):
            h_new, c_new = lstm_cell(x[:, t].double(), h, c, *w)
            h = h_new if mask is None else torch.where(mask[:, t], h_new, h)
            c = c_new if mask is None else torch.where(mask[:, t], c_new, c)
            hs.append(h)
        return torch.stack(hs, 1).to(dt), (h.to(dt), c.to(dt))
