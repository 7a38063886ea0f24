"""Block-Recurrent Transformer: the paper's block loop (vertical self + cross attention, horizontal
state update through the fixed or LSTM gates) against the layer; the gates' formulas; bad config."""
from __future__ import annotations

import math

import pytest
import torch
from conftest import assert_close_rel

from ssmkit.layers import create_mixer
from ssmkit.layers.attention import rope
from ssmkit.layers.block_recurrent import Gate


def _layer(**cfg):
    torch.manual_seed(0)
    m = create_mixer("block_recurrent", 8, n_heads=2, n_state=3, **cfg).double()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return m


def _attend(q, k, v):
    """softmax(q k^T / sqrt(P)) v per head: q (B, Q, H, P), k, v (B, K, H, P)."""
    w = torch.softmax(torch.einsum("bqhp,bkhp->bhqk", q, k) / math.sqrt(q.shape[-1]), -1)
    return torch.einsum("bhqk,bkhp->bqhp", w, v)


def _paper_loop(m, x):
    B, L, D = x.shape
    W, H, P = m.config.block_len, m.n_heads, m.head_dim
    pos = torch.arange(L).expand(B, L)
    q, k, v = (p(x).view(B, L, H, P) for p in (m.q_proj, m.k_proj, m.v_proj))
    q_rot, k_rot = rope(q, pos, m.config.rope_base), rope(k, pos, m.config.rope_base)
    c = m.c0.expand(B, -1, -1)
    ys = []
    for b0 in range(0, L, W):
        _, sk, sv = m._state_kv(c)
        for t in range(b0, min(b0 + W, L)):
            lo = max(0, b0 - W)  # the previous block and this one, up to t
            self_v = _attend(q_rot[:, t : t + 1], k_rot[:, lo : t + 1], v[:, lo : t + 1])
            cross_v = _attend(q[:, t : t + 1], sk, sv)
            ys.append(m.o_proj(torch.cat([self_v, cross_v], -1).reshape(B, 1, 2 * D)))
        if b0 + W <= L:  # the block is complete: the horizontal direction updates the state
            sq, sk, sv = m._state_kv(c)
            h = m.so_proj(torch.cat([_attend(sq, sk, sv), _attend(sq, k[:, b0 : b0 + W], v[:, b0 : b0 + W])],
                                    -1).flatten(-2))
            c1 = m.gate1(c, h)
            c = m.gate2(c1, m.mlp(m.mlp_norm(c1)))
    return torch.cat(ys, 1), c


@pytest.mark.parametrize("gate", ["fixed", "lstm"])
@pytest.mark.parametrize("mode", ["chunked", "reference"])
def test_matches_the_papers_block_loop(gate, mode):
    m = _layer(block_len=4, gate=gate)
    x = torch.randn(2, 14, 8, dtype=torch.float64)
    y_loop, c = _paper_loop(m, x)
    y, state = m(x, return_state=True, mode=mode)
    assert_close_rel(y, y_loop, 1e-12, gate)
    assert_close_rel(state.c, c, 1e-12, "state vectors")


def test_gates_follow_the_papers_formulas():
    torch.manual_seed(1)
    c, h = torch.randn(2, 3, 6, dtype=torch.float64), torch.randn(2, 3, 6, dtype=torch.float64)
    fixed = Gate(6, "fixed").double()
    g = torch.sigmoid(fixed.keep)
    assert_close_rel(fixed(c, h), c * g + fixed.z(h) * (1 - g), 1e-15)
    lstm = Gate(6, "lstm").double()
    i, z, f = lstm.izf(h).chunk(3, -1)
    expected = c * torch.sigmoid(f + 1) + torch.tanh(z) * torch.sigmoid(i - 1)
    assert_close_rel(lstm(c, h), expected, 1e-15)


def test_the_state_changes_only_when_a_block_completes():
    m = _layer(block_len=4)
    x = torch.randn(1, 7, 8, dtype=torch.float64)
    _, s3 = m(x[:, :3], return_state=True)
    _, s7 = m(x, return_state=True)
    assert torch.equal(s3.c[0], m.c0)  # no block completed: the learned initial state
    _, s8 = m(torch.randn(1, 1, 8, dtype=torch.float64), s7, return_state=True)  # token 8 completes block 2
    assert not torch.equal(s8.c, s7.c)
    _, s9 = m(torch.randn(1, 1, 8, dtype=torch.float64), s8, return_state=True)
    assert torch.equal(s9.c, s8.c)


@pytest.mark.parametrize("field", ["block_len", "n_state"])
def test_non_positive_sizes_are_refused_naming_the_field(field):
    with pytest.raises(ValueError, match=f"'{field}'.*>= 1"):
        create_mixer("block_recurrent", 8, **{field: 0})
    with pytest.raises(ValueError, match="'gate'"):
        create_mixer("block_recurrent", 8, gate="gru")
