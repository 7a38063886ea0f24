"""On-disk cache of generated or decoded data, keyed by the settings that produced it.

Location: ``$SSMKIT_CACHE`` if set, else ``~/.cache/ssmkit``. A file is named
``<name>-<hash of the settings>.npz`` (a set of arrays, loaded whole) or ``.npy`` (one array,
memory-mapped, for data larger than memory such as Path-X). Files are written under a temporary
name in the same folder and renamed into place, so a reader never sees a half-written file. A
cache file that cannot be read is deleted and rebuilt, and the rebuild is logged with its path.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..io import atomic_write

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    """The cache folder (created if missing)."""
    root = os.environ.get("SSMKIT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "ssmkit")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def settings_hash(settings: dict[str, Any]) -> str:
    """A stable 16-hex-digit key of JSON-serialisable settings (key order does not matter)."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cache_path(name: str, settings: dict[str, Any], suffix: str = ".npz") -> Path:
    return cache_dir() / f"{name}-{settings_hash(settings)}{suffix}"


def save_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` as an .npz atomically (``ssmkit.io.atomic_write``)."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    atomic_write(path, write)


def load_arrays(path: Path, keys: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """Read an .npz written by ``save_arrays`` (all arrays, or ``keys``); an unreadable file or a
    missing key raises ``ValueError`` naming the file."""
    try:
        with np.load(path, allow_pickle=False) as f:
            wanted = tuple(f.files) if keys is None else keys
            missing = [k for k in wanted if k not in f.files]
            if missing:
                raise ValueError(f"missing arrays {missing}")
            return {k: f[k] for k in wanted}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"cache file {path} is corrupt or truncated ({e}); delete it to rebuild") from e


def cached_arrays(
    name: str,
    settings: dict[str, Any],
    build: Callable[[], dict[str, np.ndarray]],
) -> dict[str, np.ndarray]:
    """The arrays cached for ``(name, settings)``, built by ``build()`` and saved on first use.

    A corrupt cache file is deleted and rebuilt (logged as a warning with its path).
    """
    path = cache_path(name, settings)
    if path.exists():
        try:
            return load_arrays(path)
        except ValueError as e:
            log.warning("cache file %s is unreadable (%s): deleting and rebuilding it", path, e)
            path.unlink(missing_ok=True)
    arrays = build()
    save_arrays(path, arrays)
    return arrays


def cached_memmap(
    name: str,
    settings: dict[str, Any],
    shape: tuple[int, ...],
    dtype: np.dtype | type,
    fill: Callable[[np.ndarray], None],
) -> np.ndarray:
    """A read-only memory map of the array cached for ``(name, settings)``.

    On first use ``fill(out)`` writes the array into a writable memory map of ``shape``/``dtype``
    under a temporary name, which is then renamed into place. A cached file of another shape or
    dtype, or an unreadable one, is deleted and rebuilt (logged as a warning with its path).
    """
    path = cache_path(name, settings, ".npy")
    if path.exists():
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
            if arr.shape != tuple(shape) or arr.dtype != np.dtype(dtype):
                raise ValueError(f"holds {arr.dtype}{arr.shape}, expected {np.dtype(dtype)}{tuple(shape)}")
            return arr
        except (OSError, ValueError, EOFError) as e:
            log.warning("cache file %s is unreadable (%s): deleting and rebuilding it", path, e)
            path.unlink(missing_ok=True)

    def write(tmp: Path) -> None:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=tuple(shape))
        fill(out)
        out.flush()
        del out

    atomic_write(path, write)
    return np.load(path, mmap_mode="r", allow_pickle=False)
