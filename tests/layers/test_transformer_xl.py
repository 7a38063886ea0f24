"""Transformer-XL: the paper's segment loop (memory = the last M hidden states, relative scores with
u and v) against the layer, the stop-gradient into the memory, and which equivalences hold."""
from __future__ import annotations

import math

import pytest
import torch
from conftest import assert_close_rel

from ssmkit.layers import create_mixer
from ssmkit.layers._window import sinusoids


def _layer(**cfg):
    torch.manual_seed(0)
    m = create_mixer("transformer_xl", 8, n_heads=2, **cfg).double()
    with torch.no_grad():
        m.u.normal_(0, 0.3)
        m.v.normal_(0, 0.3)
    return m


def _paper_loop(m, x):
    """Segment by segment as the paper's code: memory = cat(memory, segment)[-M:], SG on the memory."""
    B, L, D = x.shape
    S, M, H, P = m.config.segment_len, m.config.mem_len, m.n_heads, m.head_dim
    rel = m.r_proj(sinusoids(M + S, D, x.device, x.dtype)).view(M + S, H, P)
    mem, outs = x[:, :0], []
    for s0 in range(0, L, S):
        h = x[:, s0 : s0 + S]
        ctx = torch.cat([mem.detach() if m.config.stop_grad_memory else mem, h], 1)
        n_seg, n_ctx = h.shape[1], ctx.shape[1]
        q = m.q_proj(h).view(B, n_seg, H, P)
        k, v = m.k_proj(ctx).view(B, n_ctx, H, P), m.v_proj(ctx).view(B, n_ctx, H, P)
        key_pos = s0 - mem.shape[1] + torch.arange(n_ctx)
        o = torch.zeros(B, n_seg, H, P, dtype=x.dtype)
        for i in range(n_seg):
            dist = s0 + i - key_pos
            seen = dist >= 0
            for hh in range(H):
                score = k[:, seen, hh] @ (q[:, i, hh] + m.u[hh])[..., None]
                score = score[..., 0] + (q[:, i, hh] + m.v[hh]) @ rel[dist[seen], hh].T
                o[:, i, hh] = (torch.softmax(score / math.sqrt(P), -1)[..., None] * v[:, seen, hh]).sum(1)
        outs.append(m.o_proj(o.reshape(B, n_seg, D)))
        mem = torch.cat([mem, h], 1)[:, -M:]
    return torch.cat(outs, 1), mem


@pytest.mark.parametrize("S,M", [(5, 3), (3, 7), (4, 4)])
@pytest.mark.parametrize("mode", ["chunked", "reference"])
def test_matches_the_papers_segment_loop(S, M, mode):
    m = _layer(segment_len=S, mem_len=M)
    x = torch.randn(2, 17, 8, dtype=torch.float64)
    y_loop, mem = _paper_loop(m, x)
    y, state = m(x, return_state=True, mode=mode)
    assert_close_rel(y, y_loop, 1e-12, f"S={S} M={M}")
    # the state's M + S - 1 inputs end with the paper's memory (the last M hidden states)
    assert torch.equal(state.x[:, -M:], mem)


def test_stop_gradient_cuts_earlier_segments_and_changes_no_value():
    x = torch.randn(1, 12, 8, dtype=torch.float64, requires_grad=True)
    grads, values = {}, {}
    for sg in (True, False):
        m = _layer(segment_len=4, mem_len=4, stop_grad_memory=sg)
        y = m(x)
        values[sg] = y.detach()
        grads[sg] = torch.autograd.grad(y[:, 8:].sum(), x)[0]  # the third segment's outputs
        y_loop, _ = _paper_loop(m, x)
        assert_close_rel(torch.autograd.grad(y_loop[:, 8:].sum(), x)[0], grads[sg], 1e-12, f"sg={sg}")
    assert_close_rel(values[True], values[False], 1e-14)  # the same sums, in another order
    assert grads[True][:, :8].abs().max() == 0  # no gradient into earlier segments' hidden states
    assert grads[False][:, 4:8].abs().max() > 1e-3  # kept: the memory passes it back
    assert_close_rel(grads[True][:, 8:], grads[False][:, 8:], 1e-12)  # within the segment: the same


def test_a_split_inside_a_segment_is_exact_in_values_and_gradients():
    """The partial segment rides in the state: a split at 6 (inside the second segment of 4) equals one call."""
    m = _layer(segment_len=4, mem_len=3)
    x = torch.randn(2, 11, 8, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 11, 8, dtype=torch.float64)
    y = m(x)
    y1, s1 = m(x[:, :6], return_state=True)
    y2 = m(x[:, 6:], s1)
    assert_close_rel(torch.cat([y1, y2], 1), y, 1e-13)
    g = torch.autograd.grad((y * w).sum(), x)[0]
    g_split = torch.autograd.grad((torch.cat([y1, y2], 1) * w).sum(), x)[0]
    assert_close_rel(g_split, g, 1e-13)


@pytest.mark.parametrize("field", ["segment_len", "mem_len"])
def test_non_positive_lengths_are_refused_naming_the_field(field):
    with pytest.raises(ValueError, match=f"'{field}'.*>= 1"):
        create_mixer("transformer_xl", 8, **{field: 0})
