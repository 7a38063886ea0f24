"""ops.short_conv: conv1d mode vs the tap loop, the step function, states and orientation."""
from __future__ import annotations

import re
import pytest
import torch
from conftest import assert_close_rel

from ssmkit.ops.short_conv import short_conv, short_conv_step

BATCH, D = 2, 5


def make_inputs(L: int, K: int, bias: bool = True, state: bool = True, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    return {
        "x": randn(BATCH, L, D),
        "weight": randn(D, K),
        "bias": randn(D) if bias else None,
        "initial_state": randn(BATCH, K - 1, D) if state else None,
    }


def run_with_grads(inputs: dict, mode: str):
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in inputs.items() if v is not None}
    y, final = short_conv(**{**inputs, **leaves}, mode=mode)
    g = torch.Generator().manual_seed(1)
    wy = torch.randn(y.shape, generator=g, dtype=torch.float64).to(y.dtype)
    wf = torch.randn(final.shape, generator=g, dtype=torch.float64).to(y.dtype)
    grads = torch.autograd.grad((y * wy).sum() + (final * wf).sum(), list(leaves.values()))
    return y.detach(), final.detach(), dict(zip(leaves, grads))


@pytest.mark.parametrize("with_state", [True, False], ids=["state", "no_state"])
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("L", [1, 2, 7, 13], ids=lambda v: f"L{v}")
@pytest.mark.parametrize("K", [1, 2, 3, 4], ids=lambda v: f"K{v}")
def test_conv1d_matches_reference(K, L, with_bias, with_state):
    inputs = make_inputs(L, K, with_bias, with_state)
    y_ref, h_ref, g_ref = run_with_grads(inputs, "reference")
    y, h, grads = run_with_grads(inputs, "conv1d")
    assert_close_rel(y, y_ref, 1e-12, "y")
    assert_close_rel(h, h_ref, 1e-12, "final_state")
    assert grads.keys() == g_ref.keys()
    for name in g_ref:
        assert_close_rel(grads[name], g_ref[name], 1e-12, f"grad of {name}")


def test_conv1d_float32():
    inputs = make_inputs(37, 4)
    y_ref, h_ref = short_conv(**inputs, mode="reference")
    y, h = short_conv(**{k: v.float() for k, v in inputs.items()}, mode="conv1d")
    assert y.dtype == torch.float32
    assert_close_rel(y, y_ref, 1e-6, "y")
    assert_close_rel(h, h_ref, 1e-6, "final_state")


@pytest.mark.parametrize("mode", ["reference", "conv1d"])
def test_orientation_last_tap_is_current_token(mode):
    """weight[:, K-1] multiplies x_t and weight[:, 0] multiplies x_{t-(K-1)}: a delta input shows it."""
    x = torch.zeros(1, 6, D, dtype=torch.float64)
    x[:, 1] = 1.0
    weight = torch.arange(1.0, 4.0, dtype=torch.float64).expand(D, 3)  # taps 1, 2, 3
    y, _ = short_conv(x, weight, mode=mode)
    # the impulse at t=1 meets the last tap (3) at t=1, then 2 at t=2, then 1 at t=3
    assert torch.equal(y[0, :, 0], torch.tensor([0.0, 3.0, 2.0, 1.0, 0.0, 0.0], dtype=torch.float64))


@pytest.mark.parametrize("mode", ["reference", "conv1d"])
@pytest.mark.parametrize("L", [1, 2, 3, 8], ids=lambda v: f"L{v}")
def test_final_state_is_last_inputs(mode, L):
    """final_state = the last K-1 inputs of [initial_state, x], oldest first (L < K-1 included)."""
    inputs = make_inputs(L, 4)
    _, h = short_conv(**inputs, mode=mode)
    assert torch.equal(h, torch.cat([inputs["initial_state"], inputs["x"]], dim=1)[:, -3:])


@pytest.mark.parametrize("K", [1, 2, 3, 4], ids=lambda v: f"K{v}")
def test_step_matches_forward(K):
    inputs = make_inputs(9, K)
    y, h = short_conv(**inputs)
    state = inputs["initial_state"]
    before = state.clone()
    ys = []
    for t in range(9):
        y_t, new_state = short_conv_step(inputs["x"][:, t], inputs["weight"], inputs["bias"], state)
        assert torch.equal(state, before), "short_conv_step modified its input state"
        ys.append(y_t)
        state, before = new_state, new_state.clone()
    assert_close_rel(torch.stack(ys, dim=1), y, 1e-12, "y")
    assert torch.equal(state, h)


