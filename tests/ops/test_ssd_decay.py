"""core.segsum.decay_forward / segsum_backward and ops.ssd.intra: hand-written backwards vs autograd
through segsum."""
from __future__ import annotations


import pytest
import torch
from conftest import assert_close_rel

from ssmkit.core.segsum import segsum
from ssmkit.core.segsum import decay_forward, segsum_backward
from ssmkit.ops.ssd.inter import inter_chunk
from ssmkit.ops.ssd.intra import factored_range, intra_chunk, intra_chunk_factored


class _ExpSegsum(torch.autograd.Function):
    """exp(segsum(a)) through the library's forward and lean backward, alone."""

    @staticmethod
    def forward(ctx, a):
        decay = decay_forward(a)
        ctx.save_for_backward(decay)
        return decay

    @staticmethod
    def backward(ctx, grad):
        (decay,) = ctx.saved_tensors
        return segsum_backward(grad * decay)


exp_segsum = _ExpSegsum.apply


def _log_decays(shape, scale: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return -torch.rand(*shape, generator=g, dtype=torch.float64) * scale


@pytest.mark.parametrize("T", [1, 2, 7, 16])
def test_matches_exp_segsum_and_its_autograd_float64(T):
    a = _log_decays((2, 3, T), 3.0).requires_grad_(True)
    weight = torch.randn(2, 3, T, T, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    expected = torch.exp(segsum(a))
    (grad_expected,) = torch.autograd.grad((expected * weight).sum(), a)
    actual = exp_segsum(a)
    (grad_actual,) = torch.autograd.grad((actual * weight).sum(), a)
    assert_close_rel(actual, expected, 1e-14, "decay")
    assert_close_rel(grad_actual, grad_expected, 1e-12, "grad of a")
    assert torch.equal(actual.triu(1), torch.zeros_like(actual.triu(1)))


@pytest.mark.parametrize("scale", [0.5, 100.0])
def test_gradcheck_float64(scale):
    a = _log_decays((2, 9), scale).requires_grad_(True)
    assert torch.autograd.gradcheck(exp_segsum, (a,))


def test_small_entries_are_raised_to_sqrt_tiny_float32():
    """No subnormals (slow on CPUs), in the decays or their products: entries stop at sqrt(tiny)."""
    a = torch.full((1, 8), -10.0)  # segsum reaches -70, below log(sqrt(tiny)) = -43.7
    decay = exp_segsum(a)
    floor = torch.finfo(torch.float32).tiny ** 0.5
    seg = segsum(a.double())
    lower = torch.ones(8, 8, dtype=torch.bool).tril()
    expected = torch.exp(seg).clamp(min=floor) * lower
    assert_close_rel(decay.double(), expected, 1e-6, "decay")
    assert decay[0][lower].min() >= floor * (1 - 1e-4) and (decay[0][~lower] == 0).all()


def _intra_inputs(seed: int = 0, scale: float = 2.0):
    g = torch.Generator().manual_seed(seed)
    a = -torch.rand(2, 3, 2, 5, generator=g, dtype=torch.float64) * scale
    cb = torch.randn(2, 3, 5, 5, generator=g, dtype=torch.float64)
    xdt = torch.randn(2, 3, 2, 5, 4, generator=g, dtype=torch.float64)
    return [t.requires_grad_(True) for t in (a, cb, xdt)]


@pytest.mark.parametrize("scale", [2.0, 200.0])
def test_intra_chunk_gradcheck_float64(scale):
    assert torch.autograd.gradcheck(intra_chunk, tuple(_intra_inputs(scale=scale)))


def test_intra_chunk_matches_composed_ops_float64():
    a, cb, xdt = _intra_inputs()
    weight = torch.randn(2, 3, 2, 5, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    expected = (cb.unsqueeze(-3) * torch.exp(segsum(a))) @ xdt
    grads_expected = torch.autograd.grad((expected * weight).sum(), (a, cb, xdt))
    actual = intra_chunk(a, cb, xdt)
    grads = torch.autograd.grad((actual * weight).sum(), (a, cb, xdt))
    assert_close_rel(actual, expected, 1e-13, "y")
    for name, g, g_ref in zip(("a", "cb", "xdt"), grads, grads_expected):
        assert_close_rel(g, g_ref, 1e-12, f"grad of {name}")


def _inter_inputs():
    g = torch.Generator().manual_seed(2)
    states = torch.randn(2, 5, 2, 3, 2, 4, generator=g, dtype=torch.float64)  # (B, nc, G, R, P, N)
    decay = torch.rand(2, 5, 2, 3, generator=g, dtype=torch.float64) * 0.9 + 0.05
    h0 = torch.randn(2, 2, 3, 2, 4, generator=g, dtype=torch.float64)
    return [t.requires_grad_(True) for t in (states, decay, h0)]


def test_inter_chunk_gradcheck_and_loop_float64():
    """The pass across chunks (one node, reverse recurrence in its backward) against finite
    differences, and against the plain loop it replaces when only one of its outputs is used."""
    assert torch.autograd.gradcheck(inter_chunk, tuple(_inter_inputs()))
    states, decay, h0 = _inter_inputs()
    h, entering = h0, []
    for c in range(states.shape[1]):
        entering.append(h)
        h = states[:, c] + decay[:, c, ..., None, None] * h
    expected = (torch.stack(entering, 1), h)
    actual = inter_chunk(states, decay, h0)
    for pick in (0, 1):
        grads = [torch.autograd.grad(out[pick].sin().sum(), (states, decay, h0), materialize_grads=True,
                                     retain_graph=True)
                 for out in (expected, actual)]
        for name, a, e in zip(("states", "decay", "h0"), grads[1], grads[0]):
            assert_close_rel(a, e, 1e-12, f"grad of {name} (output {pick} only)")


def _factored_inputs(seed: int = 0, scale: float = 2.0, G: int = 2):
    """log-decays a <= 0 (B, nc, T, G, R), C B^T (B, nc, G, T, T), xdt (B, nc, T, G, R, P)."""
    g = torch.Generator().manual_seed(seed)
    a = -torch.rand(2, 3, 5, G, 2, generator=g, dtype=torch.float64) * scale
    cbl = torch.randn(2, 3, G, 5, 5, generator=g, dtype=torch.float64)
    xdt = torch.randn(2, 3, 5, G, 2, 4, generator=g, dtype=torch.float64)
    return a, cbl, xdt


@pytest.mark.parametrize("G", [1, 2])
@pytest.mark.parametrize("scale", [2.0, 30.0])
def test_factored_intra_chunk_gradcheck_float64(scale, G):
    a, cbl, xdt = (t.requires_grad_(True) for t in _factored_inputs(scale=scale, G=G))
    assert torch.autograd.gradcheck(lambda a, c, x: intra_chunk_factored(a.cumsum(2), c, x), (a, cbl, xdt))


@pytest.mark.parametrize("G", [1, 2])
def test_factored_intra_chunk_is_the_decay_matrix_form_float64(G):
    """Same values and gradients as intra_chunk (the (T, T) decay per head), in the input's layout."""
    a, cbl, xdt = (t.requires_grad_(True) for t in _factored_inputs(scale=8.0, G=G))
    weight = torch.randn(2, 3, G, 5, 2, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    actual = intra_chunk_factored(a.cumsum(2), cbl, xdt)
    expected = intra_chunk(a.permute(0, 1, 3, 4, 2), cbl, xdt.permute(0, 1, 3, 4, 2, 5)).transpose(-2, -3)
    grads = torch.autograd.grad((actual * weight).sum(), (a, cbl, xdt))
    grads_expected = torch.autograd.grad((expected * weight).sum(), (a, cbl, xdt))
    assert_close_rel(actual, expected, 1e-13, "y")
    for name, g, g_ref in zip(("a", "cbl", "xdt"), grads, grads_expected):
        assert_close_rel(g, g_ref, 1e-12, f"grad of {name}")


def test_chunked_ssd_takes_the_decay_matrix_beyond_the_factored_range(monkeypatch):
    """A chunk whose log-decay is below the factored range (float32: -87) goes through the (T, T)
    decay matrix; one within it through the factored form; both match the float64 reference."""
    import ssmkit.ops.ssd.chunked as chunked
    from ssmkit.ops.ssd import ssd

    calls = []
    monkeypatch.setattr(chunked, "intra_chunk", lambda *a: calls.append("matrix") or intra_chunk(*a))
    monkeypatch.setattr(chunked, "intra_chunk_factored",
                        lambda *a: calls.append("factored") or intra_chunk_factored(*a))
    g = torch.Generator().manual_seed(0)
    x, B, C = (torch.randn(1, 16, 2, n, generator=g, dtype=torch.float64) for n in (3, 4, 4))
    x = x[:, :, :, :3].expand(1, 16, 2, 3).contiguous()
    B, C = B[:, :, :1], C[:, :, :1]
    A = torch.tensor([-0.5, -2.0], dtype=torch.float64)
    assert factored_range(torch.float32) == pytest.approx(-87.3, abs=0.1)
    for dt_value, path in ((0.5, "factored"), (6.0, "matrix")):  # chunk of 8: -8 vs -96 log-decay
        dt = torch.full((1, 16, 2), dt_value, dtype=torch.float64)
        calls.clear()
        y, h = ssd(*(t.float() for t in (x, dt, A, B, C)), mode="chunked", chunk_size=8)
        assert calls == [path]
        y_ref, h_ref = ssd(x, dt, A, B, C, mode="reference")
        assert_close_rel(y.double(), y_ref, 1e-5, f"y ({path})")
        assert_close_rel(h.double(), h_ref, 1e-5, f"final state ({path})")


def test_chunked_ssd_mixes_the_two_forms_per_chunk(monkeypatch):
    """Chunks within the factored range take the factored form and the others the decay matrix, in
    one call; outputs, final state and every gradient match the float64 reference."""
    import ssmkit.ops.ssd.chunked as chunked
    from ssmkit.ops.ssd import ssd

    calls = []
    monkeypatch.setattr(chunked, "intra_chunk", lambda *a: calls.append("matrix") or intra_chunk(*a))
    monkeypatch.setattr(chunked, "intra_chunk_factored",
                        lambda *a: calls.append("factored") or intra_chunk_factored(*a))
    g = torch.Generator().manual_seed(3)
    L, H, P, N = 29, 4, 3, 4
    x = torch.randn(2, L, H, P, generator=g, dtype=torch.float64)
    B, C = (torch.randn(2, L, 2, N, generator=g, dtype=torch.float64) for _ in range(2))
    A = -torch.tensor([0.5, 1.0, 2.0, 4.0], dtype=torch.float64)
    dt = torch.rand(2, L, H, generator=g, dtype=torch.float64) * 0.5
    dt[0, 8:16, 3] = 6.0  # chunk 1 of row 0, one head: log-decay -192, out of range
    dt[1, 24:, :] = 8.0  # the last (padded) chunk of row 1, every head
    D = torch.randn(H, generator=g, dtype=torch.float64)
    h0 = torch.randn(2, H, P, N, generator=g, dtype=torch.float64)
    wy = torch.randn(2, L, H, P, generator=g, dtype=torch.float64)
    wh = torch.randn(2, H, P, N, generator=g, dtype=torch.float64)

    def run(dtype, mode):
        leaves = [t.to(dtype).requires_grad_(True) for t in (x, dt, A, B, C, D, h0)]
        y, h = ssd(*leaves[:6], initial_state=leaves[6], mode=mode, chunk_size=8)
        grads = torch.autograd.grad((y * wy.to(dtype)).sum() + (h * wh.to(dtype)).sum(), leaves)
        return [y, h, *grads]

    expected = run(torch.float64, "reference")
    calls.clear()
    actual = run(torch.float32, "chunked")
    assert calls == ["factored", "matrix"]
    names = ["y", "final state", *(f"grad of {n}" for n in ("x", "dt", "A", "B", "C", "D", "h0"))]
    for name, a, e in zip(names, actual, expected):
        assert torch.isfinite(a).all(), name
        assert_close_rel(a.double(), e, 1e-4, name)
    calls.clear()
    assert_close_rel(run(torch.float64, "chunked")[0], expected[0], 1e-10, "y float64")
