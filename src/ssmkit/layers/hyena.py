"""Hyena: Poli, Massaroli, Nguyen, Fu, Dao, Baccus, Bengio, Ermon, Ré 2023, "Hyena Hierarchy:
Towards Larger Convolutional Language Models", the Hyena operator of order N (Def. 3.1).

    (x^1, ..., x^N, v) = short_depthwise_conv(W_in u)       N+1 projections of width D, kernel 3
    h^n_l = FFN(pe(l)) ⊙ (exp(-t_l |δ|) + shift),  l < max_len     implicit filters (N, D, max_len)
    z^1 = v,   z^{n+1}_t = x^n_t ⊙ ((h^n * z^n)_t + β^n ⊙ z^n_t),   out = W_out z^{N+1}

so for N = 2: y = x^2 ⊙ (h^2 * (x^1 ⊙ (h^1 * v))), the paper's recurrence (the safari code's
"order 2" instead applies one filter after gating). pe(l) = [t_l, cos(2π f l / max_len),
-sin(2π f l / max_len)] with t_l = l / (max_len - 1); the FFN is Linear, Sin, (Linear, Sin) x
num_inner_mlps, Linear (no bias) with one trained Sin frequency vector; δ is fixed (decay rates
from fast_decay_pct to slow_decay_pct); β is the per-channel skip ("bias") of the safari filter.
The positional encoding is a fixed buffer here (safari trains it with lr 1e-5).

The filters have max_len taps: a row longer than max_len (counting the tokens already in its
state) raises. Modes: ``fft`` (ops.long_conv FFT) and ``reference`` (its tap-by-tap sum).
State: (conv_state (B, 2, (N+1) D), then for each filter n the input history of its convolution,
z^n (B, T, D), then length (B,) float, the tokens seen per row). Each row's history is
right-aligned (its newest input in the last slot, zeros before its first), and T is the longest
row's length rounded up to a multiple of ``history_block``: a row's history in another batch
differs only by leading zeros (within a block, not even in shape), and the state grows by a
block, not by a token. Streaming is exact,
but the state grows with the length (``state_size_at``: 2 (N+1) D + N D T + 1 floats) and
``step`` costs O(T (D + F²)) at position T (T taps per channel, the filter FFN at T positions),
so L tokens streamed cost O(L²): Hyena has no constant-size recurrent form.
"""
from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import torch
from torch import Tensor, nn

from ..config import check
from ..ops import long_conv as long_conv_op
from ..ops.long_conv import long_conv, long_conv_step
from ..ops.short_conv import conv_state_at, short_conv, short_conv_step
from .base import MixerConfig, SequenceMixer, tag_ssm_param
from .call import ForwardCall
from .registry import register_mixer


@dataclasses.dataclass
class HyenaConfig(MixerConfig):
    LENGTH_FIELD: ClassVar[str | None] = "max_len"
    max_len: int = 2048  # filter length: sequences (with the tokens in the state) up to max_len
    order: int = 2  # N: number of long filters (N + 1 projections)
    filter_order: int = 64  # F: width of the filter FFN
    emb_dim: int = 3  # positional-encoding features: t and (emb_dim - 1) / 2 cos/sin bands; odd >= 3
    num_inner_mlps: int = 2  # hidden (Linear, Sin) layers of the filter FFN after the first
    sin_freq: float = 1.0  # initial frequency w of the Sin activations
    short_filter_order: int = 3  # kernel of the depthwise convolution on the projections
    fast_decay_pct: float = 0.3  # the fastest channel's window reaches `target` at this fraction of max_len
    slow_decay_pct: float = 1.5  # the slowest channel's window reaches `target` at this fraction
    target: float = 1e-2
    modulation_shift: float = 0.0  # window = exp(-t |δ|) + shift
    history_block: int = 64  # the state's input histories hold a multiple of this many steps
    ssm_lr: float | None = 1e-3  # learning rate of the filter FFN, its frequencies and β (safari: 1e-3)

    def __post_init__(self) -> None:
        for name in ("max_len", "order", "filter_order", "short_filter_order", "history_block"):
            v = getattr(self, name)
            check(v >= 1, name, f"must be an int >= 1, got {v!r}")
        n = self.num_inner_mlps
        check(n >= 0, "num_inner_mlps", f"must be an int >= 0, got {n!r}")
        e = self.emb_dim
        check(e >= 3 and e % 2 == 1, "emb_dim",
              f"must be an odd int >= 3 (time, then cos/sin pairs), got {e!r}")
        check(0 < self.fast_decay_pct <= self.slow_decay_pct, "fast_decay_pct",
              f"need 0 < fast_decay_pct <= slow_decay_pct, got {self.fast_decay_pct}, {self.slow_decay_pct}")
        check(0 < self.target < 1, "target", f"must be in (0, 1), got {self.target}")
        check(self.ssm_lr is None or self.ssm_lr > 0, "ssm_lr", f"must be None or > 0, got {self.ssm_lr}")


