"""ops.ssd: every mode vs the sequential reference (outputs, final state, all gradients)."""
from __future__ import annotations

import functools
import re

import pytest
import torch
from conftest import assert_close_rel

from ssmkit.ops.ssd import segsum, ssd

from .op_helpers import assert_all_close as check_all_close
from .op_helpers import outputs_and_grads

P, N, BATCH = 3, 5, 2
FAST_MODES = ["quadratic", "chunked"]
ARGS = ("x", "dt", "A", "B", "C", "D", "initial_state")


def make_inputs(
    L: int, H: int, G: int, d_kind: str = "H", dtype=torch.float64, seed: int = 0, state: bool = True
) -> dict:
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)

    D = {"H": randn(H), "HP": randn(H, P), "none": None}[d_kind]
    return {
        "x": randn(BATCH, L, H, P),
        # a spread of step sizes and decay rates so that some heads forget within a chunk
        "dt": (torch.rand(BATCH, L, H, generator=g, dtype=torch.float64) * 0.9 + 0.05).to(dtype),
        "A": -torch.linspace(0.2, 3.0, H, dtype=torch.float64).to(dtype),
        "B": randn(BATCH, L, G, N),
        "C": randn(BATCH, L, G, N),
        "D": D,
        "initial_state": randn(BATCH, H, P, N) if state else None,
    }


def run_with_grads(inputs: dict, mode: str, chunk_size: int = 16, seed: int = 1):
    """(y, final_state, {name: grad}) of a fixed random projection of both outputs."""
    return outputs_and_grads(ssd, inputs, seed, mode=mode, chunk_size=chunk_size)


def assert_all_close(actual, expected, rtol: float, grad_rtol: float | None = None) -> None:
    check_all_close(actual, expected, rtol, grad_rtol, out_name="y")


@functools.cache
def reference_with_grads(L: int, H: int, G: int, d_kind: str):
    """The float64 reference for ``make_inputs(L, H, G, d_kind)``, shared by both fast modes."""
    return run_with_grads(make_inputs(L, H, G, d_kind), "reference")


@pytest.mark.parametrize("d_kind", ["H", "HP", "none"], ids=lambda d: f"D_{d}")
@pytest.mark.parametrize("L", [1, 7, 13, 64, 130], ids=lambda v: f"L{v}")
@pytest.mark.parametrize("H,G", [(1, 1), (4, 1), (4, 2)], ids=lambda v: str(v))
@pytest.mark.parametrize("mode", FAST_MODES)
def test_mode_matches_reference_float64(mode, H, G, L, d_kind):
    actual = run_with_grads(make_inputs(L, H, G, d_kind), mode, chunk_size=16)
    assert_all_close(actual, reference_with_grads(L, H, G, d_kind), 1e-10)


@pytest.mark.parametrize("mode", FAST_MODES)
def test_zero_initial_state_is_none(mode):
    inputs = make_inputs(13, 4, 2, state=False)
    y_ref, h_ref = ssd(**inputs, mode="reference")
    y, h = ssd(**inputs, mode=mode, chunk_size=5)
    assert_close_rel(y, y_ref, 1e-10, "y")
    assert_close_rel(h, h_ref, 1e-10, "final_state")
    zeros = {**inputs, "initial_state": torch.zeros(BATCH, 4, P, N, dtype=torch.float64)}
    assert torch.equal(ssd(**zeros, mode=mode, chunk_size=5)[0], y)


@pytest.mark.parametrize("chunk_size", [1, 2, 5, 13, 64])
def test_chunked_any_chunk_size(chunk_size):
    inputs = make_inputs(13, 4, 2, "HP")
    expected = run_with_grads(inputs, "reference")
    assert_all_close(run_with_grads(inputs, "chunked", chunk_size=chunk_size), expected, 1e-10)


@pytest.mark.parametrize("L", [7, 130], ids=lambda v: f"L{v}")
@pytest.mark.parametrize("mode", FAST_MODES)
def test_mode_matches_reference_float32(mode, L):
    """float32 mode vs the float64 reference on the same values: rounding only."""
    inputs64 = make_inputs(L, 4, 2, "HP")
    inputs32 = {k: None if v is None else v.float() for k, v in inputs64.items()}
    expected = run_with_grads(inputs64, "reference")
    assert_all_close(run_with_grads(inputs32, mode, chunk_size=16), expected, 1e-5, 1e-4)


@pytest.mark.parametrize("mode", FAST_MODES)
def test_strong_decay_stays_finite_float32(mode):
    """Total log-decay -1950 over the sequence: exp(-cumsum) would overflow; segsum never forms it."""
    inputs64 = make_inputs(130, 4, 2)
    inputs64["dt"] = torch.full_like(inputs64["dt"], 5.0)
    inputs64["A"] = -torch.tensor([0.01, 0.5, 3.0, 20.0], dtype=torch.float64)
    inputs32 = {k: v.float() for k, v in inputs64.items()}
    actual = run_with_grads(inputs32, mode, chunk_size=16)
    for name, t in [("y", actual[0]), ("final", actual[1]), *actual[2].items()]:
        assert torch.isfinite(t).all(), f"{name} has non-finite values"
    assert_all_close(actual, run_with_grads(inputs64, "reference"), 1e-5, 1e-4)


