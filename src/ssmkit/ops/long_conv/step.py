"""One token of the causal long convolution y_t = sum_{s<K} k_s u_{t-s}, for streaming (Hyena's step)."""
from __future__ import annotations

import torch
from torch import Tensor

from ...core.precision import float32_core


@float32_core
def long_conv_step(u_t: Tensor, k: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """u_t (B, H), k (H, K), state (B, K-1, H) the last K-1 inputs, oldest first | None (zeros)
    -> (y_t (B, H), new_state (B, K-1, H)). Pure: ``state`` is read, never written."""
    K = k.shape[-1]
    if state is None:
        state = u_t.new_zeros(u_t.shape[0], K - 1, u_t.shape[1])
    window = torch.cat([state, u_t[:, None]], dim=1)  # (B, K, H): u_{t-K+1} .. u_t
    return torch.einsum("bkh,hk->bh", window, k.flip(-1)), window[:, 1:]
