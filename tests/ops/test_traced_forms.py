"""The forms the ops take while torch.compile traces them (docs/compile.md), against the reference
in float64 with gradients: the chunked selective scan's fixed chunks with pairwise decays (across
chunk boundaries, with steps whose |dt A| is far beyond the eager mode's clamp bound) and the linear
scan without out= writes (complex, time-varying a, an initial state)."""
from __future__ import annotations

import torch
import torch._dynamo as dynamo
from conftest import assert_close_rel

from ssmkit.ops.linear_scan import linear_scan
from ssmkit.ops.selective_scan import selective_scan


def _grads(out, inputs, g):
    y, h = out
    return torch.autograd.grad((y * g).sum() + h.sum(), inputs)


def test_chunked_selective_scan_traced_equals_reference():
    gen = torch.Generator().manual_seed(0)
    B, L, D, N = 2, 37, 4, 3  # 37 = two 16-step chunks and a tail

    def r(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64).requires_grad_(True)

    delta = (torch.rand(B, L, D, generator=gen, dtype=torch.float64) * 3).requires_grad_(True)
    A = (-torch.rand(D, N, generator=gen, dtype=torch.float64) * 40).requires_grad_(True)  # |dt A| up to 120
    args = (r(B, L, D), delta, A, r(B, L, N), r(B, L, N), r(D), r(B, L, D), None, False, r(B, D, N))
    inputs = [a for a in args if isinstance(a, torch.Tensor)]
    g = torch.randn(B, L, D, generator=gen, dtype=torch.float64)
    dynamo.reset()
    traced = torch.compile(lambda *a: selective_scan(*a, mode="chunked"), backend="aot_eager", fullgraph=True)
    got, ref = traced(*args), selective_scan(*args, mode="reference")
    assert_close_rel(got[0], ref[0], 1e-10, "y")
    assert_close_rel(got[1], ref[1], 1e-10, "final state")
    for i, (a, b) in enumerate(zip(_grads(got, inputs, g), _grads(ref, inputs, g), strict=True)):
        assert_close_rel(a, b, 1e-9, f"grad {i}")


def test_linear_scan_traced_equals_reference():
    gen = torch.Generator().manual_seed(1)
    B, L, S = 2, 23, 3

    def c(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.complex128).requires_grad_(True)

    a = (0.9 * c(B, L, S).detach() / c(B, L, S).detach().abs()).requires_grad_(True)
    b, h0 = c(B, L, S), c(B, S)
    g = torch.randn(B, L, S, generator=gen, dtype=torch.float64)

    def loss_grads(out):
        h, last = out
        return torch.autograd.grad((h.real * g).sum() + (last.imag).sum(), [a, b, h0])

    dynamo.reset()
    traced = torch.compile(lambda a, b, h0: linear_scan(a, b, h0, mode="chunked"), backend="aot_eager", fullgraph=True)
    got, ref = traced(a, b, h0), linear_scan(a, b, h0, mode="reference")
    assert_close_rel(got[0], ref[0], 1e-12, "h")
    assert_close_rel(got[1], ref[1], 1e-12, "last")
    for name, x, y in zip("a b h0".split(), loss_grads(got), loss_grads(ref), strict=True):
        assert_close_rel(x, y, 1e-11, f"grad {name}")
