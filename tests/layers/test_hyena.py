"""Hyena: fft vs reference (outputs, state, gradients incl. the initial state, masks with
unequal rows), the order-N recurrence written out, the implicit filters, max_len errors, the
growing state and its size, config validation."""
from __future__ import annotations

import math

import pytest
import torch

from conftest import assert_close_rel
from ssmkit import create_mixer
from ssmkit.layers.hyena import positional_encoding

from .layer_helpers import assert_mode_matches_reference

D = 8


def make(seed: int = 0, **cfg):
    torch.manual_seed(seed)
    return create_mixer("hyena", D, **{"max_len": 64, "filter_order": 16, "history_block": 8, **cfg}).double()


def prefix_state(m, B, gen, T=5):
    _, s = m(torch.randn(B, T, D, generator=gen, dtype=torch.float64), return_state=True)
    return s


@pytest.mark.parametrize("order", [2, 3])
@pytest.mark.parametrize("L", [1, 7, 30], ids=lambda L: f"L{L}")
def test_fft_matches_reference_with_mask_and_state(L, order):
    m = make(L, order=order)
    gen = torch.Generator().manual_seed(L)
    B = 3
    x = torch.randn(B, L, D, generator=gen, dtype=torch.float64, requires_grad=True)
    s0 = [t.detach().requires_grad_(True) for t in prefix_state(m, B, gen)]
    assert_mode_matches_reference(m, "fft", x, s0, gen, [f"s{i}" for i in range(len(s0))], 1e-12, 1e-11)


@pytest.mark.parametrize("order", [2, 3])
def test_order_n_recurrence_written_out(order):
    """z^1 = v, z^{n+1}_t = x^n_t (Σ_s h^n_s z^n_{t-s} + β^n z^n_t), out = W_out z^{N+1}."""
    m = make(1, order=order)
    gen = torch.Generator().manual_seed(4)
    B, L = 2, 11
    x = torch.randn(B, L, D, generator=gen, dtype=torch.float64)
    u = x @ m.in_proj.weight.T + m.in_proj.bias
    w = m.short_filter.weight[:, 0, :]  # (3 D', 3): last tap on the current token
    uc = torch.stack([sum(w[:, j] * u[:, t - 2 + j] for j in range(3) if t - 2 + j >= 0) + m.short_filter.bias
                      for t in range(L)], 1)
    *xs, z = uc.split(D, -1)
    h = m.filters(L)  # (N, D, L)
    beta = m.filter_bias.view(order, D)
    for n in range(order):
        conv = torch.stack([sum(h[n, :, s] * z[:, t - s] for s in range(t + 1)) for t in range(L)], 1)
        z = xs[n] * (conv + beta[n] * z)
    for mode in ("fft", "reference"):
        assert_close_rel(m(x, mode=mode), z @ m.out_proj.weight.T + m.out_proj.bias, 1e-12, mode)


def test_implicit_filters_are_ffn_of_positions_times_window():
    m = make(2)
    c = m.config
    z, t = positional_encoding(64, 3)
    assert_close_rel(z[:, 0], torch.linspace(0, 1, 64, dtype=torch.float64), 1e-15, "t")
    ang = 2 * math.pi * 1e-4 * torch.arange(64, dtype=torch.float64) / 64
    assert_close_rel(z[:, 1], torch.cos(ang), 1e-15, "cos")
    assert_close_rel(z[:, 2], -torch.sin(ang), 1e-15, "-sin")
    h = m.pos_emb
    for lin in m.filter_linears:
        h = torch.sin(m.filter_act.freq * lin(h))
    deltas = torch.linspace(math.log(c.target) / c.slow_decay_pct, math.log(c.target) / c.fast_decay_pct, 2 * D,
                            dtype=torch.float64)
    # The buffers were made in the default float32 and converted by .double(): rounded once.
    assert_close_rel(m.pos_emb, z, 1e-7, "pos_emb buffer")
    assert_close_rel(m.deltas, deltas, 1e-7, "deltas buffer")
    window = torch.exp(-m.pos_t * m.deltas.abs())
    expected = (m.filter_out(h) * window).T.reshape(2, D, 64)
    assert_close_rel(m.filters(64), expected, 1e-12, "filters")
    # The slowest channel's window reaches the target at slow_decay_pct of the length (t = 1.5).
    assert abs(math.exp(-1.5 * abs(deltas[0].item())) - c.target) < 1e-6
    assert_close_rel(m.filters(9), m.filters(64)[..., :9], 1e-15, "prefix")  # filters do not depend on L


