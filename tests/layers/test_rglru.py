"""RG-LRU (Griffin recurrent block): scan vs reference (outputs, state, gradients incl. the
initial state, masks), the paper's equations written out, the Λ init, block-diagonal gates,
the sqrt(1 - a²) normalization, config validation."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from conftest import assert_close_rel
from ssmkit import create_mixer

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


@pytest.mark.parametrize("mode", ["chunked", "reference"])
def test_paper_equations_written_out(mode):
    m = make(2)
    with torch.no_grad():
        m.a_param.add_(torch.randn_like(m.a_param))  # a spread of decays, some far from 1
    gen = torch.Generator().manual_seed(5)
    B, L, W = 2, 11, m.lru_width
    x = torch.randn(B, L, D, generator=gen, dtype=torch.float64)
    g = F.gelu(x @ m.linear_y.weight.T + m.linear_y.bias, approximate="tanh")
    xb = x @ m.linear_x.weight.T + m.linear_x.bias
    w = m.conv1d.weight[:, 0, :]
    xpad = F.pad(xb, (0, 0, 3, 0))
    u = sum(w[:, j] * xpad[:, j:j + L] for j in range(4)) + m.conv1d.bias
    Wa, Wx = torch.block_diag(*m.gate_a.weight), torch.block_diag(*m.gate_x.weight)
    a_base = torch.sigmoid(m.a_param)  # a = σ(Λ)
    h = torch.zeros(B, W, dtype=torch.float64)
    hs = []
    for t in range(L):
        r = torch.sigmoid(u[:, t] @ Wa.T + m.gate_a.bias)
        i = torch.sigmoid(u[:, t] @ Wx.T + m.gate_x.bias)
        a = a_base ** (8 * r)
        h = a * h + torch.sqrt(1 - a**2) * (i * u[:, t])
        hs.append(h)
    expected = (torch.stack(hs, 1) * g) @ m.linear_out.weight.T + m.linear_out.bias
    assert_close_rel(m(x, mode=mode), expected, 1e-12, "y")


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
    a_t, b = m._recurrence_inputs(u)
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
