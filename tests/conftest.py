"""Shared test helpers. Test files import them with ``from conftest import assert_close_rel``."""
from __future__ import annotations

import pytest
import torch

from ssmkit.testing import assert_close_rel, rel_err  # noqa: F401  (re-exported for tests)


# pytest-xdist runs one worker per core; a second intra-op thread per worker only oversubscribes
# the cores (measured: ~5x more CPU for the same small-tensor tests).
torch.set_num_threads(1)


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)
