"""Checkpoints: safetensors for tensors, JSON for everything else; written atomically, never unpickled.

A checkpoint is a folder ``step-XXXXXXXX/`` holding

- ``model.safetensors``: the weights (tensors that share memory, e.g. tied embeddings, stored once
  and listed as aliases);
- ``optimizer.safetensors``: the optimizer's per-parameter tensors, keyed ``<param index>.<name>``;
- ``best_model.safetensors``: the best-val weights so far (when the run evaluates);
- ``state.json``: format and version, step, the optimizer's param groups and scalar state, the data
  position and early-stopping state (``progress``), the config, each rank's RNG states (base64 of
  the generator's bytes), and the size and SHA-256 of every tensor file;
- ``run.json`` (when the run is described): the task, model and training settings that rebuild the
  model (``ssmkit.runs.RunConfig.to_json()``; ``ssmkit eval`` reads it).

Writing: every file goes into a hidden temporary folder, is flushed to disk, and the folder then
takes its final name (``ssmkit.io.atomic_folder``, through ``checkpoint_folder``), so a reader sees a
whole checkpoint or none; the ``keep`` newest are kept. Reading checks format, version, sizes and
checksums before loading anything, and every failure is a ``CheckpointError`` that names the file
and what is wrong.

An FSDP run writes the sharded layout instead (``sharded_checkpoint.py``: format
``ssmkit-sharded-checkpoint``, each process's shards in its own safetensors file, the same
state.json fields); ``read_checkpoint`` reads both, the sharded one assembled in full in one process.
"""
from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import shutil
from pathlib import Path
from typing import Any, Iterator

from torch import Tensor

from ..io import atomic_folder, remove_stale

FORMAT, VERSION = "ssmkit-checkpoint", 1
SHARDED_FORMAT = "ssmkit-sharded-checkpoint"  # sharded_checkpoint.py; the same VERSION
STATE = "state.json"
RUN = "run.json"  # the run's description, beside the checkpoints and in each one
MODEL, OPTIMIZER, BEST = "model.safetensors", "optimizer.safetensors", "best_model.safetensors"
_NAME = re.compile(r"step-(\d{8})")
_REQUIRED = ("step", "progress", "config", "rng", "optimizer", "files")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read: missing, truncated, corrupt, or not fitting the model."""


def _safetensors():
    try:
        import safetensors.torch
    except ImportError as e:
        raise ImportError("checkpoints are safetensors files: pip install safetensors") from e
    return safetensors.torch


def encode_bytes(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def decode_bytes(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


# ---------------------------------------------------------------- optimizer state <-> files


def split_optimizer_state(state: dict[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """``optimizer.state_dict()`` -> (tensors keyed "<param index>.<name>", the JSON-able rest)."""
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entries in state["state"].items():
        for name, value in entries.items():
            if isinstance(value, Tensor):
                tensors[f"{index}.{name}"] = value
            else:
                scalars.setdefault(str(index), {})[name] = value
    groups = [{k: list(v) if isinstance(v, tuple) else v for k, v in g.items()} for g in state["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def join_optimizer_state(tensors: dict[str, Tensor], rest: dict[str, Any]) -> dict[str, Any]:
    """Inverse of ``split_optimizer_state``; lists in param groups become tuples again (betas)."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        index, _, name = key.partition(".")
        state.setdefault(int(index), {})[name] = value
    for index, entries in rest["scalars"].items():
        state.setdefault(int(index), {}).update(entries)
    groups = [{k: tuple(v) if isinstance(v, list) and k not in ("params", "names") else v for k, v in g.items()}
              for g in rest["param_groups"]]
    return {"state": state, "param_groups": groups}


# ---------------------------------------------------------------- writing


