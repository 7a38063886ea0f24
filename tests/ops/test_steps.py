"""Every op's one-token step, looped over a sequence from a random initial state in float64, equals
the op's reference and its default fast mode (outputs and final state); without a state it starts
from zeros; it never writes its input state. (short_conv_step: tests/ops/test_short_conv.py.)"""
from __future__ import annotations

from typing import Callable

import pytest
import torch
import torch.nn.functional as F

from conftest import assert_close_rel
from ssmkit.layers.base import _leaves
from ssmkit.ops.delta_rule import delta_rule, delta_rule_step
from ssmkit.ops.linear_attention import linear_attention, linear_attention_step
from ssmkit.ops.linear_scan import linear_scan, linear_scan_step
from ssmkit.ops.long_conv import long_conv, long_conv_step
from ssmkit.ops.mlstm import mlstm, mlstm_step
from ssmkit.ops.rwkv6 import rwkv6, rwkv6_step
from ssmkit.ops.selective_scan import selective_scan, selective_scan_step
from ssmkit.ops.ssd import ssd, ssd_step

B, L, H, K, V = 2, 11, 3, 4, 5


def randn(g: torch.Generator, *shape: int, dtype=torch.float64) -> torch.Tensor:
    return torch.randn(*shape, generator=g, dtype=dtype)


def at(x, t: int):
    """Token t of a (B, L, ...) tensor; None and per-op constants (no time axis) pass through."""
    return x[:, t] if isinstance(x, torch.Tensor) and x.dim() >= 2 and x.shape[:2] == (B, L) else x


# Each case: (op(mode, state) -> (y, final), step(token t, state) -> (y_t, new_state), state0)
Case = tuple[Callable, Callable, object]


def linear_scan_case(g, kind: str) -> Case:
    cplx = torch.complex128 if kind == "complex" else torch.float64
    a = torch.rand(4, generator=g, dtype=torch.float64) * 0.9 if kind == "constant" else \
        (0.95 * torch.rand(B, L, 4, generator=g, dtype=torch.float64)).to(cplx)
    if kind == "complex":
        a = a * torch.exp(1j * randn(g, B, L, 4))
    b = randn(g, B, L, 4).to(cplx)
    return (lambda mode, s: linear_scan(a, b, s, mode=mode),
            lambda t, s: linear_scan_step(at(a, t), b[:, t], s), randn(g, B, 4).to(cplx))


def selective_scan_case(g, groups: int) -> Case:
    D_, N = 6, 4
    shape = (B, L, N) if groups == 1 else (B, L, groups, N)
    u, delta, z = randn(g, B, L, D_), randn(g, B, L, D_), randn(g, B, L, D_)
    A, Bm, Cm = -torch.exp(randn(g, D_, N)), randn(g, *shape), randn(g, *shape)
    Dv, bias = randn(g, D_), randn(g, D_)
    return (lambda mode, s: selective_scan(u, delta, A, Bm, Cm, Dv, z, bias, True, s, mode=mode),
            lambda t, s: selective_scan_step(u[:, t], delta[:, t], A, Bm[:, t], Cm[:, t], Dv, z[:, t], bias, True, s),
            randn(g, B, D_, N))


def ssd_case(g, d_shape: str) -> Case:
    P, G, N, Hs = 2, 2, 4, 2 * H  # two groups of B, C, each read by three heads
    x, dt = randn(g, B, L, Hs, P), F.softplus(randn(g, B, L, Hs))
    A, Bm, Cm = -torch.exp(randn(g, Hs)), randn(g, B, L, G, N), randn(g, B, L, G, N)
    Dv = randn(g, Hs) if d_shape == "H" else randn(g, Hs, P)
    return (lambda mode, s: ssd(x, dt, A, Bm, Cm, Dv, s, mode=mode, chunk_size=4),
            lambda t, s: ssd_step(x[:, t], dt[:, t], A, Bm[:, t], Cm[:, t], Dv, s), randn(g, B, Hs, P, N))


def linear_attention_case(g, decay: str) -> Case:
    q, k, v = randn(g, B, L, H, K), randn(g, B, L, H, K), randn(g, B, L, H, V)
    log_decay = {"none": None, "head": -torch.rand(H, generator=g, dtype=torch.float64),
                 "step": F.logsigmoid(randn(g, B, L, H)), "key": F.logsigmoid(randn(g, B, L, H, K))}[decay]
    return (lambda mode, s: linear_attention(q, k, v, log_decay, s, 0.5, mode=mode, chunk_size=4),
            lambda t, s: linear_attention_step(q[:, t], k[:, t], v[:, t], at(log_decay, t), s, 0.5),
            randn(g, B, H, K, V))


