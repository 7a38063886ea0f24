"""RG-LRU (Griffin recurrent block): scan vs reference (outputs, state, gradients incl. the
initial state, masks), the paper's equations written out, the Λ init, block-diagonal gates,
the sqrt(1 - a²) normalization, config validation; the first-token reset of RecurrentGemma
(``reset_at_start``): every mode == step == split with carried state, written out, padding."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from conftest import assert_close_rel, rel_err
from ssmkit import create_mixer
from ssmkit.testing.equivalence import DEFAULT_LENGTHS, check_mixer

from .layer_helpers import assert_mode_matches_reference

D = 8


def make(seed: int = 0, **cfg):
    torch.manual_seed(seed)
    return create_mixer("rglru", D, **cfg).double()


@pytest.mark.parametrize("L", [1, 7, 40], ids=lambda L: f"L{L}")
def test_scan_matches_reference_with_mask_and_state(L):
    m = make(L)
    gen = torch.Generator().manual_seed(L)
    B = 3
    x = torch.randn(B, L, D, generator=gen, dtype=torch.float64, requires_grad=True)
    s0 = [torch.randn(t.shape, generator=gen, dtype=torch.float64).requires_grad_(True)
          for t in m.init_state(B, dtype=torch.float64)]
    assert_mode_matches_reference(m, "chunked", x, s0, gen, ["conv", "h"], 1e-12, 1e-11)


def _written_out(m, x: torch.Tensor, reset: bool) -> torch.Tensor:
    """The block's equations as a loop from a zero state; ``reset``: a_0 = 0, h_0 = i_0 u_0."""
    B, L, _ = x.shape
    g = F.gelu(x @ m.linear_y.weight.T + m.linear_y.bias, approximate="tanh")
    xb = x @ m.linear_x.weight.T + m.linear_x.bias
    w = m.conv1d.weight[:, 0, :]
    xpad = F.pad(xb, (0, 0, 3, 0))
    u = sum(w[:, j] * xpad[:, j:j + L] for j in range(4)) + m.conv1d.bias
    Wa, Wx = torch.block_diag(*m.gate_a.weight), torch.block_diag(*m.gate_x.weight)
    h = torch.zeros(B, m.lru_width, dtype=x.dtype)
    hs = []
    for t in range(L):
        r = torch.sigmoid(u[:, t] @ Wa.T + m.gate_a.bias)
        i = torch.sigmoid(u[:, t] @ Wx.T + m.gate_x.bias)
        a = torch.sigmoid(m.a_param) ** (8 * r)
        h = i * u[:, t] if reset and t == 0 else a * h + torch.sqrt(1 - a**2) * (i * u[:, t])
        hs.append(h)
    return (torch.stack(hs, 1) * g) @ m.linear_out.weight.T + m.linear_out.bias


@pytest.mark.parametrize("mode", ["chunked", "reference"])
def test_paper_equations_written_out(mode):
    m = make(2)
    with torch.no_grad():
        m.a_param.add_(torch.randn_like(m.a_param))  # a spread of decays, some far from 1
    x = torch.randn(2, 11, D, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    assert_close_rel(m(x, mode=mode), _written_out(m, x, reset=False), 1e-12, "y")


@pytest.mark.parametrize("length", DEFAULT_LENGTHS + (1, 2), ids=lambda n: f"L{n}")
def test_reset_at_start_keeps_every_equivalence(length):
    """Every mode == step from init_state == split with the carried state == from a non-zero
    state == masked padding, gradients too: the registry-wide checks, with the reset on (the
    registry-wide test runs the default, off)."""
    results = check_mixer("rglru", length=length, seed=length, reset_at_start=True)
    assert {r.check for r in results} >= {"step", "state:chunked", "mask:chunked", "grad:chunked"}
    failed = [str(r) for r in results if not r.passed]
    assert not failed, "\n".join(failed)


@pytest.mark.parametrize("mode", ["chunked", "reference", "step"])
def test_reset_at_start_written_out(mode):
    """On: h_0 = i_0 u_0 (a_0 = 0, no sqrt(1 - a²)); off: the paper's update at t = 0 too. The two
    differ from the first token on, so each check fails with the other setting."""
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(2, 9, D, generator=gen, dtype=torch.float64)
    for reset in (True, False):
        m = make(6, reset_at_start=reset)
        if mode == "step":
            state, ys = m.init_state(2), []
            for t in range(x.shape[1]):
                y_t, state = m.step(x[:, t], state)
                ys.append(y_t)
            y = torch.stack(ys, 1)
        else:
            y = m(x, mode=mode)
        assert_close_rel(y, _written_out(m, x, reset), 1e-12, f"reset={reset}")
        assert rel_err(y[:, 0], _written_out(m, x, not reset)[:, 0]) > 1e-3


def test_reset_applies_at_each_rows_first_real_token():
    """Left padding from no state: each row's first real token is its start; a row of pads only
    has not started, so its next call resets; a carried state never resets again."""
    m = make(7, reset_at_start=True)
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(3, 6, D, generator=gen, dtype=torch.float64)
    mask = torch.ones(3, 6, dtype=torch.bool)
    mask[0, :2] = False
    mask[2, :] = False
    y, state = m(x, mask=mask, return_state=True)
    assert torch.equal(state[2], torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64))
    for b in (0, 1):
        yb, sb = m(x[b:b + 1, mask[b]], return_state=True)
        assert_close_rel(y[b:b + 1, mask[b]], yb, 1e-13, f"row {b}")
        assert_close_rel(state[1][b:b + 1], sb[1], 1e-13, f"row {b} state")
    x2 = torch.randn(3, 4, D, generator=gen, dtype=torch.float64)
    y2, _ = m(x2, state, return_state=True)
    assert_close_rel(y2[2:], m(x2[2:]), 1e-13, "the padded-only row starts at its first token")
    assert_close_rel(y2[:1], m(torch.cat([x[:1, 2:], x2[:1]], 1))[:, 4:], 1e-12, "carried: no new reset")


