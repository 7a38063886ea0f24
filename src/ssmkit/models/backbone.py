"""Residual stack of any registered mixers: x <- x + mixer(norm(x)) [+ x + ffn(norm(x))] (pre-norm,
the default) or x <- norm(x + mixer(x)) [then norm(x + ffn(x))] (``residual="post"``, the original
S4 models), then a final norm (``final_norm``). The FFN's kind and width: ``models.ffn``.

``BackboneConfig.mixer`` names the mixer of every layer (``"s4d"``) or of each layer, a hybrid
(``("s4d", "s4d", "s5")``; ``"s4d,s4d,s5"`` is read as that tuple), and ``mixer_cfg`` holds settings
shared by the mixers that have them and per mixer name (``models.mixer_stack``). The stack keeps the
SequenceMixer contract: ``forward`` with
state and mask, pure ``step``, ``init_state``; its state is the tuple of its layers' states.
Per-token time deltas ``dt`` (irregular sampling, docs/irregular.md) go to every layer's mixer, and so
do ``cu_seqlens``, the document offsets of one packed row (docs/packing.md): norms and FFNs act per
token, so the stack runs each document as if alone when its mixers do.
Activation checkpointing (``Backbone.checkpoint_blocks``, set by training's
``checkpoint_activations``): under autograd each block keeps only its input and recomputes its
inside during the backward pass (``torch.utils.checkpoint``, dropout replayed), so activation
memory holds one block's intermediates instead of every block's; outputs and gradients are unchanged.
The input is checked for NaN / Inf once per call, here (``check_finite``), not by every layer.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..config import check
from ..layers import create_mixer
from ..layers.base import check_finite, skip_finite_checks
from ..layers.state import State
from .ffn import FFNS, make_ffn
from .mixer_stack import Mixer, check_mixer_cfg, distinct, mixer_label, normalize_mixer, settings_for

NORMS = ("rmsnorm", "layernorm")
RESIDUALS = ("pre", "post")


@dataclasses.dataclass
class BackboneConfig:
    d_model: int = 64  # D
    n_layers: int = 2
    mixer: Mixer = "s4d"  # one name for every layer, or a tuple of one name per layer (a hybrid)
    mixer_cfg: dict[str, Any] = dataclasses.field(default_factory=dict)  # shared and per-name settings (mixer_stack)
    norm: str = "rmsnorm"
    norm_eps: float = 1e-5
    ffn_mult: int = 0  # hidden width multiple of a GELU MLP after each mixer; 0 = no MLP
    ffn_hidden: int = 0  # the FFN's hidden width, when set (overrides ffn_mult)
    ffn: str = "gelu"  # the FFN's kind: "gelu" | "swiglu" | "geglu_tanh" (models.ffn)
    ffn_bias: bool = True  # biases on the FFN's linear maps
    residual: str = "pre"  # "pre": x + f(norm(x)); "post": norm(x + f(x))
    final_norm: bool = True  # a norm after the last block
    dropout: float = 0.0
    # Raise on NaN / Inf in the input, once per forward (CPU tensors only: on a GPU it would be a host sync).
    check_finite: bool = True

    def __post_init__(self) -> None:
        check(self.d_model > 0, "d_model", f"must be > 0, got {self.d_model}")
        check(self.n_layers > 0, "n_layers", f"must be > 0, got {self.n_layers}")
        check(self.norm in NORMS, "norm", f"must be one of {NORMS}, got {self.norm!r}")
        check(self.norm_eps > 0, "norm_eps", f"must be > 0, got {self.norm_eps}")
        check(self.ffn_mult >= 0, "ffn_mult", f"must be >= 0, got {self.ffn_mult}")
        check(self.ffn_hidden >= 0, "ffn_hidden", f"must be >= 0, got {self.ffn_hidden}")
        check(self.ffn in FFNS, "ffn", f"must be one of {FFNS}, got {self.ffn!r}")
        check(self.residual in RESIDUALS, "residual", f"must be one of {RESIDUALS}, got {self.residual!r}")
        check(0.0 <= self.dropout < 1.0, "dropout", f"must be in [0, 1), got {self.dropout}")
        self.mixer = normalize_mixer(self.mixer)
        n = 1 if isinstance(self.mixer, str) else len(self.mixer)
        check(n in (1, self.n_layers), "mixer", f"names {n} layers but n_layers={self.n_layers}")
        check(isinstance(self.mixer_cfg, dict), "mixer_cfg", f"must be a dict, got {self.mixer_cfg!r}")
        check_mixer_cfg(self.mixer, self.mixer_cfg)

    def layer_names(self) -> list[str]:
        """The mixer of each layer."""
        return [self.mixer] * self.n_layers if isinstance(self.mixer, str) else list(self.mixer)

    def mixers(self) -> tuple[str, ...]:
        """The stack's mixers, each once, in layer order."""
        return distinct(self.mixer)

    def mixer_settings(self, name: str) -> dict[str, Any]:
        """Keyword arguments of ``create_mixer(name, d_model, **kw)`` for a layer running ``name``."""
        return settings_for(name, self.mixer_cfg)

    def mixer_label(self) -> str:
        """``"s4d"`` or ``"s4d,mamba,attention"``, as the command line writes it."""
        return mixer_label(self.mixer)

    def ffn_width(self) -> int:
        """The FFN's hidden width; 0: no FFN."""
        return self.ffn_hidden or self.ffn_mult * self.d_model


def make_norm(cfg: BackboneConfig) -> nn.Module:
    return (nn.RMSNorm if cfg.norm == "rmsnorm" else nn.LayerNorm)(cfg.d_model, eps=cfg.norm_eps)


