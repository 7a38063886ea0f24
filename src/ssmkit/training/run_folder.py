"""A run folder belongs to one run: claimed under an OS lock, never silently reused, never deleted.

``claim(folder, resume=..., overwrite=...)`` is what ``fit`` does with its checkpoint and log
folders before it writes anything:

- a lock (``fcntl.flock`` on ``<folder>/.lock``) keeps a second live process out; the OS releases it
  when the holder exits or dies, so a crashed run never leaves the folder locked. The lock file
  records the holder's pid, host and start time for the message the second process gets;
- a folder that already holds a run (checkpoints, ``run.json`` or ``metrics.jsonl``) is refused
  to a new run with a message that says how to resume it or choose another folder; with
  ``overwrite`` the old run is moved aside into ``<folder>.replaced-<UTC time>`` beside it (never
  deleted) and the new run starts in the emptied folder. ``resume`` continues the run in it.

``run_differences(saved, now)`` compares two run descriptions (``run.json``: task, model, data and
training settings) field by field, for the resume check: what changes the model or the data
refuses the resume, what only changes training is a warning.
"""
from __future__ import annotations

import contextlib
import datetime
import errno
import json
import os
import socket
from pathlib import Path
from typing import Any, Iterator

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks; ownership checks still apply
    fcntl = None

LOCK = ".lock"
RUN_FILE = "run.json"
METRICS_FILE = "metrics.jsonl"
# fields of a run's training settings that do not change its trajectory: a resume may change them silently
OPERATIONAL = {"log_every", "log_dir", "tensorboard", "progress", "checkpoint_dir", "checkpoint_every",
               "keep_checkpoints", "checkpoint_format", "eval_batch_size", "device"}


class RunFolderError(RuntimeError):
    """A folder that holds another run, or that a live process is using."""


def holds_run(folder: Path) -> list[str]:
    """What in ``folder`` belongs to a run (empty when the folder is free)."""
    if not folder.is_dir():
        return []
    found = []
    steps = sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name.startswith("step-"))
    if steps:
        found.append(f"{len(steps)} checkpoint(s) up to {steps[-1]}")
    found += [name for name in (RUN_FILE, METRICS_FILE) if (folder / name).is_file()]
    return found


def _lock(folder: Path):
    """Open and lock ``folder/.lock`` without waiting; returns the open file (closing it unlocks)."""
    path = folder / LOCK
    handle = open(path, "a+", encoding="utf-8")
    if fcntl is not None:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                handle.close()
                raise
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise RunFolderError(f"run folder {folder} is in use by a live run ({holder}); wait for it to "
                                 "finish or choose another folder") from None
    handle.seek(0)
    handle.truncate()
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {started}\n")
    handle.flush()
    return handle


def _move_aside(folder: Path) -> Path:
    """Move every entry of ``folder`` but the lock into a new sibling ``<name>.replaced-<time>``."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    aside = folder.parent / f"{folder.name}.replaced-{stamp}"
    n = 1
    while aside.exists():
        n += 1
        aside = folder.parent / f"{folder.name}.replaced-{stamp}-{n}"
    aside.mkdir()
    for entry in folder.iterdir():
        if entry.name != LOCK:
            os.replace(entry, aside / entry.name)
    return aside


@contextlib.contextmanager
def claim(folder: str | os.PathLike, *, resume: bool, overwrite: bool = False,
          log=print) -> Iterator[Path]:
    """Lock ``folder`` for this process and check that this run may use it (see the module doc)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    handle = _lock(folder)
    try:
        held = holds_run(folder)
        if held and not resume:
            if not overwrite:
                raise RunFolderError(
                    f"run folder {folder} already holds a run ({', '.join(held)}); to continue it, run again "
                    "with --resume (fit(..., resume=True)); to start a new run, choose another folder, or pass "
                    "--overwrite (fit(..., overwrite=True)) to move the old run aside (it is never deleted)")
            log(f"moved the run that was in {folder} to {_move_aside(folder)}")
        yield folder
    finally:
        handle.close()


def read_run(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The run description saved in ``folder`` (None when there is none)."""
    path = Path(folder) / RUN_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunFolderError(f"{path}: not valid JSON ({e}); the run description is corrupt") from None
    if not isinstance(data, dict):
        raise RunFolderError(f"{path}: expected a JSON object (a run description), got {type(data).__name__}")
    return data


def _flatten(value: Any, prefix: str) -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


def run_differences(saved: dict[str, Any], now: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(differences that change the model or data, differences that only change training), each
    ``"field: old -> new"``; operational training fields (logging, checkpoints, device) are ignored."""
    a, b = _flatten(saved, ""), _flatten(now, "")
    refuse, warn = [], []
    for key in sorted(set(a) | set(b)):
        old, new = a.get(key, "(unset)"), b.get(key, "(unset)")
        if old == new or key == "source":
            continue
        section, _, field = key.partition(".")
        line = f"{key}: {old!r} -> {new!r}"
        if section == "train":
            if field.split(".")[0] not in OPERATIONAL:
                warn.append(line)
        else:
            refuse.append(line)
    return refuse, warn
