"""GRU mixer: cell equations vs torch.nn.GRUCell, fused vs reference, empty rows, tags."""
from __future__ import annotations

import pytest
import torch
from conftest import assert_close_rel

from ssmkit.layers import create_mixer


def _layer(d=8, **cfg):
    torch.manual_seed(0)
    return create_mixer("gru", d, **cfg).double()


def test_reference_equals_grucell_with_shared_weights():
    m = _layer(6, d_hidden=5)
    cell = torch.nn.GRUCell(6, 5).double()
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(cell, name).copy_(getattr(m.rnn, name + "_l0"))
    x = torch.randn(3, 9, 6, dtype=torch.float64)
    h = torch.randn(3, 5, dtype=torch.float64)
    y, (hT,) = m(x, (h,), return_state=True, mode="reference")
    hs = []
    for t in range(9):
        h = cell(x[:, t], h)
        hs.append(h)
    assert_close_rel(y, m.out_proj(torch.stack(hs, 1)), 1e-13, "outputs")
    assert_close_rel(hT, h, 1e-13, "h")


@pytest.mark.parametrize("L", [1, 2, 17])
def test_fused_float32_matches_float64_reference(L):
    torch.manual_seed(1)
    m = create_mixer("gru", 8, d_hidden=12)
    x = torch.randn(2, L, 8)
    y32, (h32,) = m(x, return_state=True, mode="fused")
    y64, (h64,) = m.double()(x.double(), return_state=True, mode="reference")
    assert_close_rel(y32, y64, 1e-5, "y")
    assert_close_rel(h32, h64, 1e-5, "h")


def test_fully_masked_row_keeps_initial_state_in_both_modes():
    m = _layer(8)
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    s0 = (torch.randn(2, 8, dtype=torch.float64),)
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[0] = False
    for mode in ("fused", "reference"):
        y, (h,) = m(x, s0, mask=mask, return_state=True, mode=mode)
        assert torch.equal(h[0], s0[0][0]), mode
        assert y[0].abs().max() == 0


def test_gradients_fused_vs_reference_including_state():
    m = _layer(8, d_hidden=6)
    x = torch.randn(2, 7, 8, dtype=torch.float64)
    w = torch.randn(2, 7, 8, dtype=torch.float64)
    grads = {}
    for mode in ("fused", "reference"):
        xi = x.clone().requires_grad_(True)
        h0 = torch.full((2, 6), 0.3, dtype=torch.float64, requires_grad=True)
        y, (h,) = m(xi, (h0,), return_state=True, mode=mode)
        loss = (y * w).sum() + h.sum()
        grads[mode] = torch.autograd.grad(loss, [xi, h0, *m.parameters()])
    for a, b in zip(grads["fused"], grads["reference"]):
        assert_close_rel(a, b, 1e-12)


def test_tags_and_config():
    m = create_mixer("gru", 8, d_hidden=4)
    assert m.state_size == 4
    tagged = [n for n, p in m.named_parameters() if hasattr(p, "_optim")]
    assert tagged == ["rnn.weight_hh_l0"] and m.rnn.weight_hh_l0._optim == {"weight_decay": 0.0}
    with pytest.raises(ValueError, match="d_hidden"):
        create_mixer("gru", 8, d_hidden=-1)
    with pytest.raises(ValueError, match=r"Expected \(\(B, 4\) float32,\)"):
        m(torch.zeros(2, 3, 8), (torch.zeros(2, 5),))
