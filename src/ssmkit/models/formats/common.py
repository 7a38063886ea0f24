"""What every checkpoint format shares: reading the files, mapping tensors by name, refusing options.

A format module's ``build(cfg, ckpt)`` returns (``Built``) the ssmkit model its config describes
and a ``Maps``: for each of the model's state-dict keys, a ``Map`` (the checkpoint's key and the
conversion both ways) or None for a tensor the checkpoint does not hold (a tied head, a fixed
buffer). ``read_state`` checks the key sets and the shapes first (one error lists every missing,
unexpected and mismatched tensor by the checkpoint's own name, with the file), then converts;
``write_state`` runs the same maps backwards for an export. An option ssmkit does not implement is
refused by ``refuse`` with the field, its value and the reason, never approximated.
"""
from __future__ import annotations

import dataclasses
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, NoReturn

import torch
from torch import Tensor, nn

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def _same(t: Tensor) -> Tensor:
    return t


@dataclasses.dataclass(frozen=True)
class Map:
    """How one ssmkit tensor is stored in a checkpoint: under ``key``, as ``write(tensor)``, read back
    by ``read``; with ``part`` the ssmkit tensor is row ``part`` of the stored one (several ssmkit
    tensors stacked in one)."""

    key: str
    read: Callable[[Tensor], Tensor] = _same
    write: Callable[[Tensor], Tensor] = _same
    part: int | None = None


Maps = dict[str, "Map | None"]


@dataclasses.dataclass
class Built:
    """What a format's ``build`` returns: the model, its ``Maps``, and checkpoint keys to ignore
    (a tied head stored twice)."""

    model: nn.Module
    maps: Maps
    ignored: set[str] = dataclasses.field(default_factory=set)


@dataclasses.dataclass
class Checkpoint:
    """The tensors of a checkpoint and the file they came from (named in every error)."""

    tensors: dict[str, Tensor]
    file: Path


def refuse(key: str, value: Any, reason: str) -> NoReturn:
    """Raise the error for a config option that ssmkit does not compute: the field, its value, why."""
    raise ValueError(f"field {key!r} = {value!r} is not supported: {reason}")


def expect(cfg: dict[str, Any], key: str, default: Any, allowed: tuple, reason: str) -> Any:
    """``cfg[key]`` (``default`` when absent) if it is one of ``allowed``; otherwise ``refuse``."""
    value = cfg.get(key, default)
    if value not in allowed:
        refuse(key, value, reason)
    return value


def safetensors_module():
    try:
        import safetensors.torch as st
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("checkpoint I/O needs safetensors: pip install 'ssmkit[hf]'") from e
    return st


def read_weights(folder: Path) -> Checkpoint:
    """``model.safetensors`` or ``pytorch_model.bin`` (read with ``weights_only=True``: loading never
    unpickles code) of ``folder``."""
    if (folder / "model.safetensors").exists():
        return Checkpoint(safetensors_module().load_file(str(folder / "model.safetensors")), folder / "model.safetensors")
    return read_torch_file(folder / "pytorch_model.bin", folder)


def read_torch_file(file: Path, folder: Path | None = None) -> Checkpoint:
    """A ``torch.save`` file of plain tensors (``weights_only=True``)."""
    if not file.exists():
        where = folder if folder is not None else file.parent
        raise FileNotFoundError(f"no {' or '.join(WEIGHT_FILES)} in {where}" if folder is not None else f"no file {file}")
    try:
        tensors = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"cannot read {file} as a plain tensor checkpoint: {e}") from e
    return Checkpoint(tensors, file)


def check_finite(ckpt: Checkpoint) -> None:
    """A weight holding NaN or Inf cannot give a usable model: name the first such tensor."""
    for name, t in ckpt.tensors.items():
        if isinstance(t, Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ValueError(f"{ckpt.file}: weight {name!r} contains NaN or Inf values (a diverged or corrupt checkpoint)")


def tied_head_is_embedding(ckpt: Checkpoint, head: str, embedding: str) -> set[str]:
    """The checkpoint keys to ignore for a tied model: a stored head equal to the embedding (some
    writers store the tied matrix twice). A different one contradicts the config."""
    if head in ckpt.tensors and embedding in ckpt.tensors:
        if not torch.equal(ckpt.tensors[head], ckpt.tensors[embedding]):
            raise ValueError(f"{ckpt.file}: the config ties the LM head to the embedding, but {head!r} differs "
                             f"from {embedding!r}")
        return {head}
    return set()


def read_state(model: nn.Module, maps: Maps, ckpt: Checkpoint, ignored: set[str] = frozenset()) -> dict[str, Tensor]:
    """The model's state dict from the checkpoint through ``maps``; a ValueError naming the file and
    every missing, unexpected or mismatched tensor otherwise. Tensors are converted in the model's
    dtype (a bfloat16 checkpoint is widened before any arithmetic of a conversion)."""
    expected = model.state_dict()
    unmapped = sorted(set(expected) - set(maps))
    if unmapped:  # a format module that forgot a tensor: a bug, said plainly
        raise RuntimeError(f"no checkpoint mapping for {unmapped}")
    wanted = {m.key for m in maps.values() if m is not None}
    missing = sorted(wanted - set(ckpt.tensors))
    unexpected = sorted(set(ckpt.tensors) - wanted - set(ignored))
    state, shapes = {}, []
    for name, like in expected.items():
        m = maps[name]
        if m is None or m.key in missing:
            state[name] = like
            continue
        stored = ckpt.tensors[m.key]
        try:
            t = stored if m.part is None else stored[m.part]
            t = m.read(t.to(like.dtype) if t.is_floating_point() else t)
        except (IndexError, RuntimeError):
            t = None
        if t is None or t.shape != like.shape:
            shapes.append(f"{m.key}: checkpoint {tuple(stored.shape)} does not give the model's {name} {tuple(like.shape)}")
        state[name] = t
    if missing or unexpected or shapes:
        lines = [f"checkpoint {ckpt.file} does not match the model its config describes:"]
        lines += [f"  missing key: {k}" for k in missing] + [f"  unexpected key: {k}" for k in unexpected]
        lines += [f"  shape mismatch {s}" for s in shapes]
        raise ValueError("\n".join(lines))
    return state


def write_state(model: nn.Module, maps: Maps) -> dict[str, Tensor]:
    """The checkpoint's tensors of ``model`` through ``maps`` (the inverse of ``read_state``)."""
    out: dict[str, Tensor] = {}
    parts: dict[str, dict[int, Tensor]] = defaultdict(dict)
    for name, t in model.state_dict().items():
        m = maps[name]
        if m is None:
            continue
        w = m.write(t.detach())
        if m.part is None:
            out[m.key] = w.contiguous()
        else:
            parts[m.key][m.part] = w
    for key, rows in parts.items():
        out[key] = torch.stack([rows[i] for i in range(len(rows))]).contiguous()
    return out
