"""The quadratic ("attention") form of gated linear attention, O(L²) in time and memory.

    o_t = scale · Σ_{s≤t} (q_t ∘ exp(Σ_{s<i≤t} a_i)) · k_s  v_s  +  scale · (q_t ∘ exp(Σ_{i≤t} a_i)) S_{-1}

The decay between key s and query t comes from ``segsum`` (each segment summed directly, never
as a difference of prefix sums), so every exponent is ≤ 0 and the form is exact for any decay.
A vector decay needs one decay matrix per key channel: O(B·H·K·L²) memory, for checks and short
sequences only. Derivation: docs/math/linear_attention.md.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ...core.segsum import segsum


def linear_attention_parallel(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    log_decay: Tensor | None = None,
    initial_state: Tensor | None = None,
    scale: float = 1.0,
) -> tuple[Tensor, Tensor]:
    """Same signature and result as ``linear_attention_reference``."""
    H, L = q.shape[2], q.shape[1]
    qh, kh, vh = (x.transpose(1, 2) for x in (q * scale, k, v))  # (B, H, L, .)
    if log_decay is None:
        causal = torch.ones(L, L, dtype=torch.bool, device=q.device).tril()
        scores = torch.where(causal, qh @ kh.transpose(-1, -2), 0.0)
        last = kh  # every key reaches the end undecayed
        from_start = None
    elif log_decay.ndim in (1, 3):  # one decay per head (and step)
        a = log_decay[None, :, None].expand(1, H, L) if log_decay.ndim == 1 else log_decay.transpose(1, 2)
        mask = torch.exp(segsum(a))  # (B|1, H, L, L): decay from step s to step t
        scores = (qh @ kh.transpose(-1, -2)) * mask
        last = kh * mask[..., -1, :, None]  # keys decayed to the last step
        from_start = torch.exp(a.cumsum(-1))[..., None]  # (B|1, H, L, 1)
    else:  # one decay per key channel
        a = log_decay.permute(0, 2, 3, 1)  # (B, H, K, L)
        mask = torch.exp(segsum(a))  # (B, H, K, L, L)
        scores = torch.einsum("bhtk,bhsk,bhkts->bhts", qh, kh, mask)
        last = kh * mask[..., -1, :].transpose(-1, -2)
        from_start = torch.exp(a.cumsum(-1)).transpose(-1, -2)  # (B, H, L, K)
    o = scores @ vh
    final = last.transpose(-1, -2) @ vh  # (B, H, K, V)
    if initial_state is not None:
        if from_start is None:
            o = o + qh @ initial_state
            final = final + initial_state
        else:  # from_start (B|1, H, L, 1|K): the initial state decayed up to step t
            o = o + (qh * from_start) @ initial_state
            final = final + from_start[:, :, -1, :, None] * initial_state
    return o.transpose(1, 2), final
