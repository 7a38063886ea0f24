"""``starts`` (packed rows, ops/_documents.py) in every op that takes it and in every one of its
modes: a row with document starts equals each document run alone with the reference mode, the
first from the row's initial state and the others from zeros (a start at t = 0 drops the initial
state too): outputs, the final state (the row's last document's) and the gradients of every input."""
from __future__ import annotations

import pytest
import torch

from conftest import rel_err
from ssmkit.ops.delta_rule import delta_rule
from ssmkit.ops.linear_attention import linear_attention
from ssmkit.ops.mlstm import mlstm
from ssmkit.ops.rwkv6 import rwkv6
from ssmkit.ops.selective_scan import selective_scan
from ssmkit.ops.ssd import ssd
from ssmkit.ops._documents import document_spans

B, L, H, K, V = 2, 11, 2, 3, 4


def _randn(g, *shape, scale=1.0):
    return (scale * torch.randn(*shape, generator=g, dtype=torch.float64)).requires_grad_(True)


def _cases(g):
    """op name -> (function of (tensors..., initial_state, mode, starts), tensors, initial_state, modes)."""
    E, N = 3, 4
    sel = [_randn(g, B, L, E), torch.rand(B, L, E, generator=g, dtype=torch.float64).requires_grad_(True),
           (-torch.rand(E, N, generator=g, dtype=torch.float64) - 0.5).requires_grad_(True),
           _randn(g, B, L, N), _randn(g, B, L, N), _randn(g, E), _randn(g, B, L, E)]
    ssd_in = [_randn(g, B, L, H, K), torch.rand(B, L, H, generator=g, dtype=torch.float64).requires_grad_(True),
              (-torch.rand(H, generator=g, dtype=torch.float64) - 0.5).requires_grad_(True),
              _randn(g, B, L, 1, N), _randn(g, B, L, 1, N)]
    qkv = [_randn(g, B, L, H, K, scale=0.5), _randn(g, B, L, H, K, scale=0.5), _randn(g, B, L, H, V)]
    logd = (-torch.rand(B, L, H, K, generator=g, dtype=torch.float64)).requires_grad_(True)
    beta = torch.rand(B, L, H, generator=g, dtype=torch.float64).requires_grad_(True)
    log_a = (-torch.rand(B, L, H, generator=g, dtype=torch.float64)).requires_grad_(True)
    S = lambda *shape: _randn(g, *shape)  # noqa: E731
    return {
        "selective_scan": (lambda u, d, A, Bm, Cm, D, z, h0, mode, starts: selective_scan(
            u, d, A, Bm, Cm, D, z, initial_state=h0, mode=mode, starts=starts), sel, S(B, E, N),
            ("cpp", "chunked", "reference")),
        "ssd": (lambda x, dt, A, Bm, Cm, h0, mode, starts: ssd(x, dt, A, Bm, Cm, None, h0, mode=mode, chunk_size=4,
                                                            starts=starts), ssd_in, S(B, H, K, N),
                ("chunked", "quadratic", "reference")),
        "linear_attention": (lambda q, k, v, ld, h0, mode, starts: linear_attention(
            q, k, v, ld, h0, 0.5, mode=mode, chunk_size=4, starts=starts), [*qkv, logd], S(B, H, K, V),
            ("chunked", "parallel", "reference")),
        "delta_rule": (lambda q, k, v, b, la, h0, mode, starts: delta_rule(
            q, k, v, b, la, h0, 0.5, mode=mode, chunk_size=4, starts=starts), [*qkv, beta, log_a], S(B, H, K, V),
            ("chunked", "reference")),
        "rwkv6": (lambda r, k, v, lw, u, h0, mode, starts: rwkv6(r, k, v, lw, u, h0, mode=mode, chunk_size=4,
                                                              starts=starts), [*qkv, logd, _randn(g, H, K)],
                  S(B, H, K, V), ("chunked", "reference")),
        "mlstm": (lambda q, k, v, li, lf, h0, mode, starts: mlstm(q, k, v, li, lf, h0, mode=mode, chunk_size=4,
                                                               starts=starts),
                  [*qkv, _randn(g, B, L, H), log_a], (S(B, H, K, V), S(B, H, K), S(B, H)), ("chunked", "reference")),
    }


STARTS = torch.zeros(B, L, dtype=torch.bool)
STARTS[0, [3, 4, 9]] = True  # row 0: documents [0, 3), [3, 4), [4, 9), [9, 11)
STARTS[1, [0, 6]] = True  # row 1: a start at t = 0 drops the initial state


def _leaves(h):
    return [h] if isinstance(h, torch.Tensor) else list(h)


def _slice_state(h, b):
    return h[b : b + 1] if isinstance(h, torch.Tensor) else tuple(t[b : b + 1] for t in h)


@pytest.mark.parametrize("op", ["selective_scan", "ssd", "linear_attention", "delta_rule", "rwkv6", "mlstm"])
def test_starts_equal_each_document_alone(op):
    g = torch.Generator().manual_seed(0)
    fn, tensors, h0, modes = _cases(g)[op]
    w = torch.randn(B, L, *fn(*tensors, h0, "reference", None)[0].shape[2:], generator=g, dtype=torch.float64)
    leaves = [*tensors, *_leaves(h0)]

    def per_step(t):  # the tensors that have one entry per (row, step)
        return t.dim() >= 2 and t.shape[:2] == (B, L)

    expected_y, expected_h = [], []
    for b, spans in enumerate(document_spans(STARTS)):
        h = None if STARTS[b, 0] else _slice_state(h0, b)
        row = []
        for i, (t0, t1) in enumerate(spans):
            args = [t[b : b + 1, t0:t1] if per_step(t) else t for t in tensors]
            y, h = fn(*args, h if i == 0 else None, "reference", None)
            row.append(y)
        expected_y.append(torch.cat(row, 1))
        expected_h.append(h)
    y_ref = torch.cat(expected_y)
    h_ref = [torch.cat(parts) for parts in zip(*map(_leaves, expected_h))]
    loss = (y_ref * w).sum() + sum(t.sum() for t in h_ref)
    g_ref = torch.autograd.grad(loss, leaves, allow_unused=True)
    for mode in modes:
        y, h = fn(*tensors, h0, mode, STARTS)
        assert rel_err(y, y_ref) < 1e-12, mode
        assert max(rel_err(a, e) for a, e in zip(_leaves(h), h_ref)) < 1e-12, mode
        grads = torch.autograd.grad((y * w).sum() + sum(t.sum() for t in _leaves(h)), leaves, allow_unused=True)
        for a, e in zip(grads, g_ref):
            assert (a is None) == (e is None) and (a is None or rel_err(a, e) < 1e-11), mode
    with pytest.raises(ValueError, match=f"{op}: starts must be a bool tensor of shape"):
        fn(*tensors, h0, "reference", STARTS[:, :-1])
