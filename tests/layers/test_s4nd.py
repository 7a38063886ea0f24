"""S4ND: the 2-D kernel vs explicit powers, raster == 2-D, streaming across rows, shape errors."""
from __future__ import annotations

import pytest
import torch
from conftest import assert_close_rel

from ssmkit.testing import check_mixer
from ssmkit.layers import create_mixer


def _layer(**cfg):
    torch.manual_seed(0)
    return create_mixer("s4nd", 4, d_state=6, **cfg).double()


def _naive_kernels(m, R, C):
    """K_a[l] = Re(sum_n 2 C dB dA^l) with dA = e^{dt A}, dB = (e^{dt A} - 1) / A, powers by pow."""
    out = []
    for a, n in enumerate((R, C)):
        dt = torch.exp(m.log_dt[a])[:, None]
        A = torch.complex(-torch.exp(m.log_A_real[a]), m.A_imag[a])
        dA, dB = torch.exp(dt * A), torch.expm1(dt * A) / A
        Cc = torch.view_as_complex(m.C[a].contiguous())
        out.append((2 * Cc * dB)[..., None].mul(dA[..., None] ** torch.arange(n)).sum(1).real)
    return out


@pytest.mark.parametrize("mode", ["fft", "reference"])
def test_forward_2d_is_the_causal_2d_sum(mode):
    m = _layer()
    x = torch.randn(2, 4, 5, 4, dtype=torch.float64)
    K0, K1 = _naive_kernels(m, 4, 5)
    y = torch.zeros_like(x)
    for r in range(4):
        for c in range(5):
            for i in range(r + 1):
                for j in range(c + 1):
                    y[:, r, c] += K0[:, r - i] * K1[:, c - j] * x[:, i, j]
    assert_close_rel(m.forward_2d(x, mode=mode), m._post(y, x), 1e-12, mode)


def test_raster_sequence_equals_image():
    m = _layer(height=3, width=7)
    x = torch.randn(2, 3, 7, 4, dtype=torch.float64)
    y = m(x.flatten(1, 2))
    assert_close_rel(y, m.forward_2d(x).flatten(1, 2), 1e-13)


def test_every_equivalence_check_with_rows_wrapping():
    """A 3 x 6 image (18 pixels, all used): the checker's sequences cross rows, splits fall mid-row."""
    results = check_mixer("s4nd", length=13, height=3, width=6)
    failed = [str(r) for r in results if not r.passed]
    assert not failed, "\n".join(failed)


def test_pixels_below_see_pixels_above_only_in_their_columns():
    m = _layer(height=3, width=4)
    x = torch.zeros(1, 12, 4, dtype=torch.float64)
    x[0, 2] = 1.0  # pixel (0, 2)
    y_raw = m.conv2d(x.view(1, 3, 4, 4), *m.kernels(3, 4), "reference")
    assert y_raw[0, :, :2].abs().max() == 0  # columns left of the impulse: untouched
    assert y_raw[0, 1:, 2:].abs().min() > 0  # below and to the right: reached


def test_sequence_longer_than_the_image_is_refused():
    m = create_mixer("s4nd", 4, height=2, width=3)
    with pytest.raises(ValueError, match="2 x 3 image.*position 7"):
        m(torch.zeros(1, 7, 4))
    _, s = m(torch.zeros(1, 4, 4), return_state=True)
    with pytest.raises(ValueError, match=r"4 already seen \+ 3 new"):
        m(torch.zeros(1, 3, 4), s)
    with pytest.raises(ValueError, match="position 7"):
        _, s = m(torch.zeros(1, 6, 4), return_state=True)
        m.step(torch.zeros(1, 4), s)


def test_forward_2d_bad_input_and_state_size():
    m = create_mixer("s4nd", 4, height=2, width=3)
    with pytest.raises(ValueError, match="forward_2d expects"):
        m.forward_2d(torch.zeros(1, 6, 4))
    with pytest.raises(ValueError, match="empty image"):
        m.forward_2d(torch.zeros(1, 0, 3, 4))
    assert m.forward_2d(torch.randn(2, 5, 9, 4)).shape == (2, 5, 9, 4)  # any image size
    assert m.state_size == 2 * 3 * 4
    with pytest.raises(ValueError, match=r"Expected \(\(B, 2, 3, 4\) float32, \(B,\) float32\)"):
        m(torch.zeros(1, 2, 4), (torch.zeros(1, 3, 3, 4), torch.zeros(1)))


def test_gradients_fft_vs_reference():
    m = _layer()
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    w = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    grads = {}
    for mode in ("fft", "reference"):
        xi = x.clone().requires_grad_(True)
        grads[mode] = torch.autograd.grad((m.forward_2d(xi, mode) * w).sum(), [xi, *m.parameters()])
    for a, b in zip(grads["fft"], grads["reference"]):
        assert_close_rel(a, b, 1e-12)
