"""Recurrent Memory Transformer: the paper's segment loop ([read memory; segment; write memory]
through every inner block) against the layer, memory carrying information across segments,
truncated BPTT over k segments, bad config."""
from __future__ import annotations

import pytest
import torch
from conftest import assert_close_rel

from ssmkit.layers import create_mixer


def _layer(**cfg):
    torch.manual_seed(0)
    m = create_mixer("rmt", 8, n_heads=2, **cfg).double()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return m


def _paper_loop(m, x):
    S, k = m.config.segment_len, m.config.n_memory
    mem = m.mem0.expand(x.shape[0], -1, -1)
    ys = []
    for s0 in range(0, x.shape[1], S):
        seg = x[:, s0 : s0 + S]
        h = torch.cat([mem, seg, mem], 1)
        for block in m.blocks:
            h = block(h, "math")
        ys.append(h[:, k : k + seg.shape[1]] - seg)
        if seg.shape[1] == S:
            mem = m.write_norm(h[:, -k:])
    return torch.cat(ys, 1), mem


@pytest.mark.parametrize("cfg", [dict(segment_len=4, n_memory=2), dict(segment_len=3, n_memory=1, depth=2, ffn_mult=2)])
@pytest.mark.parametrize("mode", ["sdpa", "math"])
def test_matches_the_papers_segment_loop(cfg, mode):
    m = _layer(**cfg)
    x = torch.randn(2, 13, 8, dtype=torch.float64)
    y_loop, mem = _paper_loop(m, x)
    y, state = m(x, return_state=True, mode=mode)
    assert_close_rel(y, y_loop, 1e-12, str(cfg))
    assert_close_rel(state.mem, mem, 1e-12, "memory")


def test_the_memory_carries_the_first_segment_into_later_ones():
    m = _layer(segment_len=4, n_memory=2)
    x = torch.randn(1, 12, 8, dtype=torch.float64)
    x2 = x.clone()
    x2[:, 0] += torch.randn(8, dtype=torch.float64)  # (a constant shift would vanish in the LayerNorm)
    y, y2 = m(x), m(x2)
    assert (y - y2)[:, 8:].abs().max() > 1e-3  # segment 3 sees token 0 only through two memory hops


def test_bptt_segments_cuts_gradients_every_k_segments_and_no_value():
    x = torch.randn(1, 16, 8, dtype=torch.float64, requires_grad=True)
    values, grads = [], {}
    for k in (0, 1, 2):
        m = _layer(segment_len=4, n_memory=2, bptt_segments=k)
        y = m(x)
        values.append(y.detach())
        grads[k] = torch.autograd.grad(y[:, 12:].sum(), x)[0].abs().amax(-1)[0]  # from segment 3
    assert all(torch.equal(v, values[0]) for v in values)
    per_segment = {k: g.view(4, 4).amax(1) for k, g in grads.items()}
    assert (per_segment[0] > 1e-6).all()  # full BPTT reaches segment 0
    assert (per_segment[1][:3] == 0).all()  # k = 1: only the segment itself
    assert per_segment[2][2] > 1e-6 and (per_segment[2][:2] == 0).all()  # k = 2: segments 2 and 3


@pytest.mark.parametrize("field", ["segment_len", "n_memory", "depth"])
def test_non_positive_sizes_are_refused_naming_the_field(field):
    with pytest.raises(ValueError, match=f"'{field}'.*>= 1"):
        create_mixer("rmt", 8, **{field: 0})
    with pytest.raises(ValueError, match="'bptt_segments'"):
        create_mixer("rmt", 8, bptt_segments=-1)


def test_the_written_memory_is_normalized_so_it_stays_bounded_over_many_segments():
    """M_{s+1} = LN(write outputs), as the paper's base model's last hidden state: after 60 segments
    the memory has the size of a LayerNorm output (a pre-norm residual stream would grow per segment)."""
    m = _layer(segment_len=2, n_memory=2)
    _, state = m(torch.randn(1, 120, 8, dtype=torch.float64), return_state=True)
    ln = m.write_norm
    rms = state.mem.pow(2).mean(-1).sqrt()
    bound = (ln.weight.abs().max() + ln.bias.abs().max()).item()  # |gamma z + beta|_rms, z of unit rms
    assert rms.max().item() <= bound + 1e-12
