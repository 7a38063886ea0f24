"""How every op (and every mixer) names its computation modes and picks one (DESIGN.md section 3).

An op declares its modes once, in the order ``auto`` prefers them:

    MODES = Modes("selective_scan", {"cpp": ..., "chunked": ..., "reference": ...},
                  unavailable={"cpp": why_not}, options={"chunked": ("chunk_size",)})

``unavailable`` gives an optional mode (a compiled kernel, a Triton one) a function of a
sample input that returns why the mode cannot run for it (device, dtype, missing compiler), or
None when it can; ``auto_skip`` gives a mode that ``auto`` passes over by design for some
inputs (a Triton kernel for a CPU tensor, where it runs interpreted or not at all) the reason it
does; ``options`` names the keyword arguments only some modes take. Then

- ``auto`` runs the first mode that can run for the input's device and dtype and is not skipped
  by design, and logs each mode it passed over because it could not run with the reason, once
  per message (``ssmkit.log.log_once``): a fallback is never silent, while a per-device choice
  (no GPU kernel for a CPU tensor) is not a fallback and is not logged;
- a mode asked for by name that cannot run raises RuntimeError with the reason;
- an unknown name raises ValueError listing the modes.

A layer whose modes are its op's declares ``modes = <op>.MODES`` and so asks the op (the base
mixer resolves through the same object); a plain tuple of names is a ``Modes`` without reasons.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, overload

from torch import Tensor

from ..log import log_once

Reason = Callable[[Tensor | None], str | None]


class Modes(Sequence[str]):
    """The mode names of ``owner`` in the order ``auto`` tries them, each with its function (None
    for a layer's own modes), why an optional one cannot run, and the options it takes."""

    def __init__(
        self,
        owner: str,
        modes: Mapping[str, Callable[..., Any] | None] | Sequence[str],
        unavailable: Mapping[str, Reason] | None = None,
        options: Mapping[str, Sequence[str]] | None = None,
        auto_skip: Mapping[str, Reason] | None = None,
    ) -> None:
        self.owner = owner
        self._fns = dict(modes) if isinstance(modes, Mapping) else dict.fromkeys(modes)
        self._reasons = dict(unavailable or {})
        self._options = {name: tuple(keys) for name, keys in (options or {}).items()}
        self._auto_skip = dict(auto_skip or {})
        strays = (set(self._reasons) | set(self._options) | set(self._auto_skip)) - set(self._fns)
        if not self._fns or strays:
            raise ValueError(f"{owner}: modes must be non-empty and name every mode given a reason or "
                             f"options; unknown: {sorted(strays)}")

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[str]: ...
    def __getitem__(self, i):  # type: ignore[no-untyped-def]
        return tuple(self._fns)[i]

    def __len__(self) -> int:
        return len(self._fns)

    def __iter__(self) -> Iterator[str]:
        return iter(self._fns)

    def __contains__(self, mode: object) -> bool:
        return mode in self._fns

    def __repr__(self) -> str:
        return f"Modes({self.owner!r}, {list(self)})"

    def check_name(self, mode: str, owner: str | None = None) -> None:
        """Raise ValueError unless ``mode`` is ``auto`` or one of the modes."""
        if mode != "auto" and mode not in self._fns:
            raise ValueError(f"{owner or self.owner} has no mode '{mode}'; modes: {['auto', *self]}")

    def unavailable_reason(self, mode: str, like: Tensor | None = None) -> str | None:
        """Why ``mode`` cannot run for inputs like ``like`` (any input when None); None when it can."""
        self.check_name(mode)
        reason = self._reasons.get(mode)
        return None if reason is None else reason(like)

    def auto_skip_reason(self, mode: str, like: Tensor | None = None) -> str | None:
        """Why ``auto`` passes over ``mode`` (which may run when named) for inputs like ``like``."""
        skip = self._auto_skip.get(mode)
        return None if skip is None else skip(like)

    def available(self, like: Tensor | None = None) -> list[str]:
        """The modes that can run for inputs like ``like``, in ``auto``'s order."""
        return [m for m in self if self.unavailable_reason(m, like) is None]

    def resolve(self, mode: str, like: Tensor, owner: str | None = None) -> str:
        """The mode that runs for ``like``: ``auto`` resolved (fallbacks logged once), a named one
        checked. ``owner`` names the caller in messages (a mixer asking its op)."""
        who = owner or self.owner
        self.check_name(mode, who)
        if mode != "auto":
            reason = self.unavailable_reason(mode, like)
            if reason is not None:
                raise RuntimeError(f"{who}: mode '{mode}' cannot run here: {reason}")
            return mode
        passed = []
        for name in self:
            if self.auto_skip_reason(name, like) is not None:
                continue
            reason = self.unavailable_reason(name, like)
            if reason is None:
                for skipped, why in passed:
                    log_once(f"{who}: auto runs '{name}' because '{skipped}' cannot run here: {why}")
                return name
            passed.append((name, reason))
        raise RuntimeError(f"{who}: no mode can run here: {'; '.join(f'{n}: {r}' for n, r in passed)}")

    def run(self, mode: str, like: Tensor, *args: Any, **options: Any) -> Any:
        """Resolve ``mode`` for ``like`` and call its function with ``args`` and the ``options``
        that mode takes (the others are dropped: e.g. only a chunked mode reads chunk_size)."""
        name = self.resolve(mode, like)
        fn = self._fns[name]
        if fn is None:
            raise TypeError(f"{self.owner}: mode '{name}' has no function to run")
        taken = self._options.get(name, ())
        return fn(*args, **{k: v for k, v in options.items() if k in taken})
