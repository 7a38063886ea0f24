"""mLSTM block: chunked vs reference across several chunks (outputs, state, gradients incl. the
initial state, masks), the block equations written out with the unstabilized cell, the xLSTM
init, config validation."""
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
    m = create_mixer("mlstm", D, **cfg).double()
    with torch.no_grad():  # off the init: gates that depend on the input
        for p in m.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return m


def random_state(m, B: int, gen: torch.Generator):
    conv, C, n, mm = m.init_state(B, dtype=torch.float64)
    return tuple(torch.randn(t.shape, generator=gen, dtype=torch.float64) for t in (conv, C, n, mm))


@pytest.mark.parametrize("gate", ["sigmoid", "exp"])
@pytest.mark.parametrize("L", [1, 6, 17], ids=lambda L: f"L{L}")
def test_chunked_matches_reference_with_mask_and_state(L, gate):
    m = make(L, chunk_size=4, forget_gate=gate)
    gen = torch.Generator().manual_seed(L)
    B = 3
    x = torch.randn(B, L, D, generator=gen, dtype=torch.float64, requires_grad=True)
    s0 = [t.requires_grad_(True) for t in random_state(m, B, gen)]
    assert_mode_matches_reference(m, "chunked", x, s0, gen, ["conv", "C", "n", "m"], 1e-11, 1e-10)


def test_block_equations_written_out():
    """The xLSTM mLSTM block with the cell in its unstabilized form C q / max(|n q|, 1)."""
    m = make(1)
    gen = torch.Generator().manual_seed(3)
    B, L, E, H = 2, 9, 16, 4
    P = E // H
    x = torch.randn(B, L, D, generator=gen, dtype=torch.float64)
    xm, z = (x @ m.proj_up.weight.T).split(E, dim=-1)
    w = m.conv1d.weight[:, 0, :]  # (E, 4): last tap on the current token
    xpad = F.pad(xm, (0, 0, 3, 0))
    xc = F.silu(sum(w[:, j] * xpad[:, j:j + L] for j in range(4)) + m.conv1d.bias)

    def blockdiag(lin, u):
        return torch.block_diag(*lin.weight) @ u.unsqueeze(-1)

    q, k, v = (blockdiag(lin, u).squeeze(-1) for lin, u in ((m.q_proj, xc), (m.k_proj, xc), (m.v_proj, xm)))
    gin = torch.cat([q, k, v], -1)
    i_gate = torch.exp(gin @ m.igate.weight.T + m.igate.bias)  # (B, L, H)
    f_gate = torch.sigmoid(gin @ m.fgate.weight.T + m.fgate.bias)
    q, k, v = q.view(B, L, H, P), k.view(B, L, H, P) / math.sqrt(P), v.view(B, L, H, P)
    C = torch.zeros(B, H, P, P, dtype=torch.float64)
    n = torch.zeros(B, H, P, dtype=torch.float64)
    hs = []
    for t in range(L):
        f, i = f_gate[:, t, :, None], i_gate[:, t, :, None]
        C = f[..., None] * C + i[..., None] * torch.einsum("bhv,bhk->bhvk", v[:, t], k[:, t])  # paper: v k^T
        n = f * n + i * k[:, t]
        den = torch.clamp(torch.einsum("bhk,bhk->bh", n, q[:, t]).abs(), min=1.0)
        hs.append(torch.einsum("bhvk,bhk->bhv", C, q[:, t]) / den[..., None])
    h = torch.stack(hs, 1)  # (B, L, H, P)
    hn = (h - h.mean(-1, keepdim=True)) / torch.sqrt(h.var(-1, unbiased=False, keepdim=True) + 1e-5)
    hn = hn.reshape(B, L, E) * m.norm_weight
    expected = ((hn + m.skip * xc) * F.silu(z)) @ m.proj_down.weight.T
    for mode in ("chunked", "reference"):
        assert_close_rel(m(x, mode=mode), expected, 1e-12, mode)


def test_xlstm_init_and_tags():
    torch.manual_seed(0)
    m = create_mixer("mlstm", 64)
    assert torch.equal(m.fgate.weight, torch.zeros_like(m.fgate.weight))
    assert torch.allclose(m.fgate.bias, torch.linspace(3.0, 6.0, 4))
    assert torch.equal(m.igate.weight, torch.zeros_like(m.igate.weight))
    assert 0.0 < m.igate.bias.abs().max() < 0.5
    assert abs(m.proj_up.weight.std().item() - math.sqrt(2 / (5 * 64))) < 0.01
    assert torch.equal(m.skip, torch.ones(128)) and torch.equal(m.norm_weight, torch.ones(128))
    tagged = {name for name, p in m.named_parameters() if hasattr(p, "_optim")}
    assert tagged == {"igate.weight", "igate.bias", "fgate.weight", "fgate.bias"}
    # The block-diagonal projections: blocks of qkv_blocksize = 4.
    assert tuple(m.q_proj.weight.shape) == (32, 4, 4)


def test_state_shapes_and_size():
    m = create_mixer("mlstm", D, num_heads=2)
    state = m.init_state(3, dtype=torch.float64)
    assert [tuple(t.shape) for t in state] == [(3, 3, 16), (3, 2, 8, 8), (3, 2, 8), (3, 2)]
    assert m.state_size == sum(t[0].numel() for t in state)


@pytest.mark.parametrize(
    "cfg,field",
    [
        (dict(num_heads=3), "num_heads"),
        (dict(qkv_blocksize=5), "qkv_blocksize"),
        (dict(forget_gate="tanh"), "forget_gate"),
        (dict(proj_factor=0.0), "proj_factor"),
        (dict(chunk_size=0), "chunk_size"),
        (dict(ssm_lr=-1.0), "ssm_lr"),
    ],
)
def test_config_validation_names_the_field(cfg, field):
    with pytest.raises(ValueError, match=f"'{field}'"):
        create_mixer("mlstm", D, **cfg)
