"""ops.ssd.decay: the chunk decay matrix and its hand-written backward vs autograd through segsum."""
from __future__ import annotations

import math

import pytest
import torch
from conftest import assert_close_rel

from ssmkit.core.segsum import segsum
from ssmkit.ops.ssd.decay import chunk_decay


def _log_decays(shape, scale: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return -torch.rand(*shape, generator=g, dtype=torch.float64) * scale


@pytest.mark.parametrize("T", [1, 2, 7, 16])
def test_matches_exp_segsum_and_its_autograd_float64(T):
    a = _log_decays((2, 3, T), 3.0).requires_grad_(True)
    weight = torch.randn(2, 3, T, T, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    expected = torch.exp(segsum(a))
    (grad_expected,) = torch.autograd.grad((expected * weight).sum(), a)
    actual = chunk_decay(a)
    (grad_actual,) = torch.autograd.grad((actual * weight).sum(), a)
    assert_close_rel(actual, expected, 1e-14, "decay")
    assert_close_rel(grad_actual, grad_expected, 1e-12, "grad of a")
    assert torch.equal(actual.triu(1), torch.zeros_like(actual.triu(1)))


@pytest.mark.parametrize("scale", [0.5, 100.0])
def test_gradcheck_float64(scale):
    a = _log_decays((2, 9), scale).requires_grad_(True)
    assert torch.autograd.gradcheck(chunk_decay, (a,))


def test_subnormal_entries_are_zero_float32():
    """exp of exponents below log(tiny) would be subnormal (slow on CPUs): they are exactly 0."""
    a = torch.full((1, 8), -30.0)  # segsum reaches -210, below log(tiny) = -87.3
    decay = chunk_decay(a)
    tiny = torch.finfo(torch.float32).tiny
    assert not ((decay > 0) & (decay < tiny)).any()
    seg = segsum(a.double())
    normal = seg >= math.log(tiny)
    assert_close_rel(decay.double()[normal], torch.exp(seg)[normal], 1e-6, "normal entries")
    assert (decay.double()[~normal] == 0).all()
