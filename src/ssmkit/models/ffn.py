"""The position-wise feed-forward block after each mixer (``BackboneConfig.ffn``).

Dimension legend: D model width, F the hidden width.

- ``gelu``:       Linear(D, F) -> GELU -> Linear(F, D), ssmkit's default MLP;
- ``swiglu``:     down(SiLU(gate(x)) ⊙ up(x)), flash-linear-attention's ``GatedMLP`` (no biases there);
- ``geglu_tanh``: down(GELU_tanh(gate(x)) ⊙ up(x)), RecurrentGemma's MLP (biases there).

The gated forms use the names both peers use (``gate_proj``, ``up_proj``, ``down_proj``), so their
checkpoints map one to one.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

FFNS = ("gelu", "swiglu", "geglu_tanh")


class GatedMLP(nn.Module):
    """x (..., D) -> down_proj(act(gate_proj(x)) ⊙ up_proj(x)) (..., D); act SiLU or tanh GELU."""

    def __init__(self, d_model: int, hidden: int, act: str, bias: bool) -> None:
        super().__init__()
        self.act = act
        self.gate_proj = nn.Linear(d_model, hidden, bias=bias)
        self.up_proj = nn.Linear(d_model, hidden, bias=bias)
        self.down_proj = nn.Linear(hidden, d_model, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        gate = self.gate_proj(x)
        gate = F.silu(gate) if self.act == "silu" else F.gelu(gate, approximate="tanh")
        return self.down_proj(gate * self.up_proj(x))


def make_ffn(kind: str, d_model: int, hidden: int, bias: bool) -> nn.Module | None:
    """The FFN of kind ``kind`` (one of ``FFNS``) with hidden width ``hidden``; None when hidden is 0."""
    if not hidden:
        return None
    if kind == "gelu":
        return nn.Sequential(nn.Linear(d_model, hidden, bias=bias), nn.GELU(), nn.Linear(hidden, d_model, bias=bias))
    return GatedMLP(d_model, hidden, "silu" if kind == "swiglu" else "gelu_tanh", bias)