def positional_encoding(max_len: int, emb_dim: int) -> tuple[Tensor, Tensor]:
    """(z (max_len, emb_dim), t (max_len, 1)) float64: z = [t, Re, Im of exp(-2πi f l / max_len)]."""
    t = torch.linspace(0, 1, max_len, dtype=torch.float64)[:, None]
    bands = (emb_dim - 1) // 2
    f = torch.linspace(1e-4, bands - 1, bands, dtype=torch.float64)
    w = 2 * math.pi * torch.arange(max_len, dtype=torch.float64)[:, None] / max_len
    return torch.cat([t, torch.cos(f * w), -torch.sin(f * w)], dim=-1), t


class Sin(nn.Module):
    """sin(freq ⊙ x) with a trained frequency per feature."""

    def __init__(self, dim: int, w: float) -> None:
        super().__init__()
        self.freq = nn.Parameter(torch.full((dim,), float(w)))

    def forward(self, x: Tensor) -> Tensor:
        return torch.sin(self.freq * x)


@register_mixer("hyena")
class Hyena(SequenceMixer):
    """Hyena operator (B, L, D) -> (B, L, D). Modes: ``fft``, ``reference``; L <= max_len."""
    cp_refusal = ("its long convolution reads the whole input history (the state grows with L): an exact split "
                  "needs every earlier chunk's inputs, not implemented")

    Config = HyenaConfig
    modes = long_conv_op.MODES  # fft, reference: the long convolutions' modes

    def __init__(self, d_model: int, mode: str = "auto", **cfg) -> None:
        super().__init__(d_model, mode, **cfg)
        c, D = self.config, d_model
        N, Fw = c.order, c.filter_order
        self.in_proj = nn.Linear(D, (N + 1) * D)
        self.short_filter = nn.Conv1d((N + 1) * D, (N + 1) * D, c.short_filter_order, groups=(N + 1) * D,
                                      padding=c.short_filter_order - 1)
        dtype = torch.get_default_dtype()
        z, t = positional_encoding(c.max_len, c.emb_dim)
        max_decay, min_decay = math.log(c.target) / c.fast_decay_pct, math.log(c.target) / c.slow_decay_pct
        deltas = torch.linspace(min_decay, max_decay, N * D, dtype=torch.float64)
        self.register_buffer("pos_emb", z.to(dtype))
        self.register_buffer("pos_t", t.to(dtype))
        self.register_buffer("deltas", deltas.to(dtype))
        self.filter_act = Sin(Fw, c.sin_freq)  # one activation (one frequency vector) for every layer
        sizes = [c.emb_dim] + [Fw] * (c.num_inner_mlps + 1)
        self.filter_linears = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.filter_out = nn.Linear(Fw, N * D, bias=False)
        self.filter_bias = nn.Parameter(torch.randn(N * D))  # β: the per-channel skip of each filter
        self.out_proj = nn.Linear(D, D)
        for p in (*self.filter_linears.parameters(), *self.filter_out.parameters(), self.filter_act.freq,
                  self.filter_bias):
            tag_ssm_param(p, lr=c.ssm_lr)

    def filters(self, T: int) -> Tensor:
        """The first T taps of the N implicit filters: (N, D, T); tap l multiplies the input l steps back."""
        h = self.pos_emb[:T]
        for lin in self.filter_linears:
            h = self.filter_act(lin(h))
        h = self.filter_out(h) * (torch.exp(-self.pos_t[:T] * self.deltas.abs()) + self.config.modulation_shift)
        return h.T.unflatten(0, (self.config.order, self.d_model))

    def _check_length(self, longest: int) -> None:
        """longest: the most tokens any row holds after this call."""
        if longest > self.config.max_len:
            raise ValueError(
                f"hyena: sequence too long: a row reaches {longest} tokens (with those already in the state) > "
                f"max_len={self.config.max_len}; the implicit filters have max_len taps (set max_len larger)"
            )

    def _unpack(self, state, B: int, like: Tensor) -> tuple[Tensor | None, list[Tensor], Tensor]:
        if state is None:
            return None, [like.new_zeros(B, 0, self.d_model)] * self.config.order, like.new_zeros(B)
        conv_state, *hists, length = state
        return conv_state, hists, length

    def _forward(self, x: Tensor, state, call: ForwardCall):
        B, L, D = x.shape
        c = self.config
        conv_state, hists, length = self._unpack(state, B, x)
        n_new = torch.full((B,), L, device=x.device) if call.lengths is None else call.lengths
        end = length.detach().round().long() + n_new
        # From no state and no padding every row ends at L: known without a host sync, so
        # torch.compile traces the forward whole (docs/compile.md).
        longest = L if state is None and call.lengths is None else int(end.max())
        self._check_length(longest)
        T0, T = hists[0].shape[1], self._capacity(longest)
        u = self.in_proj(x)
        short_mode = "reference" if call.mode == "reference" else "auto"
        uc, conv_final = short_conv(u, self.short_filter.weight[:, 0, :], self.short_filter.bias, conv_state,
                                    mode=short_mode)
        if call.lengths is not None:
            conv_final = conv_state_at(u, conv_state, call.lengths, c.short_filter_order)
        *xs, z = uc.split(D, dim=-1)
        # No row is longer than max_len, so taps past it reach only the zeros before a row's start.
        h = self.filters(min(T0 + L, c.max_len))
        beta = self.filter_bias.view(c.order, D)
        new_hists = []
        for n in range(c.order):
            ext = torch.cat([hists[n], z], dim=1)  # (B, T0 + L, D): the whole input of this convolution
            y, _ = long_conv(ext, h[n], mode=call.mode)
            new_hists.append(_right_align(ext, T0 + n_new, T))
            z = xs[n] * (y[:, T0:] + beta[n] * z)
        return self.out_proj(z), (conv_final, *new_hists, length + n_new.to(length.dtype))

    def _step(self, x_t: Tensor, state, dt: Tensor | None):
        conv_state, hists, length = self._unpack(state, x_t.shape[0], x_t)
        c = self.config
        end = length.detach().round().long() + 1
        longest = int(end.max())
        self._check_length(longest)
        T0, T = hists[0].shape[1], self._capacity(longest)
        uc, conv_state = short_conv_step(self.in_proj(x_t), self.short_filter.weight[:, 0, :],
                                         self.short_filter.bias, conv_state)
        *xs, z = uc.split(self.d_model, dim=-1)
        taps = min(T0 + 1, c.max_len)  # no row is longer than max_len: older inputs are zeros
        h = self.filters(taps)  # (N, D, taps)
        beta = self.filter_bias.view(c.order, self.d_model)
        new_hists = []
        for n in range(c.order):
            y, _ = long_conv_step(z, h[n], hists[n][:, T0 - (taps - 1):])  # the last taps-1 inputs
            new_hists.append(_right_align(torch.cat([hists[n], z[:, None]], dim=1), torch.full_like(end, T0 + 1), T))
            z = xs[n] * (y + beta[n] * z)
        return self.out_proj(z), (conv_state, *new_hists, length + 1)

    def _capacity(self, longest: int) -> int:
        """History slots for rows of at most ``longest`` tokens, rounded up to history_block."""
        blk = self.config.history_block
        return -(-longest // blk) * blk

    def _zero_state(self, batch_size, device, dtype):
        c, D = self.config, self.d_model
        conv = torch.zeros(batch_size, c.short_filter_order - 1, (c.order + 1) * D, dtype=dtype, device=device)
        hists = (torch.zeros(batch_size, 0, D, dtype=dtype, device=device) for _ in range(c.order))
        return (conv, *hists, torch.zeros(batch_size, dtype=dtype, device=device))

    @property
    def state_size(self) -> int:
        """The state at max_len, the most it ever holds (see ``state_size_at``)."""
        return self.state_size_at(self.config.max_len)

    def state_size_at(self, length: int) -> int:
        c = self.config
        T = -(-min(length, c.max_len) // c.history_block) * c.history_block
        return (c.short_filter_order - 1) * (c.order + 1) * self.d_model + c.order * self.d_model * T + 1

    def _growing_state_dims(self) -> dict[int, int]:
        return {n: 1 for n in range(1, self.config.order + 1)}  # the input histories (B, T, D)


def _right_align(ext: Tensor, filled: Tensor, T: int) -> Tensor:
    """ext (B, S, D) whose row b holds its inputs at [:filled[b]] preceded by zeros -> (B, T, D) with
    row b's newest input in the last slot (T >= every row's length, so only zeros are dropped)."""
    B, _, D = ext.shape
    idx = torch.arange(T, device=ext.device) + (filled[:, None] - T)  # (B, T): source slot
    out = ext.gather(1, idx.clamp(min=0)[..., None].expand(B, T, D))
    return out * (idx >= 0)[..., None].to(ext.dtype)