def test_longer_than_max_len_raises_with_a_clear_message():
    m = make(3, max_len=10)
    x = torch.randn(1, 11, D, dtype=torch.float64)
    with pytest.raises(ValueError, match="11 tokens .* > max_len=10"):
        m(x)
    _, s = m(x[:, :6], return_state=True)
    with pytest.raises(ValueError, match="max_len=10"):
        m(x[:, :5], s)
    y, s = m(x[:, :4], s, return_state=True)  # exactly max_len tokens is fine
    with pytest.raises(ValueError, match="max_len=10"):
        m.step(x[:, 0], s)
    # Padding does not count: 10 real tokens in a mask of 11 are fine.
    mask = torch.ones(1, 11, dtype=torch.bool)
    mask[0, 3] = False
    m(x, mask=mask)


def test_state_grows_by_blocks_and_matches_state_size_at():
    m = make(4, history_block=8)
    gen = torch.Generator().manual_seed(0)
    state = m.init_state(2, dtype=torch.float64)
    assert m.state_size_at(0) == sum(t[0].numel() for t in state)
    for T in (3, 8, 9, 20):
        _, s = m(torch.randn(2, T, D, generator=gen, dtype=torch.float64), return_state=True)
        assert s[1].shape == (2, 8 * math.ceil(T / 8), D)
        assert s[-1].tolist() == [T, T]
        assert m.state_size_at(T) == sum(t[0].numel() for t in s)
    assert m.state_size == m.state_size_at(64)


def test_unequal_rows_keep_right_aligned_histories_that_continue_exactly():
    m = make(5)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 12, D, generator=gen, dtype=torch.float64)
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[1, 5:] = False  # row 1 has 5 tokens, row 0 has 12
    _, s = m(x, mask=mask, return_state=True)
    _, s1 = m(x[1:, :5], return_state=True)
    assert s[-1].tolist() == [12.0, 5.0]
    for a, b in zip(s[1:-1], s1[1:-1]):  # row 1's history right-aligned in the batch's 16 slots
        assert a.shape == (2, 16, D) and b.shape == (1, 8, D)  # 12 and 5 rounded up to blocks of 8
        assert_close_rel(a[1:, -5:], b[:, -5:], 1e-15, "history")
        assert (a[1, :11] == 0).all() and (b[0, :3] == 0).all()
    x2 = torch.randn(2, 4, D, generator=gen, dtype=torch.float64)
    y2 = m(x2, s)
    assert_close_rel(y2[1:], m(torch.cat([x[1:, :5], x2[1:]], 1))[:, 5:], 1e-12, "row 1 continued")
    assert_close_rel(y2[:1], m(torch.cat([x[:1], x2[:1]], 1))[:, 12:], 1e-12, "row 0 continued")


@pytest.mark.parametrize(
    "cfg,field",
    [
        (dict(max_len=0), "max_len"),
        (dict(emb_dim=4), "emb_dim"),
        (dict(order=0), "order"),
        (dict(fast_decay_pct=2.0, slow_decay_pct=1.0), "fast_decay_pct"),
        (dict(target=1.5), "target"),
        (dict(history_block=0), "history_block"),
        (dict(num_inner_mlps=-1), "num_inner_mlps"),
    ],
)
def test_config_validation_names_the_field(cfg, field):
    with pytest.raises(ValueError, match=f"'{field}'"):
        create_mixer("hyena", D, **cfg)
