"""Time-series architectures over any mixer stack: ``forecaster`` and ``ts_classifier``.

``forecaster`` (tasks of kind ``forecast``): multi-step *direct* forecasting. RevIN normalizes
each lookback window (``revin.py``), a linear encoder lifts the C channels to D, the Backbone
mixes, and one linear head emits all ``horizon`` steps at once (no autoregressive feedback, so
errors do not compound), which RevIN maps back to the data's units. Heads:

- ``last``: Linear(D -> horizon * C) on the last real position's hidden state (causal mixers
  summarize the whole lookback there);
- ``flatten``: Linear(window * D -> horizon * C) on the hidden states of the last ``window`` real
  positions (DLinear / PatchTST-style readout; fewer real positions than ``window`` are zero
  filled on the left, as if the series had started with padding).

``channel_independent=True`` runs every channel as its own univariate series through one shared
encoder / backbone / head (PatchTST's channel independence): (B, L, C) -> (B*C, L, 1).

``ts_classifier`` (kind ``classify``): optional per-instance normalization (RevIN statistics,
no inverse), encoder -> Backbone, then masked pooling of the real positions (``mean``, ``max``
or the ``last`` real token) -> Linear(D -> classes). Variable-length rows (UEA JapaneseVowels)
come with a mask; padded positions change no output.

Both accept ``dt`` (B, L) per-token time deltas and pass them to the backbone when given.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from ..config import check
from ..layers.base import compact
from .backbone import Backbone, BackboneConfig
from .kinds import TaskKind
from .registry import DataSpec, register_arch
from .revin import NORMS, RevIN

HEADS = ("last", "flatten")
TS_POOLS = ("mean", "max", "last")


def _check_features(inputs: Tensor, mask: Tensor | None, C: int) -> None:
    if inputs.ndim != 3 or inputs.shape[-1] != C or not inputs.is_floating_point():
        raise ValueError(f"expected float inputs (B, L, C={C}), got {inputs.dtype} {tuple(inputs.shape)}")
    if mask is not None:
        if mask.shape != inputs.shape[:2] or mask.dtype != torch.bool:
            raise ValueError(f"mask must be bool (B, L) = {tuple(inputs.shape[:2])}, got {mask.dtype} {tuple(mask.shape)}")
        if not bool(mask.any(1).all()):
            raise ValueError("a row of the batch has no real position (mask all False)")


def _zero_padding(x: Tensor, mask: Tensor | None) -> Tensor:
    """Padded entries replaced by zeros (whatever they held, NaN included)."""
    return x if mask is None else torch.where(mask[..., None], x, torch.zeros((), dtype=x.dtype, device=x.device))


def _backbone(backbone: Backbone, h: Tensor, mask: Tensor | None, dt: Tensor | None) -> Tensor:
    # dt only when given: backbones without time deltas keep working unchanged
    return backbone(h, mask=mask) if dt is None else backbone(h, mask=mask, dt=dt)


def last_real(h: Tensor, mask: Tensor | None) -> Tensor:
    """(B, L, D) -> (B, D): the hidden state at each row's last real position."""
    if mask is None:
        return h[:, -1]
    last = (mask.long().cumsum(1)).argmax(1)  # first position reaching the row's count of real tokens
    return h[torch.arange(h.shape[0], device=h.device), last]


def last_window(h: Tensor, mask: Tensor | None, window: int) -> Tensor:
    """(B, L, D) -> (B, window, D): the last ``window`` real positions in order, zero filled on the left."""
    B, L, D = h.shape
    if mask is None:
        lengths = torch.full((B,), L, dtype=torch.long, device=h.device)
    else:
        h, lengths, _ = compact(h, mask)  # real positions first, in order
    idx = lengths[:, None] - window + torch.arange(window, device=h.device)  # (B, window)
    got = h.gather(1, idx.clamp(0, L - 1)[..., None].expand(B, window, D))
    return torch.where((idx >= 0)[..., None], got, torch.zeros((), dtype=h.dtype, device=h.device))


def masked_pool(h: Tensor, mask: Tensor | None, how: str) -> Tensor:
    """(B, L, D) -> (B, D): mean / max over the real positions, or the last real one."""
    if how == "last":
        return last_real(h, mask)
    if mask is None:
        return h.mean(1) if how == "mean" else h.amax(1)
    w = mask[..., None]
    if how == "mean":
        return torch.where(w, h, torch.zeros((), dtype=h.dtype, device=h.device)).sum(1) / w.sum(1).to(h.dtype)
    if how == "max":
        return torch.where(w, h, torch.full((), float("-inf"), dtype=h.dtype, device=h.device)).amax(1)
    raise ValueError(f"unknown pooling {how!r}; expected one of {TS_POOLS}")


# ---------------------------------------------------------------- forecaster


@dataclasses.dataclass
class ForecasterConfig:
    head: str = "last"  # last | flatten (see the module docstring)
    window: int = 16  # flatten: hidden states of the last `window` real positions feed the head
    revin: str = "affine"  # affine (learned gamma, beta) | plain (statistics only) | none
    channel_independent: bool = False  # every channel its own univariate series, shared weights
    eps: float = 1e-5  # RevIN: sigma = sqrt(var + eps)

    def __post_init__(self) -> None:
        check(self.head in HEADS, "head", f"must be one of {HEADS}, got {self.head!r}")
        check(self.window >= 1, "window", f"must be >= 1, got {self.window}")
        check(self.revin in NORMS, "revin", f"must be one of {NORMS}, got {self.revin!r}")
        check(self.eps > 0, "eps", f"must be > 0, got {self.eps}")


