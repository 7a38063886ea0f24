"""Shared test helpers (test files import them with ``from conftest import assert_close_rel``), and
the rule that a skip fails the session (tests/skip_gate.py; ``SSMKIT_ALLOW_SKIPS=1`` allows them)."""
from __future__ import annotations

import os

import pytest
import torch

# Triton kernels (ssmkit's triton modes, fla's in the interop and referee tests) run on CPU tensors
# through Triton's interpreter, which is chosen when triton is first imported: set it here, before
# any test module (or a library it loads, e.g. transformers) can import triton. On every machine,
# GPU or not: the suite's tensors are CPU tensors. The kernels' compiled runs on a GPU are the job
# of ``ssmkit bench --suite gpu`` (docs/gpu.md).
os.environ.setdefault("TRITON_INTERPRET", "1")

from skip_gate import install_skip_gate
from ssmkit.testing import assert_close_rel, rel_err  # noqa: F401  (re-exported for tests)

# pytest-xdist runs one worker per core; a second intra-op thread per worker only oversubscribes
# the cores (measured: ~5x more CPU for the same small-tensor tests).
torch.set_num_threads(1)


@pytest.fixture
def triton_first_config():
    """The interpreter cannot time configs: every autotuned Triton kernel (fla's) runs its first config
    (every config computes the same values; ssmkit.ops._triton.interpreter_first_config)."""
    from ssmkit.ops._triton import interpreter_first_config

    with interpreter_first_config():
        yield


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def pytest_configure(config: pytest.Config) -> None:
    install_skip_gate(config)