class Block(nn.Module):
    """x <- x + mixer(norm(x)) [+ ffn] (or the post-norm order, ``BackboneConfig.residual``).
    ``mixer`` replaces the registered mixer ``name`` (e.g. the multi-direction scans of
    ``models.scans``); it is called as ``mixer(x, state, mask, return_state=True)``."""

    def __init__(self, name: str, cfg: BackboneConfig, mixer: nn.Module | None = None) -> None:
        super().__init__()
        self.post = cfg.residual == "post"
        self.norm = make_norm(cfg)
        self.mixer = mixer if mixer is not None else create_mixer(name, cfg.d_model, **cfg.mixer_settings(name))
        skip_finite_checks(self.mixer)  # the stack checks its input once (BackboneConfig.check_finite)
        self.drop = nn.Dropout(cfg.dropout)
        self.ffn = make_ffn(cfg.ffn, cfg.d_model, cfg.ffn_width(), cfg.ffn_bias)
        if self.ffn is not None:
            self.ffn_norm = make_norm(cfg)

    def _ffn(self, x: Tensor) -> Tensor:
        if self.ffn is None:
            return x
        if self.post:
            return self.ffn_norm(x + self.drop(self.ffn(x)))
        return x + self.drop(self.ffn(self.ffn_norm(x)))

    def _add(self, x: Tensor, y: Tensor) -> Tensor:
        """The mixer's residual connection; the FFN follows."""
        return self._ffn(self.norm(x + y) if self.post else x + y)

    def forward(self, x: Tensor, state: State, mask: Tensor | None, dt: Tensor | None = None,
                cu_seqlens: Tensor | None = None, return_state: bool = True) -> tuple[Tensor, State]:
        """(output, the mixer's final state; None for a packed row when ``return_state`` is False:
        a packed row without states lets a mixer reset natively, in one pass)."""
        h = x if self.post else self.norm(x)
        if cu_seqlens is None:  # a replaced mixer (models.scans) need not take cu_seqlens
            y, state = self.mixer(h, state, mask, dt=dt, return_state=True)
        elif return_state:
            y, state = self.mixer(h, state, mask, dt=dt, cu_seqlens=cu_seqlens, return_state=True)
        else:
            y, state = self.mixer(h, state, mask, dt=dt, cu_seqlens=cu_seqlens), None
        return self._add(x, self.drop(y)), state

    def step(self, x_t: Tensor, state: State, dt: Tensor | None = None) -> tuple[Tensor, State]:
        y, state = self.mixer.step(x_t if self.post else self.norm(x_t), state, dt=dt)
        return self._add(x_t, y), state


class Backbone(nn.Module):
    """(B, L, D) -> (B, L, D) through ``n_layers`` residual blocks and a final norm."""

    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()
        self.config = cfg
        self.blocks = nn.ModuleList(Block(name, cfg) for name in cfg.layer_names())
        self.norm = make_norm(cfg) if cfg.final_norm else nn.Identity()
        self.checkpoint_blocks = False  # recompute each block in backward (module doc); not a weight

    def forward(
        self, x: Tensor, state: tuple | None = None, mask: Tensor | None = None, *,
        dt: Tensor | None = None, cu_seqlens: Tensor | None = None, return_state: bool = False,
    ) -> Tensor | tuple[Tensor, tuple]:
        """x (B, L, D); ``dt`` (B, L) time deltas for every layer (each must accept them);
        ``cu_seqlens`` (N + 1,) int32: x (1, L, D) is a packed row of N documents, each layer's state
        has N rows (one per document)."""
        if self.config.check_finite:
            check_finite(x, "the backbone's input x (B, L, D)")
        if dt is not None:
            self.check_accepts_dt()
        states = state if state is not None else (None,) * len(self.blocks)
        new = []
        recompute = self.checkpoint_blocks and torch.is_grad_enabled()
        for block, s in zip(self.blocks, states):
            if recompute:
                x, s = checkpoint(block, x, s, mask, dt, cu_seqlens, return_state, use_reentrant=False)
            else:
                x, s = block(x, s, mask, dt, cu_seqlens, return_state)
            new.append(s)
        x = self.norm(x)
        return (x, tuple(new)) if return_state else x

    def check_accepts_dt(self) -> None:
        """Raise, naming the layers, unless every mixer of the stack takes per-token time deltas."""
        bad = [f"layer {i} ({b.mixer.mixer_name or type(b.mixer).__name__})"
               for i, b in enumerate(self.blocks) if not b.mixer.accepts_dt]
        if bad:
            from ..layers import get_mixer_class, list_mixers

            takers = [n for n in list_mixers() if get_mixer_class(n).accepts_dt]
            raise ValueError(f"dt (per-token time deltas) was given but {', '.join(bad)} cannot take it; "
                             f"mixers that can: {takers} (docs/irregular.md)")

    def step(self, x_t: Tensor, state: tuple, dt: Tensor | None = None) -> tuple[Tensor, tuple]:
        """One token x_t (B, D); ``dt`` (B,) the time since the previous token."""
        if dt is not None:
            self.check_accepts_dt()
        new = []
        for block, s in zip(self.blocks, state):
            x_t, s = block.step(x_t, s, dt)
            new.append(s)
        return self.norm(x_t), tuple(new)

    def init_state(self, batch_size: int, device=None, dtype=None) -> tuple:
        return tuple(b.mixer.init_state(batch_size, device, dtype) for b in self.blocks)

    @property
    def state_size(self) -> int:
        return sum(b.mixer.state_size for b in self.blocks)