class Forecaster(nn.Module):
    """(B, L, C) lookback [+ mask (B, L)] -> (B, horizon, C) forecast in the inputs' units."""

    def __init__(self, backbone: BackboneConfig, d_input: int, horizon: int, cfg: ForecasterConfig) -> None:
        super().__init__()
        check(horizon > 0, "horizon", f"must be > 0 for forecasting, got {horizon}")
        check(d_input > 0, "d_input", f"must be > 0, got {d_input}")
        self.cfg, self.horizon, self.d_input = cfg, horizon, d_input
        self.revin = None if cfg.revin == "none" else RevIN(d_input, affine=cfg.revin == "affine", eps=cfg.eps)
        c = 1 if cfg.channel_independent else d_input  # channels one sequence carries
        D = backbone.d_model
        self.encoder = nn.Linear(c, D)
        self.backbone = Backbone(backbone)
        self.head = nn.Linear(D * (cfg.window if cfg.head == "flatten" else 1), horizon * c)

    def forward(self, inputs: Tensor, mask: Tensor | None = None, dt: Tensor | None = None) -> Tensor:
        _check_features(inputs, mask, self.d_input)
        B, L, C = inputs.shape
        if self.revin is not None:
            z, stats = self.revin.normalize(inputs, mask)
        else:
            z = _zero_padding(inputs, mask)
        if self.cfg.channel_independent:  # (B, L, C) -> (B*C, L, 1), row b*C + c is channel c of row b
            z = z.transpose(1, 2).reshape(B * C, L, 1)
            mask = None if mask is None else mask.repeat_interleave(C, 0)
            dt = None if dt is None else dt.repeat_interleave(C, 0)
        h = _backbone(self.backbone, self.encoder(z), mask, dt)  # (B', L, D)
        feats = last_real(h, mask) if self.cfg.head == "last" else last_window(h, mask, self.cfg.window).flatten(1)
        out = self.head(feats)  # (B', horizon * c)
        if self.cfg.channel_independent:
            out = out.view(B, C, self.horizon).transpose(1, 2)
        else:
            out = out.view(B, self.horizon, C)
        return out if self.revin is None else self.revin.denormalize(out, stats)


@register_arch("forecaster", ForecasterConfig)
def build_forecaster(backbone: BackboneConfig, spec: DataSpec, pool: str, cfg: ForecasterConfig) -> Forecaster:
    """Direct multi-step forecaster with RevIN (tasks of kind forecast)."""
    if spec.kind != TaskKind.FORECAST or spec.vocab_size is not None:
        raise ValueError(f"architecture 'forecaster' needs a forecast task with feature inputs, got kind "
                         f"'{spec.kind}'" + (" with token inputs" if spec.vocab_size is not None else ""))
    return Forecaster(backbone, spec.d_input, spec.horizon, cfg)


# ---------------------------------------------------------------- classifier


@dataclasses.dataclass
class TsClassifierConfig:
    # mean | max | last; None: the run's `pool` setting (mean by default; it knows no max). Not
    # named `pool`: build_model(backbone, pool, **arch_cfg) already takes the run's pool by that name
    pooling: str | None = None
    instance_norm: str = "none"  # affine | plain | none: per-instance standardization of the inputs
    eps: float = 1e-5

    def __post_init__(self) -> None:
        check(self.pooling is None or self.pooling in TS_POOLS, "pooling",
              f"must be one of {TS_POOLS}, got {self.pooling!r}")
        check(self.instance_norm in NORMS, "instance_norm", f"must be one of {NORMS}, got {self.instance_norm!r}")
        check(self.eps > 0, "eps", f"must be > 0, got {self.eps}")


class TsClassifier(nn.Module):
    """(B, L, C) series [+ mask (B, L)] -> (B, classes) logits through masked pooling."""

    def __init__(self, backbone: BackboneConfig, d_input: int, n_classes: int, pool: str,
                 instance_norm: str = "none", eps: float = 1e-5) -> None:
        super().__init__()
        check(pool in TS_POOLS, "pool", f"must be one of {TS_POOLS}, got {pool!r}")
        check(n_classes > 0, "n_classes", f"must be > 0, got {n_classes}")
        check(instance_norm in NORMS, "instance_norm", f"must be one of {NORMS}, got {instance_norm!r}")
        self.pool, self.d_input = pool, d_input
        self.norm = None if instance_norm == "none" else RevIN(d_input, affine=instance_norm == "affine", eps=eps)
        self.encoder = nn.Linear(d_input, backbone.d_model)
        self.backbone = Backbone(backbone)
        self.head = nn.Linear(backbone.d_model, n_classes)

    def forward(self, inputs: Tensor, mask: Tensor | None = None, dt: Tensor | None = None) -> Tensor:
        _check_features(inputs, mask, self.d_input)
        if self.norm is not None:
            x, _ = self.norm.normalize(inputs, mask)
        else:
            x = _zero_padding(inputs, mask)
        h = _backbone(self.backbone, self.encoder(x), mask, dt)
        return self.head(masked_pool(h, mask, self.pool))


@register_arch("ts_classifier", TsClassifierConfig)
def build_ts_classifier(backbone: BackboneConfig, spec: DataSpec, pool: str, cfg: TsClassifierConfig) -> TsClassifier:
    """Time-series classifier with masked mean / max / last pooling (tasks of kind classify)."""
    if spec.kind != TaskKind.CLASSIFY or spec.vocab_size is not None:
        raise ValueError(f"architecture 'ts_classifier' needs a classify task with feature inputs, got kind "
                         f"'{spec.kind}'" + (" with token inputs" if spec.vocab_size is not None else ""))
    return TsClassifier(backbone, spec.d_input, spec.n_out, cfg.pooling or pool, cfg.instance_norm, cfg.eps)
