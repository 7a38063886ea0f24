"""ops.selective_scan's ``triton`` mode (selective_scan/triton.py: a chunked scan over L, states
recomputed in the backward) against the reference loop, interpreted on the CPU (TRITON_INTERPRET=1
from tests/conftest.py): odd lengths crossing several chunks of 16, groups of B/C, widths that are
not powers of two, with softplus, bias, D, z and an initial state; outputs, final state, every
gradient."""
from __future__ import annotations

import pytest
import torch
from conftest import assert_close_rel

import ssmkit.ops.selective_scan as ss

from .test_selective_scan import make, outputs_and_grads


def _compare(x, rtol=1e-12, dtype=None):
    """y, the final state and every gradient (``outputs_and_grads``' dict) of triton, run in ``dtype``
    (default: x's), against the reference in x's dtype."""
    expected = outputs_and_grads(x, "reference")
    actual = outputs_and_grads(x if dtype is None else {k: v.to(dtype) for k, v in x.items()}, "triton")
    assert all(torch.isfinite(t).all() for t in actual.values())
    for name in expected:
        assert_close_rel(actual[name].to(expected[name].dtype), expected[name], rtol, name)


@pytest.mark.parametrize("L,G,width,N", [(37, 1, 6, 4), (35, 2, 16, 5), (1, 1, 4, 2)],
                         ids=["L37-width6", "L35-groups2", "L1"])
def test_triton_matches_reference_float64(L, G, width, N):
    _compare(make(L, G=G, width=width, N=N, seed=L))


def test_triton_positive_dt_without_extras():
    """dt as given (no softplus, no bias), no D, z or initial state."""
    _compare(make(21, full=False, seed=4))


def test_triton_float32_and_strong_decay():
    """float32 with dt·A down to -60 per step: no overflow, the float32 accuracy of the reference."""
    _compare(make(37, width=8, dt_scale=30.0, full=False, seed=5), 1e-5, torch.float32)


def test_auto_on_cpu_is_never_triton():
    u = torch.zeros(1, 2, 3)
    assert ss.MODES.unavailable_reason("triton", u) is None
    assert ss.MODES.resolve("auto", u) in ("cpp", "chunked")