def test_step_without_state_starts_from_zeros():
    inputs = make_inputs(1, 3, state=False)
    y, h = short_conv(**inputs)
    y_t, h_t = short_conv_step(inputs["x"][:, 0], inputs["weight"], inputs["bias"])
    assert_close_rel(y_t, y[:, 0], 1e-12, "y")
    assert torch.equal(h_t, h)


def test_split_sequence_with_carried_state():
    inputs = make_inputs(11, 4)
    y, h = short_conv(**inputs)
    y1, h1 = short_conv(inputs["x"][:, :2], inputs["weight"], inputs["bias"], inputs["initial_state"])
    y2, h2 = short_conv(inputs["x"][:, 2:], inputs["weight"], inputs["bias"], h1)
    assert_close_rel(torch.cat([y1, y2], dim=1), y, 1e-12, "y")
    assert torch.equal(h2, h)


f64 = torch.float64
BAD = {
    "x_rank": (dict(x=torch.zeros(2, 7, dtype=f64)), "x must have shape (B, L, D)"),
    "x_empty": (dict(x=torch.zeros(2, 0, D, dtype=f64)), "empty sequence"),
    "weight_width": (dict(weight=torch.zeros(D + 1, 3, dtype=f64)), "weight must have shape (D, K)"),
    "weight_no_taps": (dict(weight=torch.zeros(D, 0, dtype=f64)), "K >= 1"),
    "bias_shape": (dict(bias=torch.zeros(D, 1, dtype=f64)), "bias must have shape (D,)"),
    "state_length": (
        dict(initial_state=torch.zeros(2, 3, D, dtype=f64)), "initial_state must have shape (B, K-1, D)"
    ),
    "dtype_mismatch": (dict(weight=torch.zeros(D, 3)), "weight is torch.float32"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_names_the_argument(case):
    changes, message = BAD[case]
    inputs = {**make_inputs(7, 3), **changes}
    with pytest.raises((ValueError, TypeError), match=re.escape(message)):
        short_conv(**inputs)


def test_bad_mode_and_step_state():
    inputs = make_inputs(4, 3)
    with pytest.raises(ValueError, match="short_conv has no mode 'fft'"):
        short_conv(**inputs, mode="fft")
    with pytest.raises(ValueError, match=r"state must have shape \(B, K-1, D\)"):
        short_conv_step(inputs["x"][:, 0], inputs["weight"], None, inputs["initial_state"][:, :1])


@pytest.mark.parametrize("mode", ["reference", "conv1d"])
@pytest.mark.parametrize("K", [1, 2, 4])
def test_starts_reset_the_window_like_separate_documents(mode, K):
    """A packed row with starts == each document alone (the first from the initial state, the
    others from zeros): outputs, the last document's final state, gradients."""
    inp = make_inputs(11, K, seed=K)
    starts = torch.zeros(BATCH, 11, dtype=torch.bool)
    starts[0, [2, 3, 9]] = True  # documents [0, 2), [2, 3), [3, 9), [9, 11) in row 0
    starts[1, 5] = True
    x, w, b, s0 = (inp[k].detach().requires_grad_(True) for k in ("x", "weight", "bias", "initial_state"))
    y, final = short_conv(x, w, b, s0, mode=mode, starts=starts)
    (y.square().sum() + final.sum()).backward()
    grads = [t.grad for t in (x, w, b, s0)]
    x2, w2, b2, s02 = (inp[k].detach().requires_grad_(True) for k in ("x", "weight", "bias", "initial_state"))
    ys, finals, loss = [], [], 0
    for row, cuts in ((0, [0, 2, 3, 9, 11]), (1, [0, 5, 11])):
        for i, (a, e) in enumerate(zip(cuts, cuts[1:])):
            yd, fd = short_conv(x2[row : row + 1, a:e], w2, b2, s02[row : row + 1] if i == 0 else None, mode="reference")
            ys.append((row, a, e, yd))
            loss = loss + yd.square().sum()
        finals.append(fd)
    (loss + sum(f.sum() for f in finals)).backward()
    for row, a, e, yd in ys:
        assert_close_rel(y[row : row + 1, a:e], yd, 1e-13)
    assert_close_rel(final, torch.cat(finals), 1e-13)
    for g, g2 in zip(grads, (x2.grad, w2.grad, b2.grad, s02.grad)):
        assert_close_rel(g, g2, 1e-12)


def test_starts_must_be_a_bool_row_mask():
    inp = make_inputs(6, 3)
    with pytest.raises(ValueError, match=r"starts must be a bool tensor of shape \(B, L\) = \(2, 6\)"):
        short_conv(**inp, starts=torch.zeros(2, 5, dtype=torch.bool))