def delta_rule_case(g, gated: bool) -> Case:
    q, k, v = randn(g, B, L, H, K), F.normalize(randn(g, B, L, H, K), dim=-1), randn(g, B, L, H, V)
    beta = torch.sigmoid(randn(g, B, L, H))
    log_alpha = F.logsigmoid(randn(g, B, L, H)) if gated else None
    return (lambda mode, s: delta_rule(q, k, v, beta, log_alpha, s, 0.5, mode=mode, chunk_size=4),
            lambda t, s: delta_rule_step(q[:, t], k[:, t], v[:, t], beta[:, t], at(log_alpha, t), s, 0.5),
            randn(g, B, H, K, V))


def rwkv6_case(g, _) -> Case:
    r, k, v = randn(g, B, L, H, K), randn(g, B, L, H, K), randn(g, B, L, H, V)
    log_w, u = -torch.exp(randn(g, B, L, H, K)), randn(g, H, K)
    return (lambda mode, s: rwkv6(r, k, v, log_w, u, s, mode=mode, chunk_size=4),
            lambda t, s: rwkv6_step(r[:, t], k[:, t], v[:, t], log_w[:, t], u, s), randn(g, B, H, K, V))


def mlstm_case(g, _) -> Case:
    q, k, v = randn(g, B, L, H, K), randn(g, B, L, H, K) / 2, randn(g, B, L, H, V)
    log_i, log_f = 2 * randn(g, B, L, H), F.logsigmoid(2 * randn(g, B, L, H) + 2)
    state = (randn(g, B, H, K, V), randn(g, B, H, K), randn(g, B, H))
    return (lambda mode, s: mlstm(q, k, v, log_i, log_f, s, mode=mode, chunk_size=4),
            lambda t, s: mlstm_step(q[:, t], k[:, t], v[:, t], log_i[:, t], log_f[:, t], s), state)


def long_conv_case(g, _) -> Case:
    u, k = randn(g, B, L, H), randn(g, H, 6)
    return (lambda mode, s: long_conv(u, k, s, mode=mode),
            lambda t, s: long_conv_step(u[:, t], k, s), randn(g, B, 5, H))


CASES = {
    "linear_scan-real": (linear_scan_case, "real"), "linear_scan-constant": (linear_scan_case, "constant"),
    "linear_scan-complex": (linear_scan_case, "complex"),
    "selective_scan": (selective_scan_case, 1), "selective_scan-groups": (selective_scan_case, 2),
    "ssd-D_H": (ssd_case, "H"), "ssd-D_HP": (ssd_case, "HP"),
    **{f"linear_attention-{d}": (linear_attention_case, d) for d in ("none", "head", "step", "key")},
    "delta_rule": (delta_rule_case, False), "delta_rule-gated": (delta_rule_case, True),
    "rwkv6": (rwkv6_case, None), "mlstm": (mlstm_case, None), "long_conv": (long_conv_case, None),
}


def _zeros_like(state):
    return tuple(torch.zeros_like(t) for t in state) if isinstance(state, tuple) else torch.zeros_like(state)


def _loop(step: Callable, state):
    ys = []
    for t in range(L):
        before = [t_.clone() for t_ in _leaves(state)]
        y_t, new = step(t, state)
        assert all(torch.equal(a, b) for a, b in zip(_leaves(state), before)), "a step wrote its input state"
        ys.append(y_t)
        state = new
    return torch.stack(ys, dim=1), state


def _assert_same(actual, expected, what: str) -> None:
    assert_close_rel(actual[0], expected[0], 1e-10, f"{what}: outputs")
    for i, (a, b) in enumerate(zip(_leaves(actual[1]), _leaves(expected[1]), strict=True)):
        assert_close_rel(a, b, 1e-10, f"{what}: final state {i}")


@pytest.mark.parametrize("case", sorted(CASES))
def test_step_loop_equals_reference_and_fast_mode_from_a_state(case):
    make, arg = CASES[case]
    op, step, s0 = make(torch.Generator().manual_seed(len(case)), arg)
    got = _loop(step, s0)
    _assert_same(got, op("reference", s0), "vs reference")
    _assert_same(got, op("auto", s0), "vs auto")


@pytest.mark.parametrize("case", sorted(CASES))
def test_step_without_state_starts_from_zeros(case):
    make, arg = CASES[case]
    op, step, s0 = make(torch.Generator().manual_seed(1), arg)
    zeros = _zeros_like(s0)
    y_none, s_none = step(0, None)
    y_zero, s_zero = step(0, zeros)
    assert torch.equal(y_none, y_zero)
    for a, b in zip(_leaves(s_none), _leaves(s_zero), strict=True):
        assert torch.equal(a, b)
