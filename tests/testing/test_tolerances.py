"""ssmkit.testing.tolerances: the relative error and tolerances that follow a measured error."""
from __future__ import annotations

import pytest
import torch

from ssmkit.testing import assert_close_rel, measured_tol, rel_err


def test_measured_tol_is_a_margin_over_the_seed_and_a_spread_over_the_worst():
    assert measured_tol(1e-3, 1e-3) == pytest.approx(4e-3)
    assert measured_tol(1e-3, 5e-3) == pytest.approx(7.5e-3)  # another seed was 5x worse
    assert measured_tol(0.0, 0.0) == 0.0  # an exact result stays exact
    with pytest.raises(ValueError, match="worst"):
        measured_tol(2e-3, 1e-3)


def test_rel_err_is_relative_to_the_reference_and_nan_fails():
    assert rel_err(torch.tensor([1.0, 2.1]), torch.tensor([1.0, 2.0])) == pytest.approx(0.05)
    assert rel_err(torch.tensor([0.5]), torch.zeros(1)) == 0.5  # absolute against an all-zero reference
    with pytest.raises(AssertionError, match="relative error"):
        assert_close_rel(torch.tensor([float("nan")]), torch.ones(1), 1.0)
