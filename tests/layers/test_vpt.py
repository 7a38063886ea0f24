"""Volume-preserving Transformer: the volume property in float64 (Λ(Z) in SO(T), Jacobian determinant
1 of the feed-forward shears and of the window map with Λ at its value), the limit of that
statement (the full nonlinear map's determinant), the causal readout, zero-padded windows."""
from __future__ import annotations

import pytest
import torch
from conftest import assert_close_rel
from torch.autograd.functional import jacobian

from ssmkit.layers import create_mixer
from ssmkit.layers.vpt import cayley, skew


def _layer(**cfg):
    torch.manual_seed(0)
    m = create_mixer("vpt", 4, **cfg).double()
    with torch.no_grad():  # away from the near-identity init, so every piece is exercised
        m.A.normal_(0, 0.5)
        for p in m.ffn.parameters():
            p.normal_(0, 0.5)
    return m


def test_the_attention_matrix_is_orthogonal_with_determinant_one():
    m = _layer(window=6)
    Z = torch.randn(5, 6, 4, dtype=torch.float64)
    lam = m.attention_matrix(Z)
    eye = torch.eye(6, dtype=torch.float64)
    assert_close_rel(lam.transpose(-1, -2) @ lam, eye.expand(5, 6, 6), 1e-13)
    assert_close_rel(torch.linalg.det(lam), torch.ones(5, dtype=torch.float64), 1e-13)
    K = skew(torch.randn(6, 6, dtype=torch.float64))
    assert torch.equal(K, -K.T) and not K.diagonal().any()
    assert_close_rel(cayley(torch.zeros(6, 6, dtype=torch.float64)), eye, 0.0)


def test_feed_forward_shears_have_jacobian_determinant_one():
    m = _layer(window=3, ffn_layers=2)
    for seed in range(3):
        z = torch.randn(4, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
        J = jacobian(m.ffn, z)
        assert not torch.allclose(J, torch.eye(4, dtype=torch.float64))  # a real nonlinear map
        assert abs(torch.linalg.det(J).item() - 1.0) < 1e-13


def test_the_window_map_preserves_volume_with_the_attention_matrix_at_its_value():
    """The paper's statement: for each Z the layer acts on vec(Z) as a map of determinant 1."""
    m = _layer(window=5, ffn_layers=1)
    Z = torch.randn(5, 4, dtype=torch.float64)
    lam = m.attention_matrix(Z).detach()
    J = jacobian(lambda z: m.ffn(lam.T @ z).flatten(), Z).reshape(20, 20)
    assert abs(torch.linalg.det(J).item() - 1.0) < 1e-12
    # the limit of the statement: with Λ's own dependence on Z the determinant is not 1
    J_full = jacobian(lambda z: m.window_map(z).flatten(), Z).reshape(20, 20)
    assert abs(torch.linalg.det(J_full).item() - 1.0) > 1e-3


@pytest.mark.parametrize("mode", ["solve", "reference"])
def test_position_t_reads_the_last_column_of_its_window(mode):
    m = _layer(window=4)
    x = torch.randn(2, 9, 4, dtype=torch.float64)
    y = m(x, mode=mode)
    for t in range(9):
        Z = x[:, max(0, t - 3) : t + 1]  # the first tokens: a shorter window (zeros in place of the missing)
        assert_close_rel(y[:, t], m.window_map(Z)[:, -1], 1e-12, f"t={t}")


def test_the_layer_is_causal():
    m = _layer(window=4)
    x = torch.randn(1, 8, 4, dtype=torch.float64)
    J = jacobian(lambda v: m(v), x)[0, :, :, 0]  # (L, D, L, D)
    later = torch.ones(8, 8, dtype=torch.bool).triu(1)
    assert J.permute(0, 2, 1, 3)[later].abs().max() == 0
    beyond = torch.ones(8, 8, dtype=torch.bool).tril(-4)  # more than T - 1 = 3 tokens back: out of the window
    assert J.permute(0, 2, 1, 3)[beyond].abs().max() == 0


def test_bad_config_names_the_field():
    with pytest.raises(ValueError, match="'window'.*>= 1"):
        create_mixer("vpt", 8, window=0)
    with pytest.raises(ValueError, match="'ffn_layers'"):
        create_mixer("vpt", 8, ffn_layers=-1)
