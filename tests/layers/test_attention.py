"""Attention: sdpa vs math vs a naive per-head loop, RoPE, the KV cache with per-row lengths."""
from __future__ import annotations

import math

import pytest
import torch
from conftest import assert_close_rel

from ssmkit.layers import create_mixer
from ssmkit.layers.attention import KVCache, rope
from ssmkit.testing.equivalence import check_mixer


def _layer(d=8, **cfg):
    torch.manual_seed(0)
    return create_mixer("attention", d, **cfg).double()


def _naive(m, x):
    """Per batch row, per head, per query: the textbook formula with RoPE as a complex rotation of
    the leading R dims, query head h reading key-value head h // (H / H_kv), the last ``window``
    tokens only when the layer has a window."""
    B, L, D = x.shape
    H, P, Hkv, R = m.n_heads, m.head_dim, m.n_kv_heads, m.rotary_dim
    q = m.q_proj(x).view(B, L, H, P)
    k, v = (p(x).view(B, L, Hkv, P) for p in (m.k_proj, m.v_proj))
    freq = m.config.rope_base ** (-torch.arange(R // 2, dtype=torch.float64) * 2 / R)
    window = m.config.window or L

    def rot(z, t):  # pairs (i, i + R/2) as the complex number z_i + i z_{i+R/2}; dims >= R pass
        c = torch.complex(z[: R // 2], z[R // 2 : R]) * torch.exp(1j * t * freq)
        return torch.cat([c.real, c.imag, z[R:]])

    out = torch.zeros(B, L, H, P, dtype=x.dtype)
    for b in range(B):
        for h in range(H):
            g = h // (H // Hkv)
            for t in range(L):
                seen = range(max(0, t - window + 1), t + 1)
                qt = rot(q[b, t, h], t)
                s = torch.stack([qt @ rot(k[b, j, g], j) for j in seen]) / math.sqrt(P)
                out[b, t, h] = torch.softmax(s, 0) @ v[b, seen.start : t + 1, g]
    return m.o_proj(out.reshape(B, L, D))


@pytest.mark.parametrize("mode", ["sdpa", "math"])
@pytest.mark.parametrize("L", [1, 7, 13])
def test_modes_match_naive_formula(mode, L):
    m = _layer(8, n_heads=2)
    x = torch.randn(2, L, 8, dtype=torch.float64)
    assert_close_rel(m(x, mode=mode), _naive(m, x), 1e-12, f"{mode} L={L}")


LOCAL = dict(n_heads=4, n_kv_heads=2, rope_fraction=0.5, window=4, bias=False, out_bias=True)


@pytest.mark.parametrize("mode", ["sdpa", "math"])
@pytest.mark.parametrize("L", [3, 13])
def test_local_grouped_partial_rope_match_naive_formula(mode, L):
    """RecurrentGemma's options: a window of 4, 2 key-value heads for 4 query heads, RoPE on half of
    each head, a bias on the output projection only."""
    m = _layer(16, **LOCAL)
    assert (m.k_proj.weight.shape, m.q_proj.bias, m.o_proj.bias is not None) == ((8, 16), None, True)
    x = torch.randn(2, L, 16, dtype=torch.float64)
    assert_close_rel(m(x, mode=mode), _naive(m, x), 1e-12, f"{mode} L={L}")
    y, cache = m(x[:, :2], return_state=True, mode=mode)  # the window through a carried cache
    y2, _ = m(x[:, 2:], cache, return_state=True, mode=mode)
    assert_close_rel(torch.cat([y, y2], 1), _naive(m, x), 1e-12, f"{mode} L={L} split")
    assert m.state_size == 2 * 2 * 4


@pytest.mark.parametrize("length", [13, 7])
def test_local_grouped_partial_rope_keep_every_equivalence(length):
    results = check_mixer("attention", d_model=16, length=length, seed=length, **LOCAL)
    failed = [str(r) for r in results if not r.passed]
    assert not failed, "\n".join(failed)


def test_rope_is_a_rotation_with_relative_scores():
    torch.manual_seed(1)
    q, k = torch.randn(1, 1, 1, 16, dtype=torch.float64), torch.randn(1, 1, 1, 16, dtype=torch.float64)

    def score(tq, tk):
        return (rope(q, torch.tensor([[tq]]), 1e4) * rope(k, torch.tensor([[tk]]), 1e4)).sum()

    # norms kept, scores depend on the offset only, position 0 is the identity
    assert_close_rel(rope(q, torch.tensor([[37]]), 1e4).norm(), q.norm(), 1e-14)
    assert_close_rel(score(105, 100), score(5, 0), 1e-12)
    assert not torch.allclose(score(6, 0), score(5, 0))
    assert torch.equal(rope(q, torch.tensor([[0]]), 1e4), q)


def test_cache_rows_of_different_lengths_continue_exactly():
    """Rows that cached different numbers of tokens (a mask) continue at their own positions."""
    m = _layer(8)
    g = torch.Generator().manual_seed(3)
    x1 = torch.randn(2, 6, 8, generator=g, dtype=torch.float64)
    x2 = torch.randn(2, 5, 8, generator=g, dtype=torch.float64)
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1, 1:4] = False  # row 1 caches 3 tokens, row 0 caches 6
    _, s = m(x1, mask=mask, return_state=True)
    assert s.length.tolist() == [6.0, 3.0]
    assert s.k.shape == (2, m.config.kv_block, m.n_heads, m.head_dim)
    assert s.k[1, 3:].abs().max() == 0  # slots after a row's length are empty
    y2, s2 = m(x2, s, return_state=True)
    for b in range(2):
        full = torch.cat([x1[b : b + 1, mask[b]], x2[b : b + 1]], 1)
        y_full = m(full, mode="math")
        assert_close_rel(y2[b], y_full[0, -5:], 1e-12, f"row {b}")
    # stepping from the mixed-length cache is the same as the forward
    ys, st = [], s
    for t in range(5):
        y_t, st = m.step(x2[:, t], st)
        ys.append(y_t)
    assert_close_rel(torch.stack(ys, 1), y2, 1e-12, "step")
    assert_close_rel(st.k, s2.k, 1e-12, "cache after steps")


def test_cache_grows_by_blocks_and_state_size():
    m = _layer(8, kv_block=4)
    x = torch.randn(1, 9, 8, dtype=torch.float64)
    _, s = m(x, return_state=True)
    assert s.k.shape[1] == 12 and s.v.shape[1] == 12  # 9 tokens -> 3 blocks of 4
    assert m.state_size == 16 and m.state_size_at(9) == 16 * 9
    assert all(t.shape[0] == 3 for t in m.init_state(3))


def test_gradients_sdpa_vs_math_including_cache():
    m = _layer(8, n_heads=2)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        _, s0 = m(torch.randn(2, 4, 8, generator=g, dtype=torch.float64), return_state=True)
    x = torch.randn(2, 7, 8, generator=g, dtype=torch.float64)
    w = torch.randn(2, 7, 8, generator=g, dtype=torch.float64)
    grads = {}
    for mode in ("sdpa", "math"):
        xi = x.clone().requires_grad_(True)
        k0, v0 = s0.k.clone().requires_grad_(True), s0.v.clone().requires_grad_(True)
        y, s = m(xi, KVCache(k0, v0, s0.length), return_state=True, mode=mode)
        loss = (y * w).sum() + s.k.sum() + s.v.sum()
        grads[mode] = torch.autograd.grad(loss, [xi, k0, v0, *m.parameters()])
    for a, b in zip(grads["sdpa"], grads["math"]):
        assert_close_rel(a, b, 1e-11)
    assert grads["math"][1].abs().max() > 0  # the cache receives a gradient


def test_float32_sdpa_close_to_float64_math():
    torch.manual_seed(0)
    m = create_mixer("attention", 32, n_heads=4)
    x = torch.randn(2, 200, 32)
    y32 = m(x, mode="sdpa")
    y64 = m.double()(x.double(), mode="math")
    assert_close_rel(y32, y64, 1e-5)


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="n_heads.*divide d_model=8"):
        create_mixer("attention", 8, n_heads=3)
    with pytest.raises(ValueError, match="n_heads.*even for RoPE"):
        create_mixer("attention", 6, n_heads=2)
    with pytest.raises(ValueError, match="kv_block"):
        create_mixer("attention", 8, kv_block=0)
    with pytest.raises(ValueError, match="'n_kv_heads'.*must divide n_heads=4, got 3"):
        create_mixer("attention", 16, n_heads=4, n_kv_heads=3)
    with pytest.raises(ValueError, match="'rope_fraction'.*0.25 \\* 4 must be an even int"):
        create_mixer("attention", 16, n_heads=4, rope_fraction=0.25)
    with pytest.raises(ValueError, match="'window'"):
        create_mixer("attention", 8, window=0)
    m = create_mixer("attention", 8)
    bad = KVCache(torch.zeros(2, 3, 2, 4), torch.zeros(2, 3, 2, 4), torch.zeros(2))
    with pytest.raises(ValueError, match=r"Expected KVCache\(k=\(B, T, 1, 8\) float32"):
        m(torch.zeros(2, 3, 8), bad)


def test_biases_tagged_without_weight_decay():
    m = create_mixer("attention", 8)
    tagged = [n for n, p in m.named_parameters() if hasattr(p, "_optim")]
    assert sorted(tagged) == ["k_proj.bias", "o_proj.bias", "q_proj.bias", "v_proj.bias"]
    assert m.q_proj.bias._optim == {"weight_decay": 0.0}
