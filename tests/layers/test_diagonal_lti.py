"""The modes shared by S4D and DSS (layers/_diagonal_lti.py): fft vs chunked vs reference in float64.

Outputs, final state and gradients w.r.t. the input, the initial state and every parameter, on
an odd length that spans several scan chunks with a partial last one, with and without padding.
"""
from __future__ import annotations

import pytest
import torch

import ssmkit
from conftest import assert_close_rel

CONFIGS = {
    "s4d-zoh-legs": ("s4d", {}),
    "s4d-bilinear-inv-trainB": ("s4d", dict(discretization="bilinear", init="inv", trainable_B=True)),
    "s4d-zoh-real": ("s4d", dict(init="real")),
    "dss-softmax": ("dss", dict(l_max=20)),
    "dss-exp": ("dss", dict(variant="exp")),
}
B, L, D, NS = 3, 37, 4, 6


def _setup(key: str):
    name, cfg = CONFIGS[key]
    torch.manual_seed(0)
    # Steps up to 0.5 so that some modes decay within L and others barely do.
    m = ssmkit.create_mixer(name, D, d_state=NS, scan_chunk=8, dt_min=0.01, dt_max=0.5, **cfg)
    m = m.double().eval()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(B, L, D, generator=gen, dtype=torch.float64)
    h0 = torch.randn(B, D, NS // 2, generator=gen, dtype=torch.complex128)
    return m, x, h0


def _run(m, x, h0, mode, mask=None):
    """(y, h_final, grads of x, h0 and every parameter) of a fixed random loss."""
    x = x.clone().requires_grad_()
    h0 = h0.clone().requires_grad_()
    y, (h,) = m(x, (h0,), mask=mask, return_state=True, mode=mode)
    gen = torch.Generator().manual_seed(2)
    wy = torch.randn(y.shape, generator=gen, dtype=y.dtype)
    wh = torch.randn(h.shape, generator=gen, dtype=h.dtype)
    loss = (y * wy).sum() + (h * wh).real.sum()
    params = dict(m.named_parameters())
    grads = torch.autograd.grad(loss, [x, h0, *params.values()])
    return y, h, dict(zip(["x", "h0", *params], grads))


@pytest.mark.parametrize("key", list(CONFIGS))
@pytest.mark.parametrize("mode", ["fft", "chunked"])
@pytest.mark.parametrize("padded", [False, True], ids=["full", "padded"])
def test_mode_matches_reference(key, mode, padded):
    m, x, h0 = _setup(key)
    mask = None
    if padded:
        mask = torch.ones(B, L, dtype=torch.bool)
        mask[0, -5:] = False  # right padding
        mask[1, :3] = False  # left padding
        mask[2, 10:30] = False  # a hole spanning scan chunks
    y_ref, h_ref, g_ref = _run(m, x, h0, "reference", mask)
    y, h, g = _run(m, x, h0, mode, mask)
    assert_close_rel(y, y_ref, 1e-10, f"{mode} output")
    assert_close_rel(h, h_ref, 1e-10, f"{mode} final state")
    for name in g_ref:
        assert_close_rel(g[name], g_ref[name], 1e-10, f"{mode} grad of {name}")


@pytest.mark.parametrize("key", ["s4d-zoh-legs", "dss-softmax"])
def test_state_carried_across_modes(key):
    """fft on a prefix, chunked on the rest with the carried state == one reference pass."""
    m, x, h0 = _setup(key)
    y_ref, (h_ref,) = m(x, (h0,), return_state=True, mode="reference")
    y1, s1 = m(x[:, :17], (h0,), return_state=True, mode="fft")
    y2, (h2,) = m(x[:, 17:], s1, return_state=True, mode="chunked")
    assert_close_rel(torch.cat([y1, y2], 1), y_ref, 1e-10, "output")
    assert_close_rel(h2, h_ref, 1e-10, "final state")


@pytest.mark.parametrize("key", list(CONFIGS))
def test_float32_fft_matches_float64_reference(key):
    m, x, h0 = _setup(key)
    with torch.no_grad():
        y64, (h64,) = m(x, (h0,), return_state=True, mode="reference")
        m32 = m.float()
        y32, (h32,) = m32(x.float(), (h0.to(torch.complex64),), return_state=True, mode="fft")
    assert y32.dtype == torch.float32 and h32.dtype == torch.complex64
    # float32 rounding of O(L) accumulated terms, each within eps of the float64 value.
    assert_close_rel(y32, y64, 1e-5, "output")
    assert_close_rel(h32, h64, 1e-5, "final state")


@pytest.mark.parametrize("key", ["s4d-zoh-legs", "dss-exp"])
def test_step_is_pure_and_matches_forward(key):
    m, x, h0 = _setup(key)
    with torch.no_grad():
        y_ref, (h_ref,) = m(x[:, :5], (h0,), return_state=True, mode="fft")
        state, ys = (h0.clone(),), []
        for t in range(5):
            before = state[0].clone()
            y_t, new = m.step(x[:, t], state)
            assert torch.equal(state[0], before), "step modified the incoming state"
            ys.append(y_t)
            state = new
    assert_close_rel(torch.stack(ys, 1), y_ref, 1e-10, "step output")
    assert_close_rel(state[0], h_ref, 1e-10, "step state")


def test_module_double_converts_every_parameter():
    m, _, _ = _setup("s4d-bilinear-inv-trainB")
    assert all(p.dtype == torch.float64 for p in m.parameters())
    assert m.init_state(2)[0].dtype == torch.complex128
    assert m.float().init_state(2)[0].dtype == torch.complex64
    assert m.init_state(2, dtype=torch.float64)[0].shape == (2, D, NS // 2)
