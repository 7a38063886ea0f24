"""Ground truth for the mLSTM matrix memory (Beck et al. 2024, xLSTM): a loop over time of
``mlstm_step`` (its equations and stabilizer are in step.py). A step with log f = 0 and
log i = -inf is the identity on (C, n, m).
"""
from __future__ import annotations

import torch
from torch import Tensor

from .step import MLSTMState, mlstm_step


def mlstm_reference(
    q: Tensor, k: Tensor, v: Tensor, log_i: Tensor, log_f: Tensor, initial_state: MLSTMState | None = None,
) -> tuple[Tensor, MLSTMState]:
    """q, k (B, L, H, K), v (B, L, H, V), log_i, log_f (B, L, H), initial_state (C (B, H, K, V),
    n (B, H, K), m (B, H)) | None (zeros) -> (h (B, L, H, V), final (C, n, m)); L >= 1. Runs in
    the inputs' dtype."""
    state, hs = initial_state, []
    for t in range(q.shape[1]):
        h_t, state = mlstm_step(q[:, t], k[:, t], v[:, t], log_i[:, t], log_f[:, t], state)
        hs.append(h_t)
    return torch.stack(hs, dim=1), state
