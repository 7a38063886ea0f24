"""Recurrent states are tuples (or NamedTuples / dataclasses) of tensors, batch first.

These helpers map a function over every tensor of a state while keeping its structure, so a
state can be detached (truncated BPTT), indexed along the batch, or moved between devices.

``StateSpec`` is what a mixer expects of a state it is given (its zero state's structure, the
shape of each tensor after the batch, dtypes), so the door of every family checks a state the
same way (``layers.base``) and names the expected structure when it does not fit.
"""
from __future__ import annotations

import dataclasses
import itertools
from typing import Any, Callable

import torch
from torch import Tensor

State = Any  # a Tensor, or a tuple / NamedTuple / dataclass of States; None for stateless layers


def map_state(fn: Callable[[Tensor], Tensor], state: State) -> State:
    """Apply ``fn`` to every tensor of ``state``, keeping the structure."""
    if state is None:
        return None
    if isinstance(state, Tensor):
        return fn(state)
    if isinstance(state, tuple) and hasattr(state, "_fields"):  # NamedTuple
        return type(state)(*(map_state(fn, s) for s in state))
    if isinstance(state, (tuple, list)):
        return type(state)(map_state(fn, s) for s in state)
    if dataclasses.is_dataclass(state):
        return dataclasses.replace(
            state, **{f.name: map_state(fn, getattr(state, f.name)) for f in dataclasses.fields(state)}
        )
    raise TypeError(f"a state must be a tuple or dataclass of tensors, found {type(state).__name__}")


def detach_state(state: State) -> State:
    """Cut the graph at the state (truncated backpropagation through time)."""
    return map_state(Tensor.detach, state)


def index_state(state: State, index: Any) -> State:
    """Select sequences along the batch dimension, e.g. ``index_state(s, slice(0, 2))``."""
    return map_state(lambda t: t[index], state)


def flatten_state(state: State) -> tuple[list[Tensor], Any]:
    """(the tensors of ``state`` in order, its nesting): the nesting has ``...`` where a tensor sits,
    ``None`` where None does, a tuple per tuple or list (a NamedTuple unpacks like one) and the class
    per dataclass, so two states of the same structure have equal nestings."""
    leaves: list[Tensor] = []
    return leaves, _nesting(state, leaves)


def _nesting(state: State, leaves: list[Tensor]) -> Any:
    if isinstance(state, Tensor):
        leaves.append(state)
        return ...
    if state is None:
        return None
    if isinstance(state, (tuple, list)):
        return tuple(_nesting(s, leaves) for s in state)
    if dataclasses.is_dataclass(state) and not isinstance(state, type):
        return type(state), tuple(_nesting(getattr(state, f.name), leaves) for f in dataclasses.fields(state))
    raise TypeError(f"a state must be a tuple or dataclass of tensors, found {type(state).__name__}")


def describe_state(state: State, shape_of: Callable[[int, Tensor], str] | None = None) -> str:
    """``state`` written out, e.g. ``KVCache(k=(2, 64, 2, 4) float32 on cpu, v=..., length=...)``;
    ``shape_of(i, t)`` writes the i-th tensor (default: its shape, dtype and device)."""
    if shape_of is None:
        shape_of = lambda i, t: f"{tuple(t.shape)} {_dtype_name(t.dtype)} on {t.device}"  # noqa: E731
    count = itertools.count()

    def walk(s: Any) -> str:
        if isinstance(s, Tensor):
            return shape_of(next(count), s)
        if isinstance(s, tuple) and hasattr(s, "_fields"):  # NamedTuple
            return f"{type(s).__name__}({', '.join(f'{n}={walk(v)}' for n, v in zip(s._fields, s))})"
        if isinstance(s, (tuple, list)):
            inner = ", ".join(walk(v) for v in s)
            if isinstance(s, list):
                return f"[{inner}]"
            return f"({inner},)" if len(s) == 1 else f"({inner})"
        if dataclasses.is_dataclass(s) and not isinstance(s, type):
            fields = ", ".join(f"{f.name}={walk(getattr(s, f.name))}" for f in dataclasses.fields(s))
            return f"{type(s).__name__}({fields})"
        return type(s).__name__

    return walk(state)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


class StateSpec:
    """What a mixer expects of a state: ``template`` its zero state (batch 0, any device), whose
    nesting, per-tensor shape after the batch and dtype a given state must have, except the dims in
    ``growing`` ({tensor index: dim}): one length T shared by those tensors (a KV cache, an input
    history), any size as long as they agree."""

    def __init__(self, template: State, growing: dict[int, int]) -> None:
        self.template, self.growing = template, growing
        leaves, self._nesting = flatten_state(template)
        self._shapes = [tuple(t.shape[1:]) for t in leaves]
        self._dtypes = [t.dtype for t in leaves]

    def expected(self) -> str:
        """The expected state written out with B (batch) and T (tokens held) for the free dims."""
        def shape_of(i: int, t: Tensor) -> str:
            dims = ["B", *(str(n) for n in t.shape[1:])]
            if i in self.growing:
                dims[self.growing[i]] = "T"
            return f"({', '.join(dims)}{',' if len(dims) == 1 else ''}) {_dtype_name(t.dtype)}"

        legend = "B = batch, T = tokens held" if self.growing else "B = batch"
        return f"{describe_state(self.template, shape_of)} ({legend})"

    def mismatch(self, state: State, batch_size: int, device: torch.device, rows: str = "") -> str | None:
        """Why ``state`` does not fit (None when it does): only metadata is read, never values.
        ``rows`` says where ``batch_size`` comes from when not the input's batch size."""
        leaves, nesting = flatten_state(state)
        if nesting != self._nesting:
            return (f"its structure differs ({len(leaves)} tensor(s) where {len(self._shapes)} are expected)"
                    if len(leaves) != len(self._shapes) else "its structure differs")
        length = None  # T, set by the first growing tensor
        for i, (t, shape, dtype) in enumerate(zip(leaves, self._shapes, self._dtypes)):
            size = t.shape
            if len(size) != len(shape) + 1:
                return f"tensor {i} has shape {tuple(size)}"
            if size[0] != batch_size:
                return f"state has batch size {size[0]} but {rows or 'the input has batch size'} {batch_size}"
            dim = self.growing.get(i) if self.growing else None
            if dim is not None:
                length = size[dim] if length is None else length
                shape = shape[:dim - 1] + (length,) + shape[dim:]
            if size[1:] != shape:
                return f"tensor {i} has shape {tuple(size)}"
            if t.dtype != dtype:
                return (f"tensor {i} is {_dtype_name(t.dtype)}, expected {_dtype_name(dtype)} (the dtype of "
                        "the parameters; convert the state or build it with init_state)")
            if t.device != device:
                return f"tensor {i} is on {t.device}, expected {device} (the input's device)"
        return None
