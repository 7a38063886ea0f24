"""One token of the mLSTM matrix memory (Beck et al. 2024, xLSTM): the recurrence, written once
(the reference loop and the MLSTM layer's ``step`` call it). Per head, with the stabilizer m
(log-space running max) and C stored as (K, V):

    m_t = max(log f_t + m_{t-1}, log i_t)
    f'_t = exp(log f_t + m_{t-1} - m_t),   i'_t = exp(log i_t - m_t)
    C_t = f'_t C_{t-1} + i'_t k_t v_t^T,    n_t = f'_t n_{t-1} + i'_t k_t
    h_t = C_t^T q_t / max(|n_t^T q_t|, exp(-m_t))

(C, n) are the true memory scaled by exp(-m), so h_t is the paper's C q / max(|n^T q|, 1).
A step with log f = 0 and log i = -inf is the identity on (C, n, m).
"""
from __future__ import annotations

import torch
from torch import Tensor

from ...core.precision import float32_core

MLSTMState = tuple[Tensor, Tensor, Tensor]


@float32_core
def mlstm_step(
    q_t: Tensor, k_t: Tensor, v_t: Tensor, log_i_t: Tensor, log_f_t: Tensor, state: MLSTMState | None = None
) -> tuple[Tensor, MLSTMState]:
    """q_t, k_t (B, H, K), v_t (B, H, V), log_i_t, log_f_t (B, H), state (C (B, H, K, V), n (B, H, K),
    m (B, H)) | None (zeros) -> (h_t (B, H, V), new_state (C, n, m))."""
    if state is None:
        C = q_t.new_zeros(*q_t.shape, v_t.shape[-1])
        n, m = torch.zeros_like(q_t), q_t.new_zeros(q_t.shape[:-1])
    else:
        C, n, m = state
    m_new = torch.maximum(log_f_t + m, log_i_t)
    f = torch.exp(log_f_t + m - m_new)  # (B, H)
    i = torch.exp(log_i_t - m_new)
    C = f[..., None, None] * C + i[..., None, None] * k_t[..., :, None] * v_t[..., None, :]
    n = f[..., None] * n + i[..., None] * k_t
    num = (q_t[..., :, None] * C).sum(-2)  # (B, H, V)
    den = torch.maximum((q_t * n).sum(-1).abs(), torch.exp(-m_new))
    return num / den[..., None], (C, n, m_new)
