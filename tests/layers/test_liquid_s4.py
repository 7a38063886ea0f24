"""Liquid-S4 (PB kernel): the PB coefficients are exact terms of the liquid recurrence, the layer
vs a naive convolution + products, higher orders through the registry checks, config."""
from __future__ import annotations

import itertools

import pytest
import torch
from conftest import assert_close_rel

from ssmkit.testing import check_mixer
from ssmkit.layers import create_mixer


def _layer(**cfg):
    torch.manual_seed(0)
    m = create_mixer("liquid_s4", 4, d_state=6, **cfg).double()
    with torch.no_grad():  # larger dt so that dB^p is far from 0 and the test can fail
        m.log_dt.fill_(-0.5)
    return m


def _liquid_recurrence_y(s, u):
    """y_t = Re(C x_t) of the exact liquid recurrence x_t = (dA + dB u_t) x_{t-1} + dB u_t, u (L, H)."""
    x = torch.zeros_like(s.dA)
    for t in range(u.shape[0]):
        x = (s.dA + s.dB * u[t, :, None]) * x + s.dB * u[t, :, None]
    return (s.C * x).real.sum(-1)  # (H,)


@pytest.mark.parametrize("p", [2, 3, 4])
def test_pb_coefficient_is_the_consecutive_term_of_the_liquid_recurrence(p):
    """y_t of the liquid recurrence is multilinear in u_0..u_t; the coefficient of
    u_{t-p+1} ... u_t (inclusion-exclusion over the 0/1 inputs) is C dB^p = kappa_p."""
    m = _layer(liquid_order=4)
    s = m.discrete_system()
    L = p + 2  # two leading zero inputs: the coefficient does not depend on t
    coef = torch.zeros(m.d_model, dtype=torch.float64)
    for T in itertools.product([0.0, 1.0], repeat=p):
        u = torch.zeros(L, m.d_model, dtype=torch.float64)
        u[L - p :] = torch.tensor(T, dtype=torch.float64)[:, None]
        coef = coef + (-1) ** (p - sum(T)) * _liquid_recurrence_y(s, u)
    kappa = m.liquid_coefficients(s)[p - 2]
    assert_close_rel(coef, kappa, 1e-12, f"order {p}")
    assert kappa.abs().min() > 1e-4


@pytest.mark.parametrize("mode", ["fft", "reference"])
def test_layer_is_convolution_plus_products(mode):
    m = _layer(liquid_order=3)
    s = m.discrete_system()
    x = torch.randn(2, 10, 4, dtype=torch.float64)
    L = x.shape[1]
    dAl = s.dA[..., None] ** torch.arange(L)  # (H, N, L)
    K = (s.C[..., None] * s.dB[..., None] * dAl).sum(1).real  # (H, L)
    kappa = m.liquid_coefficients(s)
    y = torch.zeros_like(x)
    for t in range(L):
        for j in range(t + 1):
            y[:, t] += K[:, j] * x[:, t - j]
        if t >= 1:
            y[:, t] += kappa[0] * x[:, t] * x[:, t - 1]
        if t >= 2:
            y[:, t] += kappa[1] * x[:, t] * x[:, t - 1] * x[:, t - 2]
    assert_close_rel(m(x, mode=mode), m._post(y, x), 1e-12, mode)


def test_order_three_passes_every_equivalence_check():
    failed = [str(r) for r in check_mixer("liquid_s4", length=9, liquid_order=3) if not r.passed]
    assert not failed, "\n".join(failed)


def test_state_holds_the_last_inputs():
    m = _layer(liquid_order=3)
    x = torch.randn(2, 5, 4, dtype=torch.float64)
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[1, 3:] = False
    _, (h, hist) = m(x, mask=mask, return_state=True)
    assert torch.equal(hist[0], x[0, 3:]) and torch.equal(hist[1], x[1, 1:3])
    assert m.state_size == 4 * (6 + 2)


def test_config_errors():
    with pytest.raises(ValueError, match="liquid_order"):
        create_mixer("liquid_s4", 4, liquid_order=1)
    assert create_mixer("liquid_s4", 4).config.discretization == "bilinear"
    m = create_mixer("liquid_s4", 4)
    with pytest.raises(ValueError, match=r"Expected \(\(B, 4, 32\) complex64, \(B, 1, 4\) float32\)"):
        m(torch.zeros(2, 3, 4), (torch.zeros(2, 4, 32, dtype=torch.complex64), torch.zeros(2, 3, 4)))
