"""torch's fused single-layer LSTM / GRU kernels called as functions, for the ``lstm`` and ``gru`` mixers.

The weights sit in a plain module under ``nn.LSTM`` / ``nn.GRU``'s own names (``weight_ih_l0``,
``weight_hh_l0``, ``bias_ih_l0``, ``bias_hh_l0``), so checkpoints are unchanged, while the kernels
are called as ``torch.lstm`` / ``torch.gru``: torch.compile refuses to trace an ``nn.RNNBase``
module but traces these functions (docs/compile.md). Rows of different lengths are packed, as
``nn.LSTM`` does, so each final state is taken after its row's length. Packing reads the lengths on
the host, which a traced graph cannot; while tracing, padded rows run the cell in a loop instead
(the same equations; padded steps keep the state).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from .call import lengths_mask

KERNELS = {"lstm": torch.lstm, "gru": torch.gru}
GATES = {"lstm": 4, "gru": 3}


class RNNWeights(nn.Module):
    """The parameters of a one-layer ``nn.LSTM`` / ``nn.GRU`` of input D and hidden K, initialized as
    torch initializes them (uniform in ±1/√K), under the same names."""

    def __init__(self, kind: str, d_in: int, hidden: int) -> None:
        super().__init__()
        G, bound = GATES[kind], hidden**-0.5
        shapes = {"weight_ih_l0": (G * hidden, d_in), "weight_hh_l0": (G * hidden, hidden),
                  "bias_ih_l0": (G * hidden,), "bias_hh_l0": (G * hidden,)}
        for name, shape in shapes.items():
            self.register_parameter(name, nn.Parameter(torch.empty(shape).uniform_(-bound, bound)))

    def flat(self, dtype: torch.dtype) -> list[Tensor]:
        return [p.to(dtype) for p in (self.weight_ih_l0, self.weight_hh_l0, self.bias_ih_l0, self.bias_hh_l0)]


def fused_rnn(
    kind: str, x: Tensor, hx: tuple[Tensor, ...], weights: RNNWeights, lengths: Tensor | None,
    cell: Callable[..., tuple[Tensor, ...]],
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """x (B, L, D) right-padded to ``lengths`` (B,) (None: no padding), hx the state tensors (B, K)
    -> (outputs h_t (B, L, K), the state after each row's length). ``cell(x_t, *state)`` is the
    family's one step, returning the new state (h first)."""
    w = weights.flat(x.dtype)
    h0 = tuple(h[None].contiguous() for h in hx)  # (1, B, K): one layer
    run = KERNELS[kind]
    state_arg = h0 if kind == "lstm" else h0[0]
    if lengths is None:
        out = run(x, state_arg, w, True, 1, 0.0, False, False, True)
        return out[0], tuple(h[0] for h in out[1:])
    if torch.compiler.is_compiling():
        return _masked_loop(x, hx, lengths, cell)
    # Packing needs lengths >= 1; an empty row keeps its initial state.
    packed = pack_padded_sequence(x, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
    order, back = packed.sorted_indices, packed.unsorted_indices
    sorted_h0 = tuple(h.index_select(1, order) for h in h0)
    out = run(packed.data, packed.batch_sizes, sorted_h0 if kind == "lstm" else sorted_h0[0], w, True, 1, 0.0,
              False, False)
    hs = pad_packed_sequence(PackedSequence(out[0], packed.batch_sizes, order, back), batch_first=True,
                             total_length=x.shape[1])[0]
    empty = (lengths == 0)[:, None]
    final = tuple(torch.where(empty, h, f[0].index_select(0, back)) for h, f in zip(hx, out[1:]))
    return hs, final


def _masked_loop(x: Tensor, hx: tuple[Tensor, ...], lengths: Tensor, cell) -> tuple[Tensor, tuple[Tensor, ...]]:
    real = lengths_mask(lengths, x.shape[1])[..., None]  # (B, L, 1)
    state, hs = hx, []
    for t in range(x.shape[1]):
        new = cell(x[:, t], *state)
        state = tuple(torch.where(real[:, t], n, s) for n, s in zip(new, state))
        hs.append(state[0])
    return torch.stack(hs, 1), state
