"""RWKV-6 channel mixing (Peng et al. 2024, "Eagle and Finch: RWKV with Matrix-Valued States and
Dynamic Recurrence", eqs. 21-23; the authors' RWKV-LM ``RWKV_CMix_x060``): the feed-forward half
of a Finch block, a sequence mixer through its token shift.

With Δx_t = x_{t-1} - x_t (x_{-1} from the state) and F the hidden width:

    k_t = relu(W_k (x_t + Δx_t ⊙ μ_k))²                    (F)
    y_t = sigmoid(W_r (x_t + Δx_t ⊙ μ_r)) ⊙ W_v k_t         (D)

A stack of Finch blocks alternates ``rwkv6`` (time mixing) and this mixer, each inside its own
pre-norm residual block, as flash-linear-attention's RWKV6Block (attn_norm, attn, ffn_norm, ffn).
Names follow RWKV-LM: time_maa_k (μ_k), time_maa_r (μ_r), key, value, receptance. The state is
(x_prev (B, D),), the last real token. One mode, ``reference``: the whole sequence at once (the
shift is a gather, there is no recurrence to scan).
"""
from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from ..config import check
from .base import MixerConfig, SequenceMixer, tag_ssm_param
from .call import ForwardCall
from .registry import register_mixer


@dataclasses.dataclass
class RWKV6ChannelMixConfig(MixerConfig):
    hidden: int | None = None  # F; None: 3.5 D rounded up to a multiple of 32 (flash-linear-attention's)

    def __post_init__(self) -> None:
        check(self.hidden is None or self.hidden >= 1, "hidden", f"must be None or >= 1, got {self.hidden!r}")


@register_mixer("rwkv6_cmix")
class RWKV6ChannelMix(SequenceMixer):
    """Finch channel mixing (B, L, D) -> (B, L, D): token shift, squared-ReLU key, sigmoid receptance."""
    cp_state = ("halo",)  # context parallelism: the token shift

    Config = RWKV6ChannelMixConfig
    config: RWKV6ChannelMixConfig
    modes = ("reference",)
    packed_modes = ("reference",)  # the token shift restarts at a document start

    def __init__(self, d_model: int, mode: str = "auto", **cfg) -> None:
        super().__init__(d_model, mode, **cfg)
        D = d_model
        F = self.config.hidden or 32 * -(-int(3.5 * D) // 32)
        self.hidden = F
        mu = 1.0 - torch.arange(D) / D  # RWKV-LM's time_maa_k / time_maa_r of a first layer
        self.time_maa_k = nn.Parameter(mu.clone())
        self.time_maa_r = nn.Parameter(mu.clone())
        self.key = nn.Linear(D, F, bias=False)
        self.receptance = nn.Linear(D, D, bias=False)
        self.value = nn.Linear(F, D, bias=False)
        for p in (self.time_maa_k, self.time_maa_r):  # RWKV-LM: no weight decay on time_* parameters
            tag_ssm_param(p, lr=None)

    def _mix(self, x: Tensor, x_prev: Tensor) -> Tensor:
        """x (..., D) and the token before each, x_prev (..., D) -> y (..., D)."""
        dx = x_prev - x
        k = torch.relu(self.key(x + dx * self.time_maa_k)).square()
        return torch.sigmoid(self.receptance(x + dx * self.time_maa_r)) * self.value(k)

    def _forward(self, x: Tensor, state, call: ForwardCall):
        batch = x.shape[0]
        x_prev = x.new_zeros(batch, self.d_model) if state is None else state[0]
        full = torch.cat([x_prev[:, None], x], dim=1)  # x_{t-1} for t = 0..L-1 is full[:, t]
        if call.lengths is None:
            last = x[:, -1]
        else:  # x_prev for the next call is each row's last real token
            last = full[torch.arange(batch, device=x.device), call.lengths]
        return self._mix(x, call.zero_starts(full[:, :-1])), (last,)  # x_{t-1} = 0 at a document start

    def _step(self, x_t: Tensor, state, dt: Tensor | None):
        return self._mix(x_t, state[0]), (x_t,)

    def _zero_state(self, batch_size, device, dtype):
        return (torch.zeros(batch_size, self.d_model, device=device, dtype=dtype),)

    @property
    def state_size(self) -> int:
        return self.d_model
