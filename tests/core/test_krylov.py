"""core.krylov against naive matrix powers in float64: powers, Krylov and observability matrices, the
state reached from reversed inputs and the zero-input response, at lengths that cross chunks."""
from __future__ import annotations

import pytest
import torch

from conftest import assert_close_rel
from ssmkit.core.krylov import MatrixPowers, krylov, observability, reversed_input_state, zero_input_response

H, N, B = 3, 4, 2


def system(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(H, N, N, generator=g, dtype=torch.float64)
    A = 0.95 * A / torch.linalg.matrix_norm(A, ord=2)[:, None, None]  # stable: ||A|| < 1
    return A, torch.randn(H, N, generator=g, dtype=torch.float64), torch.randn(H, N, generator=g, dtype=torch.float64)


def test_powers_apply_and_left():
    A, b, c = system()
    pw = MatrixPowers(A)
    assert_close_rel(pw[3], torch.linalg.matrix_power(A, 8), 1e-12, "A^8")
    x = torch.randn(H, N, 5, dtype=torch.float64)
    assert_close_rel(pw.apply(x, 13), torch.linalg.matrix_power(A, 13) @ x, 1e-12, "A^13 x")
    n = torch.tensor([0, 1, 5, 6, 17])
    want = torch.stack([(torch.linalg.matrix_power(A, int(k)) @ x[..., i, None])[..., 0] for i, k in enumerate(n)], -1)
    assert_close_rel(pw.apply(x, n), want, 1e-12, "per-column powers")
    assert_close_rel(pw.left(c, 11), (c[:, None, :] @ torch.linalg.matrix_power(A, 11))[:, 0], 1e-12, "c A^11")


def test_krylov_and_observability():
    A, b, c = system(1)
    pw = MatrixPowers(A)
    K, O = krylov(b, pw, 8), observability(c, pw, 8)
    for i in range(8):
        Ai = torch.linalg.matrix_power(A, i)
        assert_close_rel(K[..., i], (Ai @ b[..., None])[..., 0], 1e-12, f"column {i}")
        assert_close_rel(O[:, i], (c[:, None, :] @ Ai)[:, 0], 1e-12, f"row {i}")


@pytest.mark.parametrize("L,C", [(1, 1), (7, 4), (21, 4), (64, 8)], ids=lambda v: str(v))
def test_reversed_input_state_and_zero_input_response(L, C):
    A, b, c = system(L)
    g = torch.Generator().manual_seed(2)
    u = torch.randn(B, L, H, generator=g, dtype=torch.float64)
    x0 = torch.randn(B, H, N, generator=g, dtype=torch.float64)
    pw = MatrixPowers(A)
    x, ys = torch.zeros(B, H, N, dtype=torch.float64), []  # the recurrence x_t = A x_{t-1} + b u_t from zero
    z = x0.clone()  # and from x0 without input: y_t = c A^{t+1} x0
    for t in range(L):
        x = (A @ x[..., None])[..., 0] + b * u[:, t, :, None]
        z = (A @ z[..., None])[..., 0]
        ys.append((c * z).sum(-1))
    assert_close_rel(reversed_input_state(u.flip(1), b, pw, C), x, 1e-12, "state")
    assert_close_rel(zero_input_response(c, x0, pw, L, C), torch.stack(ys, 1), 1e-12, "zero-input response")
