"""One step of the linear recurrence h_t = a_t * h_{t-1} + b_t: the recurrence, written once (the
reference loop and the layers' ``step`` call it)."""
from __future__ import annotations

import torch
from torch import Tensor

from ...core.precision import float32_core


@float32_core
def linear_scan_step(a_t: Tensor, b_t: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """b_t (B, *S); a_t broadcastable to it (e.g. (*S) for a constant decay); state (B, *S) | None
    (zeros) -> (h_t, h_t) (B, *S): a step's output is its new state. Real or complex, any float dtype."""
    h = a_t * (torch.zeros_like(b_t) if state is None else state) + b_t
    return h, h
