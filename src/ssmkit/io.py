"""Atomic writes, the one home for every file and folder ssmkit writes.

- ``atomic_write(path, write)``: ``write(tmp)`` fills a temporary file beside ``path``, which is
  flushed to disk and renamed over ``path``: a reader sees the old file or the new one.
- ``atomic_folder(path)``: a context manager yielding a temporary folder beside ``path``; on a
  clean exit every file in it is flushed and the folder takes the place of ``path``: on Linux in
  one ``renameat2(RENAME_EXCHANGE)`` (the old folder is then deleted), elsewhere by renaming the
  old folder aside first. A reader sees the old folder or the new one, never a mix; on an
  exception the temporary folder is removed and ``path`` is untouched. ``keep_existing=True``
  carries the old folder's other entries (a README beside a saved model) into the new one.

Temporary names start with a dot and carry the writer's pid, so two writers never share one, and
``remove_stale(folder, pattern)`` clears what a killed writer left behind.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file or a folder entry to disk (a no-op where the platform cannot fsync folders)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some platforms cannot fsync a directory; the rename is still atomic there
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Write one file atomically: ``write(tmp)`` into a temporary file beside ``path``, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp-{os.getpid()}", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_path(path.parent)
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    """``atomic_write`` of a UTF-8 text file."""
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one atomic step (Linux renameat2); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0


def _carry_over(old: Path, new: Path) -> None:
    """Entries of ``old`` that ``new`` lacks, hard-linked (copied across file systems) into ``new``."""
    for entry in old.iterdir():
        target = new / entry.name
        if target.exists() or entry.name.startswith("."):
            continue
        if entry.is_dir():
            shutil.copytree(entry, target)
            continue
        try:
            os.link(entry, target)
        except OSError:
            shutil.copy2(entry, target)


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike, keep_existing: bool = False) -> Iterator[Path]:
    """Yield a temporary folder; on success it takes the place of ``path`` whole (see the module doc)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=f".tmp-{os.getpid()}", dir=path.parent))
    try:
        yield tmp
        if path.is_dir() and keep_existing:
            _carry_over(path, tmp)
        for f in tmp.rglob("*"):
            if f.is_file():
                fsync_path(f)
        fsync_path(tmp)
        if path.exists() and _exchange(tmp, path):
            shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the old folder
        else:
            old = None
            if path.exists():
                old = path.parent / f".{path.name}.old-{os.getpid()}"
                os.replace(path, old)
            os.replace(tmp, path)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        fsync_path(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_stale(folder: str | os.PathLike, pattern: str) -> None:
    """Delete what killed writers left in ``folder`` (temporary files and folders matching ``pattern``)."""
    for stale in Path(folder).glob(pattern):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)