def _dedupe(tensors: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Store each shared tensor once (safetensors refuses shared memory); aliases name the copies."""
    unique: dict[str, Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    storages: set[int] = set()
    for name, t in tensors.items():
        t = t.detach()
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype)
        if key in seen:
            aliases[name] = seen[key]
            continue
        seen[key] = name
        ptr = t.untyped_storage().data_ptr()
        # a different view of an already stored buffer gets its own copy
        unique[name] = t.clone().cpu() if ptr in storages else t.contiguous().cpu()
        storages.add(ptr)
    return unique, aliases


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def checkpoint_path(directory: str | Path, step: int) -> Path:
    return Path(directory) / f"step-{step:08d}"


def file_record(path: Path, aliases: dict[str, str] | None = None) -> dict[str, Any]:
    """state.json's entry for one tensor file: its size and SHA-256 (checked before it is read)."""
    return {"bytes": path.stat().st_size, "sha256": _sha256(path), "aliases": aliases or {}}


@contextlib.contextmanager
def checkpoint_folder(directory: str | Path, step: int, keep: int) -> Iterator[Path]:
    """A temporary folder that becomes ``step-XXXXXXXX`` whole on a clean exit (a resumed run re-saving
    a step replaces it); then only the newest ``keep`` checkpoints stay. What killed writers left
    (hidden temporary folders) is cleared first; on an exception nothing changes."""
    directory = Path(directory)
    remove_stale(directory, ".step-*.tmp-*")  # left by a writer that was killed mid-write
    remove_stale(directory, ".step-*.old-*")
    with atomic_folder(checkpoint_path(directory, step)) as tmp:
        yield tmp
    for stale_step in list_checkpoints(directory)[:-keep]:
        shutil.rmtree(stale_step)


def write_state(folder: Path, meta: dict[str, Any], documents: dict[str, Any] | None = None) -> None:
    """state.json (``meta``: format, version, step, ..., files) and the JSON ``documents`` (e.g. run.json)."""
    (folder / STATE).write_text(json.dumps(meta, indent=1, allow_nan=True))
    for name, document in (documents or {}).items():
        (folder / name).write_text(json.dumps(document, indent=1) + "\n")


def save_checkpoint(
    directory: str | Path, step: int, files: dict[str, dict[str, Tensor]], state: dict[str, Any], keep: int,
    documents: dict[str, Any] | None = None,
) -> Path:
    """Write ``files`` (name -> tensors), ``state`` (JSON-able) and ``documents`` (file name -> JSON-able,
    e.g. run.json) as ``step-XXXXXXXX``; keep the newest ``keep``."""
    st = _safetensors()
    with checkpoint_folder(directory, step, keep) as tmp:
        record = {}
        for name, tensors in files.items():
            unique, aliases = _dedupe(tensors)
            st.save_file(unique, str(tmp / name))
            record[name] = file_record(tmp / name, aliases)
        write_state(tmp, {"format": FORMAT, "version": VERSION, "step": step, **state, "files": record}, documents)
    return checkpoint_path(directory, step)


def list_checkpoints(directory: str | Path) -> list[Path]:
    """Checkpoint folders under ``directory``, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if p.is_dir() and _NAME.fullmatch(p.name)]
    return sorted(found, key=lambda p: int(p.name[5:]))


def latest_checkpoint(directory: str | Path) -> Path | None:
    found = list_checkpoints(directory)
    return found[-1] if found else None


# ---------------------------------------------------------------- reading


def _check_state_fields(meta: dict[str, Any], state_file: Path) -> None:
    """The types of state.json's entries, so that a malformed file is an error naming the field, not a
    KeyError or TypeError from deep inside the loader."""

    def bad(field: str, expected: str) -> CheckpointError:
        return CheckpointError(f"{state_file}: field {field!r} must be {expected}")

    step = meta["step"]
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise bad("step", f"an int >= 0, got {step!r}")
    for name in ("progress", "config", "rng", "optimizer", "files"):
        if not isinstance(meta[name], dict):
            raise bad(name, f"an object, got {type(meta[name]).__name__}")
    for name, rec in meta["files"].items():
        ok = (isinstance(rec, dict) and isinstance(rec.get("bytes"), int) and isinstance(rec.get("sha256"), str)
              and isinstance(rec.get("aliases"), dict) and "/" not in name and name not in ("", ".", ".."))
        if not ok:
            raise bad(f"files.{name}", "an object with 'bytes' (int), 'sha256' (str) and 'aliases' (object) "
                                       "for a file inside the checkpoint folder")


def read_state(path: str | Path) -> dict[str, Any]:
    """state.json of the checkpoint folder ``path`` (either layout), after checking format, version and
    the types of its fields; the tensor files are not touched."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {path}: not a folder (expected a step-XXXXXXXX folder "
                              f"with {STATE} and its safetensors files)")
    state_file = path / STATE
    if not state_file.is_file():
        raise CheckpointError(f"{state_file}: missing; a checkpoint folder holds {STATE} and its tensor files")
    try:
        meta = json.loads(state_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{state_file}: not valid JSON ({e}); the file is corrupt or truncated") from None
    if not isinstance(meta, dict) or meta.get("format") not in (FORMAT, SHARDED_FORMAT):
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise CheckpointError(f"{state_file}: not an ssmkit checkpoint (format {found!r}, expected {FORMAT!r} "
                              f"or {SHARDED_FORMAT!r})")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{state_file}: checkpoint version {meta.get('version')!r}, this ssmkit reads {VERSION}")
    missing = [k for k in _REQUIRED if k not in meta]
    if missing:
        raise CheckpointError(f"{state_file}: missing entries {missing} (expected {list(_REQUIRED)})")
    _check_state_fields(meta, state_file)
    return meta


def verify_file(path: Path, name: str, rec: dict[str, Any]) -> None:
    """``path / name`` has the size and SHA-256 that state.json records for it."""
    f = path / name
    if not f.is_file():
        raise CheckpointError(f"{f}: missing (listed in {STATE})")
    size = f.stat().st_size
    if size != rec["bytes"]:
        raise CheckpointError(f"{f}: {size} bytes, expected {rec['bytes']} (truncated or overwritten)")
    if _sha256(f) != rec["sha256"]:
        raise CheckpointError(f"{f}: SHA-256 differs from the one in {STATE}; the file is corrupt")


def read_checkpoint(path: str | Path) -> tuple[dict[str, Any], dict[str, dict[str, Tensor]]]:
    """-> (state.json as a dict, {file name: tensors}), after checking format, sizes and checksums.

    A sharded checkpoint (an FSDP run's) is assembled in full in this process, without a process
    group, and returned as the full layout would hold it: ``MODEL``, ``OPTIMIZER`` (parameters
    numbered in group order, as in state.json's ``optimizer`` entry) and ``BEST``."""
    path = Path(path)
    meta = read_state(path)
    if meta["format"] == SHARDED_FORMAT:
        from .sharded_checkpoint import read_sharded_in_full

        return read_sharded_in_full(path, meta)
    st = _safetensors()
    tensors = {}
    for name, rec in meta["files"].items():
        verify_file(path, name, rec)
        f = path / name
        try:
            loaded = st.load_file(str(f))
        except Exception as e:  # safetensors raises its own error type for malformed files
            raise CheckpointError(f"{f}: not a readable safetensors file ({e})") from None
        for alias, source in rec["aliases"].items():
            loaded[alias] = loaded[source]
        tensors[name] = loaded
    return meta, tensors