@pytest.mark.parametrize("mode", ["reference", *FAST_MODES])
def test_zero_dt_step_is_identity(mode):
    """Steps with dt = 0 leave the state unchanged: the Mamba-2 layer masks padding this way."""
    inputs = make_inputs(20, 4, 2, "none")
    keep = torch.ones(20, dtype=torch.bool)
    keep[[0, 3, 4, 11, 19]] = False
    padded = {**inputs, "dt": inputs["dt"] * keep[None, :, None]}
    y_pad, h_pad = ssd(**padded, mode=mode, chunk_size=4)
    short = {k: v[:, keep] if k in ("x", "dt", "B", "C") else v for k, v in inputs.items()}
    y_short, h_short = ssd(**short, mode=mode, chunk_size=4)
    assert_close_rel(h_pad, h_short, 1e-12, "final_state")
    assert_close_rel(y_pad[:, keep], y_short, 1e-12, "y at kept steps")


def test_split_sequence_with_carried_state():
    inputs = make_inputs(41, 4, 1, "HP")
    y, h = ssd(**inputs, chunk_size=8)
    first = {k: v[:, :17] if k in ("x", "dt", "B", "C") else v for k, v in inputs.items()}
    y1, h1 = ssd(**first, chunk_size=8)
    rest = {k: v[:, 17:] if k in ("x", "dt", "B", "C") else v for k, v in inputs.items()}
    y2, h2 = ssd(**{**rest, "initial_state": h1}, chunk_size=8)
    assert_close_rel(torch.cat([y1, y2], dim=1), y, 1e-12, "y")
    assert_close_rel(h2, h, 1e-12, "final_state")


@pytest.mark.parametrize("L", [1, 13, 100])
def test_auto_is_chunked(L):
    inputs = make_inputs(L, 4, 2)
    y_auto, h_auto = ssd(**inputs, chunk_size=16)
    y, h = ssd(**inputs, mode="chunked", chunk_size=16)
    assert torch.equal(y_auto, y) and torch.equal(h_auto, h)


def test_chunked_gradcheck():
    inputs = make_inputs(4, 2, 1, "HP")
    inputs = {k: v.narrow(0, 0, 1).clone() if k in ("x", "dt", "B", "C", "initial_state") else v
              for k, v in inputs.items()}
    for name in ("x", "B", "C"):
        inputs[name] = inputs[name][..., :2]
    inputs["D"] = inputs["D"][:, :2]
    inputs["initial_state"] = inputs["initial_state"][:, :, :2, :2]
    leaves = [inputs[k].requires_grad_(True) for k in ARGS]

    def fn(*args):
        return ssd(*args, mode="chunked", chunk_size=2)

    assert torch.autograd.gradcheck(fn, leaves, fast_mode=True)


def test_segsum_definition():
    a = -torch.rand(2, 6, dtype=torch.float64, requires_grad=True)
    out = segsum(a)
    for t in range(6):
        for s in range(6):
            if t >= s:
                want = a[:, s + 1 : t + 1].sum(-1)
                assert_close_rel(out[:, t, s], want, 1e-15, f"segsum[{t}, {s}]")
            else:
                assert (out[:, t, s] == -torch.inf).all(), f"segsum[{t}, {s}] must be -inf"
    (grad,) = torch.autograd.grad(torch.exp(out).sum(), a)
    assert torch.isfinite(grad).all()


def _bad(**changes):
    inputs = make_inputs(7, 4, 2, "H")
    inputs.update(changes)
    return inputs


f64 = torch.float64
BAD = {
    "x_rank": (_bad(x=torch.zeros(2, 7, 12, dtype=f64)), "x must have shape (B, L, H, P)"),
    "x_empty": (
        _bad(x=torch.zeros(2, 0, 4, P, dtype=f64), dt=torch.zeros(2, 0, 4, dtype=f64),
             B=torch.zeros(2, 0, 2, N, dtype=f64), C=torch.zeros(2, 0, 2, N, dtype=f64)),
        "empty sequence",
    ),
    "dt_shape": (_bad(dt=torch.ones(2, 7, 3, dtype=f64)), "dt must have shape (B, L, H)"),
    "A_shape": (_bad(A=-torch.ones(4, 1, dtype=f64)), "A must have shape (H,)"),
    "B_length": (_bad(B=torch.zeros(2, 6, 2, N, dtype=f64)), "B must have shape (B, L, G, N)"),
    "B_groups": (
        _bad(B=torch.zeros(2, 7, 3, N, dtype=f64), C=torch.zeros(2, 7, 3, N, dtype=f64)),
        "groups G=3 of B must divide the number of heads H=4",
    ),
    "C_shape": (_bad(C=torch.zeros(2, 7, 2, N + 1, dtype=f64)), "C must have shape (B, L, G, N)"),
    "D_shape": (_bad(D=torch.zeros(4, P + 1, dtype=f64)), "D must have shape (H,)"),
    "state_shape": (
        _bad(initial_state=torch.zeros(2, 4, N, P, dtype=f64)), "initial_state must have shape"
    ),
    "dtype_mismatch": (_bad(A=-torch.ones(4)), "A is torch.float32"),
    "integer_dt": (_bad(dt=torch.ones(2, 7, 4, dtype=torch.long)), "dt must be a real floating-point"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_names_the_argument(case):
    inputs, message = BAD[case]
    with pytest.raises((ValueError, TypeError), match=re.escape(message)):
        ssd(**inputs)


def test_bad_mode_and_chunk_size():
    with pytest.raises(ValueError, match="ssd has no mode 'fft'"):
        ssd(**make_inputs(7, 4, 2), mode="fft")
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        ssd(**make_inputs(7, 4, 2), chunk_size=0)
