"""Helpers of the op tests: run an op with gradients of a fixed random projection of both of its
outputs, and compare two such runs (outputs, final state, every gradient)."""
from __future__ import annotations

from typing import Callable

import torch
from conftest import assert_close_rel


def outputs_and_grads(op: Callable, inputs: dict, seed: int = 1, **kwargs):
    """(out, final_state, {name: grad}) of ``op(**inputs, **kwargs)``; None inputs are left out of
    the gradients. The loss is a fixed random projection of both outputs."""
    leaves = {n: t.detach().clone().requires_grad_(True) for n, t in inputs.items() if t is not None}
    out, final = op(**{**inputs, **leaves}, **kwargs)
    g = torch.Generator().manual_seed(seed)
    w_out = torch.randn(out.shape, generator=g, dtype=torch.float64).to(out.dtype)
    w_final = torch.randn(final.shape, generator=g, dtype=torch.float64).to(out.dtype)
    grads = torch.autograd.grad((out * w_out).sum() + (final * w_final).sum(), list(leaves.values()))
    return out.detach(), final.detach(), dict(zip(leaves, grads))


def assert_all_close(actual, expected, rtol: float, grad_rtol: float | None = None, out_name: str = "o") -> None:
    out, final, grads = actual
    out_ref, final_ref, grads_ref = expected
    assert_close_rel(out, out_ref, rtol, out_name)
    assert_close_rel(final, final_ref, rtol, "final_state")
    assert grads.keys() == grads_ref.keys()
    for name in grads_ref:
        assert_close_rel(grads[name], grads_ref[name], grad_rtol or rtol, f"grad of {name}")