def test_lambda_init_puts_a_to_the_c_uniformly_on_the_ring():
    torch.manual_seed(0)
    m = create_mixer("rglru", 3000)  # W = 4000 samples
    ac = torch.sigmoid(m.a_param.double()) ** 8
    assert ac.min() >= 0.9 - 1e-6 and ac.max() <= 0.999 + 1e-6
    # Uniform on [0.9, 0.999]: mean 0.9495, sd 0.0286 (sd of the mean over 4000: 4.5e-4).
    assert abs(ac.mean().item() - 0.9495) < 2e-3
    assert abs(ac.std().item() - 0.099 / math.sqrt(12)) < 2e-3


def test_default_width_and_block_diagonal_gates():
    assert create_mixer("rglru", 8).lru_width == 12  # 4D/3 rounded up to a multiple of 4 heads
    assert create_mixer("rglru", 512).lru_width == 684
    m = make(3, num_heads=3, lru_width=9)
    u = torch.randn(9, dtype=torch.float64)
    J = torch.autograd.functional.jacobian(m.gate_a, u)  # (9, 9): zero off the 3 x 3 blocks
    assert torch.equal(J, torch.block_diag(*m.gate_a.weight.detach()))
    assert J[:3, 3:].abs().max() == 0


def test_normalization_keeps_unit_variance_for_white_input():
    """With constant a, h_t = a h_{t-1} + sqrt(1 - a²) x_t keeps Var(h) = Var(x) = 1."""
    m = make(4)
    a = torch.full((5,), 0.99, dtype=torch.float64)
    with torch.no_grad():
        m.a_param.copy_(torch.logit(a[0] ** (1 / 8)).expand_as(m.a_param))
        for g in (m.gate_a, m.gate_x):  # r = i = σ(±40): r = 1, i = 1
            g.weight.zero_()
            g.bias.fill_(40.0)
    gen = torch.Generator().manual_seed(0)
    u = torch.randn(4, 6000, m.lru_width, generator=gen, dtype=torch.float64)
    a_t, b = m._recurrence_inputs(u, None)
    assert_close_rel(a_t, torch.full_like(a_t, 0.99), 1e-12, "a_t")
    h, last = torch.zeros_like(u[:, 0]), []
    for t in range(u.shape[1]):
        h = a_t[:, t] * h + b[:, t]
        last.append(h)
    var = torch.stack(last[1000:], 1).var().item()
    assert abs(var - 1.0) < 0.05


@pytest.mark.parametrize(
    "cfg,field",
    [
        (dict(lru_width=10), "lru_width"),
        (dict(num_heads=0), "num_heads"),
        (dict(a_min=0.99, a_max=0.9), "a_min"),
        (dict(c=0.0), "c"),
        (dict(conv_kernel=0), "conv_kernel"),
    ],
)
def test_config_validation_names_the_field(cfg, field):
    with pytest.raises(ValueError, match=f"'{field}'"):
        create_mixer("rglru", D, **cfg)


def test_state_size_matches_init_state():
    m = create_mixer("rglru", D)
    state = m.init_state(2)
    assert [tuple(t.shape) for t in state] == [(2, 3, 12), (2, 12)]
    assert m.state_size == sum(t[0].numel() for t in state)
    m = create_mixer("rglru", D, reset_at_start=True)
    state = m.init_state(2)
    assert [tuple(t.shape) for t in state] == [(2, 3, 12), (2, 12), (2,)]
    assert m.state_size == sum(t[0].numel() for t in state)
