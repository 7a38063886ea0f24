"""The SequenceMixer interface that every model family implements (DESIGN.md section 2).

Dimension legend: B batch, L length, D model width, H heads, N state size, P head dim,
K key dim, V value dim, C chunk length.

A subclass declares ``modes`` (computation modes it supports, by name, or its op's ``Modes``), a
``Config`` dataclass, and implements ``_forward(x, state, call)``, ``_step(x_t, state, dt)``,
``_zero_state(batch_size, device, dtype)`` and ``state_size``: one signature each, for every family.
The base class owns what must be identical for every family: input validation, mode resolution,
padding masks, and the device and dtype of ``init_state``.

Padding masks are normalized here, once, for every family: real tokens of each row are moved to
the front (a stable gather), so ``_forward`` only ever sees right-padded input plus per-row
``call.lengths`` (``layers.call.ForwardCall``). A layer then only has to guarantee that outputs at
``t < lengths[b]`` are right and that the final state is the state after ``lengths[b]`` tokens
(``call.zero_pads`` / ``call.one_pads`` make padded steps identities); outputs at padded positions
are set to zero by the base class. Masked positions therefore never change the state or the
outputs of real positions, wherever they sit (left, right or in the middle).

Validation at the door, the same for every family (docs/architecture.md): x must have the
parameters' dtype (or the autocast dtype under autocast; a mixer never casts its input) and device;
a state must have the structure, per-tensor shapes after the batch (but for the dims a family names
in ``_growing_state_dims``), dtype and device of the family's zero state; an empty batch runs as one
zero row whose results are dropped (``_one_row``); config fields are type-checked (``MixerConfig``).
These read metadata only: ``step`` gains no host sync.

Non-finite input: a mixer called directly checks its input once per forward (``check_finite``); a
stack (``models.backbone``) checks its own input once and turns that off for its layers
(``skip_finite_checks``). ``step`` never checks values. A check of tensor values needs the host
to read them: free on a CPU, a stall of the stream on a GPU. So value checks (NaN / Inf, dt > 0,
token ids in range) run for CPU tensors only (``checks_values``): on CUDA, ``forward`` and ``step``
never synchronize with the host (docs/gpu.md), and a bad value propagates (a NaN loss stops
training, naming the step).

Mixed precision (docs/training.md, bf16): under autocast a family's recurrence / kernel / scan
runs in float32 (``ssmkit.core.precision.float32_core`` on the ops and core kernels), states stay
float32 / complex64, and the output is in the autocast dtype (set here, once, for every family).

Irregular sampling (docs/irregular.md): a family with ``accepts_dt = True`` takes per-token time
deltas ``dt`` (B, L) (``step``: (B,)) that multiply its learned step, Δ_t = dt_t · Δ. The base
validates dt, compacts it together with x under a mask (padded slots get dt = 1, never read), and
hands it to ``_forward`` as ``call.dt`` and to ``_step`` as ``dt`` (None when not given). Modes that cannot take a
time-varying step are left out of ``dt_modes``: ``auto`` then falls back (logged once) and an
explicit request raises. Every other family rejects dt with an error naming it.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..config import build_config, check, check_types
from ..core.precision import autocast_active
from ..log import log_once
from ..ops.dispatch import Modes
from .call import ForwardCall, document_lengths, lengths_mask, repack, unpack
from .state import State, StateSpec, describe_state, flatten_state, index_state, map_state


@dataclasses.dataclass
class MixerConfig:
    """Base of every mixer's typed configuration; subclasses validate their rules in ``__post_init__``.

    Every field is checked against its annotation first (``config.check_types``: ``d_state=8.5``,
    ``"8"`` or ``True`` for an int field is a TypeError naming the field and the type), for every
    subclass: the base runs the check before a subclass's own ``__post_init__``, so the rules only
    ever see values of the annotated types.
    """

    # The field that bounds the sequence length a mixer can run (hyena's filter length max_len);
    # None: any length. Benchmarks size it for the lengths they ask (``registry.sized_for``).
    LENGTH_FIELD: ClassVar[str | None] = None

    @classmethod
    def sized_for_length(cls, cfg: dict[str, Any], length: int) -> dict[str, Any]:
        """``cfg`` with whatever bounds the length raised to run ``length`` tokens: ``LENGTH_FIELD``
        by default; a family bound otherwise (S4ND's image) overrides this."""
        field = cls.LENGTH_FIELD
        if field is None:
            return dict(cfg)
        current = cfg.get(field, next(f.default for f in dataclasses.fields(cls) if f.name == field))
        return {**cfg, field: max(current, length)}

    def __post_init__(self) -> None:
        check_types(self)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        rules = cls.__dict__.get("__post_init__")
        if rules is None:
            return

        @functools.wraps(rules)
        def __post_init__(self: MixerConfig) -> None:
            check_types(self)  # idempotent: a subclass calling super().__post_init__() checks again, cheaply
            rules(self)

        cls.__post_init__ = __post_init__


def resolve_heads(n_heads: int | None, d_model: int, head_size: int = 64) -> int:
    """``n_heads`` or, when None/0, one head per ``head_size`` channels (at least one); it must divide
    ``d_model`` (an error naming the ``n_heads`` field otherwise)."""
    H = n_heads or max(1, d_model // head_size)
    check(d_model % H == 0, "n_heads", f"must divide d_model={d_model}, got {H}")
    return H


def tag_ssm_param(param: nn.Parameter, lr: float | None = None) -> nn.Parameter:
    """Mark an SSM parameter (A, dt, B, C) for its own optimizer group: no weight decay, own lr.

    ``ssmkit.training.optim.param_groups`` is the one place that reads these tags.
    """
    param._optim = {"weight_decay": 0.0, **({"lr": lr} if lr is not None else {})}  # type: ignore[attr-defined]
    return param


def checks_values(x: Tensor) -> bool:
    """Whether input checks may read ``x``'s values: for CPU tensors (free), never on an accelerator
    (each read stalls the stream until the host has the value) nor while torch.compile traces."""
    return x.device.type == "cpu" and not torch.compiler.is_compiling()


def check_finite(x: Tensor, what: str) -> None:
    """Raise ValueError when ``x`` holds NaN or Inf (CPU tensors: ``checks_values``).

    A finite sum means every entry is finite (NaN and Inf propagate through a sum), and one
    reduction is a vectorized pass: ~30x cheaper than ``isfinite(x).all()`` (1.7 vs 56 ms at
    B = 2, L = 16k, D = 512, one thread; issue 19). Only a non-finite sum, which an overflow of
    finite entries can also give, is settled entry by entry."""
    if not checks_values(x):
        return
    with torch.no_grad():
        if x.is_floating_point() and bool(torch.isfinite(x.sum())):
            return
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{what} contains NaN or Inf values")


def skip_finite_checks(module: nn.Module) -> None:
    """Turn off the per-forward input check of every mixer inside ``module``: a stack checks its own
    input once, not once per layer."""
    for m in module.modules():
        if isinstance(m, SequenceMixer):
            m.check_finite = False


def compact(x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Move the real tokens of each row to the front, keeping their order.

    x: (B, L, D), mask: (B, L) bool. Returns (x_compact (B, L, D) zero after each row's length,
    lengths (B,), order (B, L) the source index of each compacted position).
    """
    L = x.shape[1]
    pos = torch.arange(L, device=x.device)
    # Real tokens sort by their position, padded ones after every real one: a stable left-align.
    key = torch.where(mask, pos, pos + L)
    order = key.argsort(dim=1)
    lengths = mask.sum(dim=1)
    xc = x.gather(1, order[..., None].expand_as(x))
    xc = xc * lengths_mask(lengths, L)[..., None].to(x.dtype)
    return xc, lengths, order


def compact_dt(dt: Tensor, order: Tensor, lengths: Tensor) -> Tensor:
    """dt (B, L) gathered like ``compact`` gathers x; 1 after each row's length (a padded slot's
    step is never read: families make padded steps the identity)."""
    dtc = dt.gather(1, order)
    return torch.where(lengths_mask(lengths, dt.shape[1]), dtc, torch.ones_like(dtc))


def uncompact(y: Tensor, mask: Tensor, order: Tensor) -> Tensor:
    """Inverse of ``compact`` for outputs: back to the original positions, zero where padded."""
    out = torch.zeros_like(y)
    out.scatter_(1, order[..., None].expand_as(y), y)
    return out * mask[..., None].to(y.dtype)


class SequenceMixer(nn.Module):
    """A causal sequence layer (B, L, D) -> (B, L, D) with an explicit recurrent state.

    Subclasses set ``modes`` (supported computation modes) and ``Config``; see the module doc.
    """

    # Names in auto's order of preference: a tuple, or the op's ``Modes`` when the layer's modes
    # are its op's (the op then says why an optional mode cannot run; layers never repeat that).
    modes: ClassVar[Modes | tuple[str, ...]] = ()
    Config: ClassVar[type[MixerConfig]] = MixerConfig
    mixer_name: ClassVar[str] = ""
    causal: ClassVar[bool] = True
    # True when the family's discretization has a step that per-token time deltas can scale:
    # ``_forward`` then reads ``call.dt`` and ``_step`` its ``dt`` (docs/irregular.md).
    accepts_dt: ClassVar[bool] = False
    # The modes that can run with dt (None: every mode); e.g. an FFT convolution needs one fixed step.
    dt_modes: ClassVar[tuple[str, ...] | None] = None
    # Config fields that cut the sequence into windows, segments or blocks (int lengths): the
    # equivalence checker lowers them as it lowers chunk fields, so its short inputs cross their
    # boundaries (a 64-token window is never left by a 13-token check otherwise).
    block_fields: ClassVar[tuple[str, ...]] = ()
    # The config field (an int length) after which the carried state is first read: a segment's
    # memory, a block's state vectors. A training sequence no longer than it never reads that state,
    # so the recurrence would stay untrained; runs refuse it (runs.config.check_carry_length).
    carry_field: ClassVar[str | None] = None
    # Context parallelism (docs/distributed.md): how each tensor of the state (in ``flatten_state``
    # order) passes from one chunk of a sequence to the next, or None when it cannot be split exactly.
    # "halo": the chunk's last inputs (a short-conv or token-shift window), whatever came before;
    # "count": tokens seen, incoming + chunk length; "history": a cache with slot t for token t (a KV
    # cache: every earlier chunk's slots are gathered); "diag": out = m * in + c, elementwise;
    # "matrix": out = P @ in + c for a (..., K, V) state and a (..., K, K) transition P;
    # "dense": out = P @ in + c along the last dim N of a (..., N) state (N probe runs per chunk);
    # "scaled" / "stabilizer": tensors S and a log-scale m whose product exp(m) S passes affinely
    # with the chunk's decay, which the family returns from ``cp_log_decay(x, state)`` (B, ...).
    cp_state: ClassVar[tuple[str, ...] | None] = None
    cp_refusal: ClassVar[str] = "its state passing is not declared affine (cp_state)"
    # The modes whose ``_forward`` resets the state natively at ``call.starts`` (docs/packing.md):
    # a packed row without initial or final state runs in one pass there; every other packed call
    # runs its documents as the rows of a padded batch (exact in every mode).
    packed_modes: ClassVar[tuple[str, ...]] = ()

    def __init__(self, d_model: int, mode: str = "auto", **cfg: Any) -> None:
        super().__init__()
        if not isinstance(d_model, int) or isinstance(d_model, bool) or d_model <= 0:
            raise ValueError(f"d_model must be a positive int, got {d_model!r}")
        self.d_model = d_model
        self.config = build_config(self.Config, cfg)
        self._check_mode_name(mode)
        self.mode = mode
        # Check x for NaN / Inf at each forward; a stack that checks its own input turns this off.
        self.check_finite = True
        # What a given state must look like, per parameter dtype (built once: the config is fixed).
        self._state_specs: dict[torch.dtype, StateSpec] = {}

    # ----------------------------------------------------------------- public interface
    def forward(
        self,
        x: Tensor,
        state: State | None = None,
        mask: Tensor | None = None,
        *,
        dt: Tensor | None = None,
        cu_seqlens: Tensor | None = None,
        return_state: bool = False,
        mode: str | None = None,
    ) -> Tensor | tuple[Tensor, State]:
        """x: (B, L, D) -> y: (B, L, D); with ``return_state`` also the final state.

        ``state`` continues a sequence where an earlier call left it; ``mask`` (B, L) bool marks
        real tokens (True). ``dt`` (B, L) float > 0: the time elapsed before each token (irregular
        sampling; families with ``accepts_dt``), scaling the learned step. ``mode`` overrides the
        layer's default mode for this call.

        ``cu_seqlens`` (N + 1,) int32: x (1, L, D) is one packed row of N documents, document i at
        ``[cu_seqlens[i], cu_seqlens[i + 1])``; each starts from its own state (``state`` has N rows,
        or None: zeros) and the final state has N rows, one per document: the result equals running
        each document alone, in every mode (docs/packing.md). It excludes ``mask``.
        """
        dtype = self._check_input(x, "x", rank=3)
        B, L, _ = x.shape
        if L == 0:
            raise ValueError("empty sequence: x has length 0 (expected L >= 1)")
        if self.check_finite:
            check_finite(x, "x")
        if mask is not None and (mask.shape != (B, L) or mask.dtype != torch.bool):
            raise ValueError(
                f"mask must be a bool tensor of shape (B, L) = {(B, L)}, "
                f"got {mask.dtype} {tuple(mask.shape)}"
            )
        docs = None
        if cu_seqlens is not None:
            if mask is not None:
                raise ValueError("cu_seqlens and mask were both given: a packed row has no padding (cu_seqlens "
                                 "marks where its documents start); pass mask for a padded batch or cu_seqlens "
                                 "for a packed row, not both")
            docs = document_lengths(cu_seqlens, L, B)
        if dt is not None:
            dt = self._check_dt(dt, (B, L), x, mask, "(B, L)")
        mode = self.resolve_mode(self.mode if mode is None else mode, x, with_dt=dt is not None)
        if state is not None:
            self._check_state(state, x, dtype, batch=None if docs is None else len(docs))
        if docs is not None:
            y, final = self._forward_packed(x, state, docs, dt, mode, return_state)
            return (y, final) if return_state else y
        if B == 0:  # see _one_row
            y, final = self.forward(_one_row(x), map_state(_one_row, state), _one_row(mask, True),
                                    dt=_one_row(dt, 1.0), return_state=True, mode=mode)
            return (y[:0], index_state(final, slice(0, 0))) if return_state else y[:0]
        if mask is None:
            y, final = self._forward(x, state, ForwardCall(mode, None, dt, return_state))
            y = _autocast_output(y)
            return (y, final) if return_state else y
        xc, lengths, order = compact(x, mask)
        dtc = None if dt is None else compact_dt(dt, order, lengths)
        yc, final = self._forward(xc, state, ForwardCall(mode, lengths, dtc, return_state))
        y = _autocast_output(uncompact(yc, mask, order))
        return (y, final) if return_state else y

    def _forward_packed(self, x: Tensor, state: State | None, docs: list[int], dt: Tensor | None, mode: str,
                        need_state: bool) -> tuple[Tensor, State | None]:
        """One packed row x (1, L, D) of documents of lengths ``docs``. A mode in ``packed_modes``
        without initial or final state runs the row in one pass, its state reset at ``call.starts``.
        Otherwise the documents become the rows of a right-padded batch (``call.unpack``), which
        every family already runs exactly (per-row ``lengths``, each row from its own state), and the
        outputs go back end to end."""
        if mode in self.packed_modes and state is None and not need_state:
            starts = None
            if len(docs) > 1:
                starts = torch.zeros(x.shape[:2], dtype=torch.bool, device=x.device)
                starts[0, torch.tensor(docs[:-1], device=x.device).cumsum(0)] = True
            y, _ = self._forward(x, None, ForwardCall(mode, None, dt, False, starts))
            return _autocast_output(y), None
        if mode not in self.packed_modes:
            log_once(f"{self._label()}: mode '{mode}' has no native reset, so a packed row runs its documents "
                     f"as the rows of a padded batch (exact; docs/packing.md)", logging.INFO)
        lengths = torch.tensor(docs, device=x.device)
        xs = unpack(x, docs)
        dts = None if dt is None else unpack(dt[..., None], docs, fill=1.0)[..., 0]
        ragged = lengths if min(docs) < xs.shape[1] else None
        ys, final = self._forward(xs, state, ForwardCall(mode, ragged, dts, need_state))
        return _autocast_output(repack(ys, lengths)), final

    def step(self, x_t: Tensor, state: State, dt: Tensor | None = None) -> tuple[Tensor, State]:
        """One token: x_t (B, D) -> (y_t (B, D), new_state). Pure: ``state`` is not modified.

        ``dt`` (B,) float > 0: the time elapsed since the previous token (families with ``accepts_dt``).
        Its values are not checked for NaN / Inf (no host sync per generated token); dt's are.
        """
        if not self.causal:
            raise NotImplementedError(f"{type(self).__name__} is not causal and has no step()")
        dtype = self._check_input(x_t, "x_t", rank=2)
        self._check_state(state, x_t, dtype)
        if dt is not None:
            dt = self._check_dt(dt, (x_t.shape[0],), x_t, None, "(B,)")
        if x_t.shape[0] == 0:  # see _one_row
            y_t, new_state = self.step(_one_row(x_t), map_state(_one_row, state), _one_row(dt, 1.0))
            return y_t[:0], index_state(new_state, slice(0, 0))
        y_t, new_state = self._step(x_t, state, dt)
        return _autocast_output(y_t), new_state

    def init_state(
        self, batch_size: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> State:
        """The zero state for ``batch_size`` sequences, on the parameters' device and in their dtype
        unless ``device`` / ``dtype`` say otherwise (a complex state takes the matching complex dtype)."""
        like = _first_parameter(self)
        if device is None:
            device = like.device if like is not None else torch.device("cpu")
        if dtype is None:
            dtype = like.dtype if like is not None else torch.get_default_dtype()
        return self._zero_state(batch_size, torch.device(device), dtype)

    @property
    def state_size(self) -> int:
        """Floats of recurrent state per sequence (a complex number counts as two)."""
        raise NotImplementedError

    def state_size_at(self, length: int) -> int:
        """Floats of state per sequence after ``length`` tokens.

        Constant (``state_size``) for recurrent mixers; attention overrides it (its KV cache grows).
        """
        return self.state_size

    def _growing_state_dims(self) -> dict[int, int]:
        """{index of a state tensor: its dim (the batch is dim 0) that grows with the tokens seen}.

        Empty for a fixed-size state; a family whose state holds a KV cache or an input history
        overrides it. Those dims share one length T; every other dim must equal the zero state's.
        """
        return {}

    # ----------------------------------------------------------------- modes
    def _modes(self) -> Modes:
        return self.modes if isinstance(self.modes, Modes) else Modes(type(self).__name__, self.modes)

    def mode_unavailable_reason(self, mode: str, x: Tensor | None = None) -> str | None:
        """Why ``mode`` cannot run for inputs like ``x`` (None when it can); the op says for optional ones."""
        return self._modes().unavailable_reason(mode, x)

    def available_modes(self, x: Tensor | None = None) -> list[str]:
        """The modes that can run on this device and input."""
        return [m for m in self._modes() if self.mode_unavailable_reason(m, x) is None]

    def resolve_mode(self, mode: str, x: Tensor, *, with_dt: bool = False) -> str:
        """The mode to run: ``auto`` resolved for ``x``; with ``with_dt`` only a mode in ``dt_modes``."""
        self._check_mode_name(mode)
        dt_ok = self.dt_modes
        if mode == "auto":
            chosen = self._modes().resolve("auto", x, owner=self._label())
            if with_dt and dt_ok is not None and chosen not in dt_ok:
                usable = [m for m in self.available_modes(x) if m in dt_ok]
                if not usable:
                    raise RuntimeError(f"{type(self).__name__}: no available mode takes dt; dt modes: {list(dt_ok)}")
                log_once(f"{self._label()}: mode '{chosen}' cannot take per-token dt (a time-varying "
                         f"step); auto uses '{usable[0]}' when dt is given")
                chosen = usable[0]
            return chosen
        if with_dt and dt_ok is not None and mode not in dt_ok:
            raise ValueError(f"{self._label()}: mode '{mode}' cannot take per-token dt (a time-varying "
                             f"step); modes that can: {['auto', *dt_ok]}")
        return self._modes().resolve(mode, x, owner=type(self).__name__)

    def _check_mode_name(self, mode: str) -> None:
        self._modes().check_name(mode, type(self).__name__)

    # ----------------------------------------------------------------- to implement
    def _forward(self, x: Tensor, state: State | None, call: ForwardCall) -> tuple[Tensor, State | None]:
        """x: (B, L, D), right-padded when ``call.lengths`` (B,) is given -> (y (B, L, D), the state
        after each row's length; None allowed when ``call.need_state`` is False)."""
        raise NotImplementedError

    def _step(self, x_t: Tensor, state: State, dt: Tensor | None) -> tuple[Tensor, State]:
        """One token x_t (B, D) -> (y_t (B, D), new state); ``dt`` (B,) or None (families with
        ``accepts_dt`` read it, the base rejects it for the others)."""
        raise NotImplementedError

    def _zero_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> State:
        """The zero state on ``device``; ``dtype`` is the real dtype (complex parts take the matching
        complex dtype). ``init_state`` fills in the defaults."""
        raise NotImplementedError

    # ----------------------------------------------------------------- validation
    def _check_input(self, x: Any, name: str, rank: int) -> torch.dtype:
        """Validate x (B, L, D) or x_t (B, D) and return the parameters' dtype (the states' dtype).

        Dtype policy, the same for every family: x must have the parameters' dtype (a mixer never
        casts its input silently), or the autocast dtype while autocast is on for x's device."""
        shape = "(B, L, D)" if rank == 3 else "(B, D)"
        if not isinstance(x, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor of shape {shape}, got {type(x).__name__}")
        if x.dim() != rank:
            raise ValueError(f"{name} must have rank {rank} {shape}, got shape {tuple(x.shape)}")
        if x.shape[-1] != self.d_model:
            raise ValueError(
                f"{name} has width {x.shape[-1]} but this {type(self).__name__} has "
                f"d_model={self.d_model} (expected shape {shape} with D={self.d_model})"
            )
        if not x.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")
        like = _first_parameter(self)
        if like is None:
            return torch.get_default_dtype()
        if x.device != like.device:
            raise ValueError(f"{name} is on {x.device} but the parameters of {self._label()} are on "
                             f"{like.device}: move one to the other (x.to(device) or module.to(device))")
        if x.dtype == like.dtype:
            return like.dtype
        # Under autocast the weights stay float32 and a layer's input may be in the autocast dtype.
        device_type = x.device.type
        if autocast_active(device_type) and x.dtype == torch.get_autocast_dtype(device_type):
            return like.dtype
        if x.dtype in (torch.float16, torch.bfloat16):
            fix = (f"run it under torch.autocast('{device_type}', dtype={x.dtype}) (float32 weights, "
                   f"{x.dtype} matmuls) or convert the module with .to({x.dtype})")
        else:
            double = " (.double())" if x.dtype == torch.float64 else ""
            fix = f"convert the module with .to({x.dtype}){double} or x with x.to({like.dtype})"
        raise TypeError(f"{name} has dtype {x.dtype} but the parameters of {self._label()} are {like.dtype}: "
                        f"a mixer computes in its parameters' dtype; {fix}")

    def _label(self) -> str:
        return f"{type(self).__name__} (mixer '{self.mixer_name}')" if self.mixer_name else type(self).__name__

    def _check_dt(self, dt: Any, shape: tuple[int, ...], x: Tensor, mask: Tensor | None, legend: str) -> Tensor:
        """Validate per-token time deltas; returns them in x's precision (at least float32)."""
        if not self.accepts_dt:
            from .registry import list_mixers, get_mixer_class  # the registry imports this module

            takers = [n for n in list_mixers() if get_mixer_class(n).accepts_dt]
            raise ValueError(f"{self._label()} does not take per-token time deltas dt; irregular "
                             f"sampling is implemented for the mixers {takers} (docs/irregular.md)")
        if not isinstance(dt, Tensor):
            raise TypeError(f"dt must be a torch.Tensor of shape {legend} = {shape}, got {type(dt).__name__}")
        if tuple(dt.shape) != shape:
            raise ValueError(f"dt must have shape {legend} = {shape} (one time delta per token), "
                             f"got {tuple(dt.shape)}")
        if not dt.is_floating_point():
            raise TypeError(f"dt must be a floating-point tensor, got {dt.dtype}")
        if checks_values(dt):
            real = dt if mask is None else dt[mask]
            if not bool(torch.isfinite(real).all()):
                raise ValueError("dt contains NaN or Inf values at real positions")
            if not bool((real > 0).all()):
                raise ValueError(f"dt must be > 0 at real positions (time deltas), got min {real.min().item():.3g}")
        return dt.to(torch.promote_types(x.dtype, torch.float32))

    def _check_state(self, state: State, x: Tensor, dtype: torch.dtype, batch: int | None = None) -> None:
        """A state must have the structure of this mixer's zero state, its tensors' shapes after the
        batch (but for the growing dims), ``dtype`` (the parameters') and x's device: metadata only,
        no host sync (``step`` calls it per token). ``batch``: its rows when not x's (a packed row:
        one per document)."""
        spec = self._state_specs.get(dtype)
        if spec is None:
            spec = StateSpec(self._zero_state(0, torch.device("meta"), dtype), self._growing_state_dims())
            self._state_specs[dtype] = spec
        why = (spec.mismatch(state, x.shape[0], x.device) if batch is None else
               spec.mismatch(state, batch, x.device, "cu_seqlens gives one state row per document:"))
        if why is None:
            return
        raise ValueError(f"{self._label()}: the state does not fit: {why}. Expected {spec.expected()}; "
                         f"got {describe_state(state)}")

    def extra_repr(self) -> str:
        fields = ", ".join(f"{f.name}={getattr(self.config, f.name)!r}" for f in dataclasses.fields(self.config))
        return f"d_model={self.d_model}, mode={self.mode!r}" + (f", {fields}" if fields else "")


def _autocast_output(y: Tensor) -> Tensor:
    """Under autocast a mixer's output is in the autocast dtype, as nn.Linear's would be, whether
    its last op was a projection (bf16) or a float32 core (core.precision); states stay float32."""
    device_type = y.device.type
    if y.is_floating_point() and autocast_active(device_type):
        return y.to(torch.get_autocast_dtype(device_type))
    return y


def _first_parameter(module: nn.Module) -> Tensor | None:
    """The first floating-point parameter (in ``parameters()`` order): its dtype and device are the
    module's."""
    # A walk over the modules' own dicts: ``parameters()`` costs ~2 us of generator machinery, paid
    # per call and per layer (every generated token), this ~0.2 us.
    for p in module._parameters.values():
        if p is not None and p.is_floating_point():
            return p
    for child in module._modules.values():
        p = None if child is None else _first_parameter(child)
        if p is not None:
            return p
    return None


def _one_row(t: Tensor | None, fill: float | bool = 0.0) -> Tensor | None:
    """t (0, ...) with one row of ``fill`` appended, still in t's autograd graph (None stays None).

    Rows are independent in every family, so an empty batch (B = 0) runs as this one row and drops
    its results: outputs, states (a KV cache's length included) and gradients then have exactly the
    shapes of a non-empty call, in every mode, and no family special-cases B = 0 (FFTs, reductions
    over the batch and chunk arithmetic do not accept it).
    """
    return None if t is None else torch.cat([t, t.new_full((1, *t.shape[1:]), fill)])


def _leaves(state: State) -> list[Tensor]:
    """The tensors of a state, in order."""
    return flatten_state(state)[0]
