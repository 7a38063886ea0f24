"""Sliding-window attention: the band rule against a naive per-query loop, full attention when the
window covers the sequence, chunk sizes unrelated to the window, a fixed-size state, bad config."""
from __future__ import annotations

import math

import pytest
import torch
from conftest import assert_close_rel

from ssmkit.layers import create_mixer
from ssmkit.layers.attention import rope


def _layer(d=8, **cfg):
    torch.manual_seed(0)
    return create_mixer("swa", d, **cfg).double()


def _naive(m, x):
    """Per row, head and query t: softmax over the keys t - W .. t, RoPE at absolute positions."""
    B, L, D = x.shape
    H, P, W = m.n_heads, m.head_dim, m.config.window
    pos = torch.arange(L).expand(B, L)
    q = rope(m.q_proj(x).view(B, L, H, P), pos, m.config.rope_base)
    k = rope(m.k_proj(x).view(B, L, H, P), pos, m.config.rope_base)
    v = m.v_proj(x).view(B, L, H, P)
    out = torch.zeros(B, L, H, P, dtype=x.dtype)
    for b in range(B):
        for h in range(H):
            for t in range(L):
                lo = max(0, t - W)
                s = k[b, lo : t + 1, h] @ q[b, t, h] / math.sqrt(P)
                out[b, t, h] = torch.softmax(s, 0) @ v[b, lo : t + 1, h]
    return m.o_proj(out.reshape(B, L, D))


@pytest.mark.parametrize("window,chunk", [(3, 8), (5, 3), (1, 1), (4, 4)])
@pytest.mark.parametrize("mode", ["chunked", "reference"])
def test_band_rule_matches_naive_loop(window, chunk, mode):
    m = _layer(8, n_heads=2, window=window, chunk_size=chunk)
    x = torch.randn(2, 13, 8, dtype=torch.float64)
    assert_close_rel(m(x, mode=mode), _naive(m, x), 1e-12, f"W={window} C={chunk} {mode}")


def test_a_window_covering_the_sequence_is_full_causal_attention():
    m = _layer(8, n_heads=2, window=16, chunk_size=4)
    full = create_mixer("attention", 8, n_heads=2).double()
    full.load_state_dict(m.state_dict())
    x = torch.randn(2, 17, 8, dtype=torch.float64)  # the last token sees all 17: W = 16 before it
    assert_close_rel(m(x), full(x), 1e-12)
    assert not torch.allclose(_layer(8, n_heads=2, window=4)(x), full(x))  # a shorter window differs


def test_state_size_is_constant_and_streaming_keeps_the_cache_shape():
    m = _layer(8, window=5)
    assert m.state_size == 2 * 5 * 8 + 1 == m.state_size_at(10_000)
    x = torch.randn(1, 40, 8, dtype=torch.float64)
    _, s = m(x, return_state=True)
    assert s.k.shape == (1, 5, 1, 8) and s.length.item() == 40
    assert_close_rel(s.v[0, -1], m.v_proj(x[0, -1]).view(1, 8), 1e-14)  # the newest value sits last


@pytest.mark.parametrize("field", ["window", "chunk_size"])
def test_non_positive_lengths_are_refused_naming_the_field(field):
    for bad in (0, -3):
        with pytest.raises(ValueError, match=f"'{field}'.*>= 1"):
            create_mixer("swa", 8, **{field: bad})
