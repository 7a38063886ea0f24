"""Building and loading the CPU kernels written in C++ (one home for every ``*.cpp`` of the package).

``import ssmkit`` never compiles anything: a kernel library is built on its first use, once per
machine and torch version, into ``$TORCH_EXTENSIONS_DIR`` or ``~/.cache/ssmkit/torch_extensions``,
and loaded with ctypes (a plain C ABI: the only torch header the sources need is
``ATen/Parallel.h``, which keeps a build to seconds). The library's name carries the CPU's vector
ISA and a hash of its sources, so a changed kernel never meets a stale build and a cache directory
is never shared with a machine lacking the ISA. A failed build is a reason (a string), never an
exception: the pure-PyTorch paths stay usable.
"""
from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import pathlib
import re
import shutil
import sys

import torch

log = logging.getLogger(__name__)

# Vector ISA flags per torch's own CPU capability, so the build suits this machine.
ISA_FLAGS = {
    "AVX512": ["-mavx512f", "-mavx512dq", "-mavx512bw", "-mavx512vl", "-mavx2", "-mfma"],
    "AVX2": ["-mavx2", "-mfma"],
}


def build_directory(tag: str) -> pathlib.Path:
    default = pathlib.Path.home() / ".cache" / "ssmkit" / "torch_extensions"
    root = os.environ.get("TORCH_EXTENSIONS_DIR") or default
    py = f"py{sys.version_info.major}{sys.version_info.minor}"
    torch_version = torch.__version__.replace("+", "_")
    return pathlib.Path(root) / f"{py}_torch{torch_version}" / tag


def load_library(prefix: str, source: pathlib.Path, headers: tuple[pathlib.Path, ...] = ()) -> ctypes.CDLL | str:
    """Build (when not cached) and load ``source``; ``headers`` are the files it includes (hashed
    into the name). Returns the library, or the reason it cannot be had (logged in full)."""
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        return f"no C++ compiler: {compiler!r} is not on PATH (install g++ or set CXX)"
    from torch.utils import cpp_extension  # only when building: it imports setuptools

    if not cpp_extension.is_ninja_available():
        return "ninja is not installed (pip install ninja), torch.utils.cpp_extension needs it"
    isa = torch.backends.cpu.get_cpu_capability()
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in (source, *headers))).hexdigest()[:10]
    name = f"{prefix}_" + re.sub(r"\W", "_", isa.lower()) + "_" + digest
    directory = build_directory(name)
    if not (directory / f"{name}.so").exists():
        log.info("%s: building the C++ kernel in %s (once per machine, seconds)", prefix, directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        cpp_extension.load(
            name=name,
            sources=[str(source)],
            # -fno-trapping-math lets the compiler vectorize clamps and selects.
            extra_cflags=["-O3", "-fopenmp", "-fno-trapping-math", *ISA_FLAGS.get(isa, [])],
            extra_ldflags=["-fopenmp"],
            extra_include_paths=sorted({str(h.parent) for h in headers}),
            build_directory=str(directory),
            is_python_module=False,
        )
        return ctypes.CDLL(str(directory / f"{name}.so"))
    except Exception as err:  # a broken toolchain must not break the pure-PyTorch modes
        log.warning("%s: building the C++ kernel in %s failed:\n%s", prefix, directory, err)
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
        return f"building the C++ kernel failed ({first_line}); the full error is logged"
