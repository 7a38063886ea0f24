"""The convolution state after a given number of tokens of each row (padded batches)."""
from __future__ import annotations

import torch
from torch import Tensor


def conv_state_at(x: Tensor, initial_state: Tensor | None, lengths: Tensor, K: int) -> Tensor:
    """The state of a K-tap causal convolution after ``lengths[b]`` tokens of row b: the last K-1
    real inputs of [initial_state, x], oldest first.

    x (B, L, D) right-padded input, initial_state (B, K-1, D) the history before it (None: zeros),
    lengths (B,) -> (B, K-1, D).
    """
    if initial_state is None:
        initial_state = x.new_zeros(x.shape[0], K - 1, x.shape[2])
    ext = torch.cat([initial_state, x], dim=1)  # index j of ext is input j-(K-1)
    idx = lengths[:, None] + torch.arange(K - 1, device=x.device)[None, :]  # (B, K-1)
    return ext.gather(1, idx[..., None].expand(-1, -1, x.shape[2]))
