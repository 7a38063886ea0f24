"""Helpers of the family tests: one mode of a mixer against its reference mode, with padding in the
middle of a row, a row with its first token padded, a random initial state, and gradients."""
from __future__ import annotations

import torch
from conftest import assert_close_rel


def _state_loss(t: torch.Tensor) -> torch.Tensor:
    """A real scalar reading every state entry (complex parts with different weights)."""
    return (t.real * 0.7 + t.imag * 1.3).sum() if t.is_complex() else t.sum()


def assert_mode_matches_reference(m, mode: str, x: torch.Tensor, s0: list[torch.Tensor], gen: torch.Generator,
                                  state_names: list[str], tol: float, grad_tol: float) -> None:
    """x (B=3, L, D) and the leaves s0 require grad; outputs, final state and the gradients of x, s0
    and every parameter of ``mode`` equal those of ``reference`` to tol / grad_tol."""
    B, L, D = x.shape
    mask = torch.ones(B, L, dtype=torch.bool)
    mask[1, L // 2:] = False
    mask[2, 0] = L == 1
    w = torch.randn(B, L, D, generator=gen, dtype=torch.float64)
    params = list(m.parameters())
    out = {}
    for run in ("reference", mode):
        y, s = m(x, tuple(s0), mask=mask, return_state=True, mode=run)
        loss = (y * w).sum() + sum(_state_loss(t) for t in s)
        out[run] = (y, s, torch.autograd.grad(loss, [x, *s0, *params]))
    (y_r, s_r, g_r), (y_m, s_m, g_m) = out["reference"], out[mode]
    assert_close_rel(y_m, y_r, tol, "y")
    for name, a, b in zip(state_names, s_m, s_r, strict=True):
        assert_close_rel(a, b, tol, f"state {name}")
    names = ["x", *(f"{n}0" for n in state_names), *(name for name, _ in m.named_parameters())]
    for name, a, b in zip(names, g_m, g_r, strict=True):
        assert_close_rel(a, b, grad_tol, f"grad {name}")


def assert_chunked_grads_match_reference(m, tol: float = 1e-10) -> None:
    """Gradients of x, of the first state tensor (the matrix memory; any others ride along) and of
    every parameter: ``chunked`` == ``reference`` from a state left by an earlier prefix."""
    x = torch.randn(2, 13, m.d_model, dtype=torch.float64)
    with torch.no_grad():
        _, s0 = m(torch.randn(2, 5, m.d_model, dtype=torch.float64), return_state=True)

    def grads(mode):
        xg, sg = x.clone().requires_grad_(), s0[0].clone().requires_grad_()
        y, s = m(xg, (sg, *s0[1:]), return_state=True, mode=mode)
        loss = (y * torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)).sum() + s[0].sum()
        return torch.autograd.grad(loss, [xg, sg, *m.parameters()])

    names = ["x", "state", *dict(m.named_parameters())]
    for got, want, name in zip(grads("chunked"), grads("reference"), names, strict=True):
        assert_close_rel(got, want, tol, f"grad of {name}")
