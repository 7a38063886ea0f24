"""The model an online learner trains: [linear encoder] -> diagonal recurrent mixers -> readout.

Dimension legend: B batch, L length, D model width.

Each mixer keeps its own output block (LRU's GLU, S4D's GELU + GLU, ...). ``forward`` runs the
mixers' ordinary (parallel) forward, so it is the BPTT reference of the online learner and the
model a truncated-BPTT baseline trains.
"""
from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from ...layers import create_mixer
from ...layers.base import SequenceMixer
from .families import SUPPORTED, online_family


class OnlineModel(nn.Module):
    """x (B, L, D_in) -> (B, L, D_out) through ``encoder`` (or none), ``layers`` and ``readout``.

    ``residual``: x <- x + layer(x) instead of x <- layer(x). ``readout`` must act per position
    (e.g. ``nn.Linear``): the online learner applies it to one token at a time.
    """

    def __init__(self, layers: Sequence[SequenceMixer], readout: nn.Module, encoder: nn.Linear | None = None,
                 residual: bool = False) -> None:
        super().__init__()
        if not layers:
            raise ValueError("OnlineModel needs at least one recurrent layer")
        for layer in layers:
            online_family(layer)  # a clear error now for a mixer RTRL cannot train
        if encoder is not None and not isinstance(encoder, nn.Linear):
            raise TypeError(f"encoder must be an nn.Linear or None, got {type(encoder).__name__}")
        self.encoder = encoder
        self.layers = nn.ModuleList(layers)
        self.readout = readout
        self.residual = residual

    def forward(self, x: Tensor, state: tuple | None = None, return_state: bool = False):
        """x (B, L, D_in) -> y (B, L, D_out); ``state`` continues where a previous call left off."""
        h = x if self.encoder is None else self.encoder(x)
        states = []
        for i, layer in enumerate(self.layers):
            y, s = layer(h, None if state is None else state[i], return_state=True)
            states.append(s)
            h = h + y if self.residual else y
        out = self.readout(h)
        return (out, tuple(states)) if return_state else out


def build_online_model(mixer: str | Sequence[str], d_in: int, d_out: int, d_model: int, n_layers: int = 1,
                       encoder: bool = True, residual: bool = False, **mixer_cfg) -> OnlineModel:
    """``n_layers`` mixers named ``mixer`` (or one name per layer) of width ``d_model``.

    Without ``encoder`` the input feeds the first mixer directly (then d_in must equal d_model).
    """
    names = [mixer] * n_layers if isinstance(mixer, str) else list(mixer)
    if isinstance(mixer, str) and n_layers < 1:
        raise ValueError(f"n_layers must be >= 1, got {n_layers}")
    bad = [n for n in names if n not in SUPPORTED]
    if bad:
        raise ValueError(f"online learning (RTRL) does not support mixer(s) {bad}; supported mixers: "
                         f"{', '.join(SUPPORTED)} (element-wise recurrences)")
    if not encoder and d_in != d_model:
        raise ValueError(f"without an encoder the input width d_in={d_in} must equal d_model={d_model}")
    layers = [create_mixer(n, d_model, **mixer_cfg) for n in names]
    enc = nn.Linear(d_in, d_model) if encoder else None
    return OnlineModel(layers, nn.Linear(d_model, d_out), enc, residual)
