"""Relative error against a reference, the one measure used by tests and by ``ssmkit check``."""
from __future__ import annotations

import torch
from torch import Tensor


def rel_err(actual: Tensor, expected: Tensor) -> float:
    """max |actual - expected| / max |expected|; the absolute error when ``expected`` is all zero."""
    actual = torch.as_tensor(actual)
    expected = torch.as_tensor(expected)
    if actual.shape != expected.shape:
        raise ValueError(f"shape {tuple(actual.shape)} != expected {tuple(expected.shape)}")
    if expected.numel() == 0:
        return 0.0
    diff = (actual.to(expected.dtype) - expected).abs().max().item()
    scale = expected.abs().max().item()
    return diff / scale if scale > 0 else diff


def assert_close_rel(actual: Tensor, expected: Tensor, rtol: float, name: str = "") -> None:
    """Fail unless the error relative to the reference's magnitude is at most ``rtol``."""
    err = rel_err(actual, expected)
    if not err <= rtol:  # written this way so that NaN fails too
        raise AssertionError(f"{name or 'value'}: relative error {err:.3e} > {rtol:.1e}")


def measured_tol(measured: float, worst: float, margin: float = 4.0, spread: float = 1.5) -> float:
    """A tolerance that follows a measured error with a stated margin.

    ``measured`` is the error at the check's own seed, ``worst`` the largest over a few other seeds:
    the tolerance is ``margin`` x ``measured`` and never below ``spread`` x ``worst`` (another CPU's
    or library's rounding acts like another draw). An error measured as exactly 0 stays exact.
    """
    if worst < measured:
        raise ValueError(f"worst {worst:.2e} < measured {measured:.2e}: the worst includes the measured seed")
    return max(margin * measured, spread * worst)
