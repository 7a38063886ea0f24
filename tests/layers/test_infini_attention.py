"""Infini-attention: the paper's segment loop (local attention, retrieval from M_{s-1}, linear and
delta updates, the gate) against the layer; the memory it leaves; bad config."""
from __future__ import annotations

import math

import pytest
import torch
from conftest import assert_close_rel

from ssmkit.layers import create_mixer
from ssmkit.layers.attention import rope
from ssmkit.layers.infini_attention import elu1


def _layer(**cfg):
    torch.manual_seed(0)
    m = create_mixer("infini_attention", 8, n_heads=2, **cfg).double()
    with torch.no_grad():
        m.beta.copy_(torch.tensor([[0.7], [-0.4]]))
    return m


def _paper_loop(m, x):
    """Segment by segment, per head: A = g A_mem + (1 - g) A_dot, then the memory takes the segment."""
    B, L, D = x.shape
    S, H, P, eps = m.config.segment_len, m.n_heads, m.head_dim, m.config.eps
    pos = torch.arange(L).expand(B, L)
    q, k, v = (p(x).view(B, L, H, P) for p in (m.q_proj, m.k_proj, m.v_proj))
    q_rot, k_rot = rope(q, pos, m.config.rope_base), rope(k, pos, m.config.rope_base)
    mem, z = torch.zeros(B, H, P, P, dtype=x.dtype), torch.zeros(B, H, P, dtype=x.dtype)
    g = torch.sigmoid(m.beta)[:, 0]
    out = torch.zeros(B, L, H, P, dtype=x.dtype)
    for s0 in range(0, L, S):
        seg = slice(s0, min(s0 + S, L))
        n = seg.stop - s0
        causal = torch.ones(n, n, dtype=torch.bool).tril()
        for h in range(H):
            scores = q_rot[:, seg, h] @ k_rot[:, seg, h].transpose(1, 2) / math.sqrt(P)
            dot = torch.softmax(scores.masked_fill(~causal, float("-inf")), -1) @ v[:, seg, h]
            sq, sk = elu1(q[:, seg, h]), elu1(k[:, seg, h])
            retrieved = (sq @ mem[:, h]) / (sq @ z[:, h][..., None] + eps)
            out[:, seg, h] = g[h] * retrieved + (1 - g[h]) * dot
            if n == S:  # a complete segment enters the memory
                new_v = v[:, seg, h]
                if m.config.update == "delta":
                    new_v = new_v - (sk @ mem[:, h]) / (sk @ z[:, h][..., None] + eps)
                mem[:, h] = mem[:, h] + sk.transpose(1, 2) @ new_v
                z[:, h] = z[:, h] + sk.sum(1)
    return m.o_proj(out.reshape(B, L, D)), mem, z


@pytest.mark.parametrize("update", ["linear", "delta"])
@pytest.mark.parametrize("mode", ["chunked", "reference"])
def test_matches_the_papers_segment_loop(update, mode):
    m = _layer(segment_len=4, update=update)
    x = torch.randn(2, 15, 8, dtype=torch.float64)
    y_loop, mem, z = _paper_loop(m, x)
    y, state = m(x, return_state=True, mode=mode)
    assert_close_rel(y, y_loop, 1e-12, update)
    assert_close_rel(state.mem, mem, 1e-12, "M")
    assert_close_rel(state.z, z, 1e-12, "z")


def test_the_rules_differ_and_the_first_segment_reads_an_empty_memory():
    x = torch.randn(1, 12, 8, dtype=torch.float64)
    lin, delta = _layer(segment_len=4, update="linear"), _layer(segment_len=4, update="delta")
    y_lin, y_delta = lin(x), delta(x)
    assert torch.equal(y_lin[:, :8], y_delta[:, :8])  # M_1 = σ(K)^T V under both rules (M_0 = 0)
    assert not torch.allclose(y_lin[:, 8:], y_delta[:, 8:])
    with torch.no_grad():  # read the heads' outputs directly, then the local attention alone (gate -> local)
        lin.o_proj.weight.copy_(torch.eye(8))
        lin.o_proj.bias.zero_()
        y = lin(x[:, :4])
        g = torch.sigmoid(lin.beta.clone()).repeat_interleave(4)
        lin.beta.fill_(-torch.inf)
        local = lin(x[:, :4])
    assert_close_rel(y, (1 - g) * local, 1e-13)  # z = 0: the retrieval is exactly 0


def test_bad_config_names_the_field():
    with pytest.raises(ValueError, match="'segment_len'.*>= 1"):
        create_mixer("infini_attention", 8, segment_len=0)
    with pytest.raises(ValueError, match="'update'.*linear"):
        create_mixer("infini_attention", 8, update="hebbian")
