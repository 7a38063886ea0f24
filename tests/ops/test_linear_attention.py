"""ops.linear_attention: every mode vs the sequential reference, for every kind of decay
(outputs, final state, gradients of q, k, v, log_decay and the initial state)."""
from __future__ import annotations

import functools

import pytest
import torch
from conftest import assert_close_rel

from ssmkit.ops.linear_attention import chunked, dyadic_scores, linear_attention

from .op_helpers import assert_all_close, outputs_and_grads

BATCH, H, K, V = 2, 3, 4, 5
FAST_MODES = ["parallel", "chunked"]
KINDS = ["none", "head", "scalar", "vector"]
ARGS = ("q", "k", "v", "log_decay", "initial_state")


def make_inputs(L: int, kind: str, dtype=torch.float64, seed: int = 0, state: bool = True,
                strength: float = 1.0) -> dict:
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)

    def log_decay(*shape):  # a spread from barely decaying to forgetting within a few steps
        return (-strength * torch.rand(*shape, generator=g, dtype=torch.float64) ** 2 * 2.0).to(dtype)

    decay = {
        "none": None,
        "head": log_decay(H),
        "scalar": log_decay(BATCH, L, H),
        "vector": log_decay(BATCH, L, H, K),
    }[kind]
    return {
        "q": randn(BATCH, L, H, K),
        "k": randn(BATCH, L, H, K),
        "v": randn(BATCH, L, H, V),
        "log_decay": decay,
        "initial_state": randn(BATCH, H, K, V) if state else None,
    }


def run_with_grads(inputs: dict, mode: str, chunk_size: int = 8, scale: float = 0.5, seed: int = 1):
    """(o, final_state, {name: grad}) of a fixed random projection of both outputs."""
    return outputs_and_grads(linear_attention, inputs, seed, scale=scale, mode=mode, chunk_size=chunk_size)


@functools.cache
def reference_with_grads(L: int, kind: str):
    return run_with_grads(make_inputs(L, kind), "reference")


@pytest.mark.parametrize("L", [1, 7, 16, 37], ids=lambda v: f"L{v}")
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mode", FAST_MODES)
def test_mode_matches_reference_float64(mode, kind, L):
    actual = run_with_grads(make_inputs(L, kind), mode, chunk_size=8)
    assert_all_close(actual, reference_with_grads(L, kind), 1e-10)


@pytest.mark.parametrize("chunk_size", [1, 2, 4, 16, 64])
@pytest.mark.parametrize("kind", KINDS)
def test_chunked_any_chunk_size(kind, chunk_size):
    assert_all_close(run_with_grads(make_inputs(13, kind), "chunked", chunk_size), reference_with_grads(13, kind), 1e-10)


@pytest.mark.parametrize("kind", KINDS)
def test_chunked_in_segments(kind, monkeypatch):
    """Long inputs run in segments of whole chunks with the state carried (here 2 chunks of 4
    per segment, the last segment short): same values and gradients as the reference."""
    monkeypatch.setattr(chunked, "SEGMENT_ELEMENTS", BATCH * H * 4 * (K + V) * 2)
    actual = run_with_grads(make_inputs(37, kind), "chunked", chunk_size=4)
    assert_all_close(actual, reference_with_grads(37, kind), 1e-10)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mode", ["reference", *FAST_MODES])
def test_zero_initial_state_is_none(mode, kind):
    inputs = make_inputs(11, kind, state=False)
    o, final = linear_attention(**inputs, mode=mode, chunk_size=4)
    zeros = {**inputs, "initial_state": torch.zeros(BATCH, H, K, V, dtype=torch.float64)}
    o0, final0 = linear_attention(**zeros, mode=mode, chunk_size=4)
    assert_close_rel(o0, o, 1e-14, "o")
    assert_close_rel(final0, final, 1e-14, "final_state")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mode", FAST_MODES)
def test_mode_matches_reference_float32(mode, kind):
    """float32 mode vs the float64 reference on the same values: rounding only."""
    inputs64 = make_inputs(70, kind)
    inputs32 = {n: None if t is None else t.float() for n, t in inputs64.items()}
    expected = run_with_grads(inputs64, "reference")
    assert_all_close(run_with_grads(inputs32, mode, chunk_size=16), expected, 1e-5, 1e-4)


@pytest.mark.parametrize("kind", ["scalar", "vector"])
@pytest.mark.parametrize("mode", FAST_MODES)
def test_strong_decay_stays_finite_float32(mode, kind):
    """Log-decays down to -100 a step: exp(-cumsum) would overflow float32 within one chunk."""
    inputs64 = make_inputs(70, kind, strength=50.0)
    inputs32 = {n: t.float() for n, t in inputs64.items()}
    actual = run_with_grads(inputs32, mode, chunk_size=32)
    for name, t in [("o", actual[0]), ("final", actual[1]), *actual[2].items()]:
        assert torch.isfinite(t).all(), f"{name} has non-finite values"
    assert_all_close(actual, run_with_grads(inputs64, "reference"), 1e-5, 1e-4)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mode", ["reference", *FAST_MODES])
def test_masked_steps_are_identities(mode, kind):
    """Steps with log_decay = 0 and k = 0 leave the state unchanged: how layers mask padding."""
    inputs = make_inputs(20, kind)
    keep = torch.ones(20, dtype=torch.bool)
    keep[[0, 3, 4, 11, 19]] = False
    padded = dict(inputs, k=inputs["k"] * keep[None, :, None, None])
    if kind in ("scalar", "vector"):
        mask = keep[None, :, None] if kind == "scalar" else keep[None, :, None, None]
        padded["log_decay"] = inputs["log_decay"] * mask
    elif kind == "head":  # a fixed decay cannot skip steps: spell it out per step
        padded["log_decay"] = inputs["log_decay"].expand(BATCH, 20, H) * keep[None, :, None]
    o_pad, final_pad = linear_attention(**padded, mode=mode, chunk_size=4)
    short = {n: t[:, keep] if n in ("q", "k", "v") or (n == "log_decay" and t.ndim > 1) else t
             for n, t in inputs.items() if t is not None}
    o_short, final_short = linear_attention(**short, mode=mode, chunk_size=4)
    assert_close_rel(final_pad, final_short, 1e-12, "final_state")
    assert_close_rel(o_pad[:, keep], o_short, 1e-12, "o at kept steps")


@pytest.mark.parametrize("kind", KINDS)
def test_split_sequence_with_carried_state(kind):
    inputs = make_inputs(41, kind)
    o, final = linear_attention(**inputs, chunk_size=8)

    def part(sl: slice, state):
        return {n: t[:, sl] if n in ("q", "k", "v") or (n == "log_decay" and t is not None and t.ndim > 1)
                else t for n, t in {**inputs, "initial_state": state}.items()}

    o1, s1 = linear_attention(**part(slice(0, 17), inputs["initial_state"]), chunk_size=8)
    o2, s2 = linear_attention(**part(slice(17, None), s1), chunk_size=8)
    assert_close_rel(torch.cat([o1, o2], dim=1), o, 1e-12, "o")
    assert_close_rel(s2, final, 1e-12, "final_state")


@pytest.mark.parametrize("L", [1, 13, 100])
def test_auto_is_chunked(L):
    inputs = make_inputs(L, "vector")
    o_auto, s_auto = linear_attention(**inputs, chunk_size=16)
    o, s = linear_attention(**inputs, mode="chunked", chunk_size=16)
    assert torch.equal(o_auto, o) and torch.equal(s_auto, s)


def test_no_decay_is_causal_linear_attention():
    """Without decay the output is the plain causal sum Σ_{s≤t} (q_t·k_s) v_s, plus q_t S_0."""
    inputs = make_inputs(9, "none")
    q, k, v, S0 = inputs["q"], inputs["k"], inputs["v"], inputs["initial_state"]
    scores = torch.einsum("bthk,bshk->bhts", q, k).tril()
    want = torch.einsum("bhts,bshv->bthv", scores, v) + torch.einsum("bthk,bhkv->bthv", q, S0)
    o, final = linear_attention(**inputs, mode="chunked", chunk_size=4)
    assert_close_rel(o, want, 1e-12, "o")
    assert_close_rel(final, S0 + torch.einsum("bshk,bshv->bhkv", k, v), 1e-12, "final_state")


@pytest.mark.parametrize("T", [1, 2, 8, 32])
def test_dyadic_scores_match_direct_form(T):
    g = torch.Generator().manual_seed(T)
    q, k = torch.randn(2, 3, T, 5, generator=g, dtype=torch.float64), torch.randn(2, 3, T, 5, generator=g, dtype=torch.float64)
    a = -3 * torch.rand(2, 3, T, 5, generator=g, dtype=torch.float64)
    A, q_dec, k_dec, total = dyadic_scores(q, k, torch.exp(a))
    b = a.cumsum(-2)
    seg = (b[..., :, None, :] - b[..., None, :, :]).masked_fill(~torch.ones(T, T, dtype=torch.bool).tril()[..., None], -torch.inf)
    assert_close_rel(A, torch.einsum("...tk,...sk,...tsk->...ts", q, k, torch.exp(seg)), 1e-12, "A")
    assert_close_rel(q_dec, q * torch.exp(b), 1e-12, "q decayed from the block start")
    assert_close_rel(k_dec, k * torch.exp(b[..., -1:, :] - b), 1e-12, "k decayed to the block end")
    assert_close_rel(total, torch.exp(b[..., -1:, :]), 1e-12, "block decay")


def test_dyadic_scores_in_many_slabs(monkeypatch):
    """Rows are processed in slabs; slabs of 1 and 3 rows (one ragged) give the same values and
    gradients as one slab."""
    g = torch.Generator().manual_seed(4)
    q, k = (torch.randn(2, 5, 16, 3, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(2))
    decay = torch.rand(2, 5, 16, 3, generator=g, dtype=torch.float64).requires_grad_(True)
    weights = [torch.randn(s, generator=g, dtype=torch.float64) for s in [(2, 5, 16, 16), q.shape, q.shape, (2, 5, 1, 3)]]

    def run():
        outs = dyadic_scores(q, k, decay)
        loss = sum((o * w).sum() for o, w in zip(outs, weights))
        return [o.detach() for o in outs] + list(torch.autograd.grad(loss, (q, k, decay)))

    whole = run()
    for rows in (1, 3):
        monkeypatch.setattr(chunked, "SLAB_ELEMENTS", rows * 16 * 3)
        for got, want in zip(run(), whole):
            assert_close_rel(got, want, 1e-14, f"slabs of {rows} rows")


def test_dyadic_scores_gradcheck():
    """The custom backward of every output (scores, decayed q and k, block decay), 3 levels."""
    g = torch.Generator().manual_seed(3)
    q, k = (torch.randn(2, 8, 3, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(2))
    decay = torch.rand(2, 8, 3, generator=g, dtype=torch.float64).mul(0.9).add(0.05).requires_grad_(True)
    assert torch.autograd.gradcheck(dyadic_scores, (q, k, decay))
    # outputs left out of the loss reach backward as None
    assert torch.autograd.gradcheck(lambda *args: dyadic_scores(*args)[0], (q, k, decay))
    assert torch.autograd.gradcheck(lambda *args: dyadic_scores(*args)[3], (q, k, decay))


@pytest.mark.parametrize("kind", KINDS)
def test_chunked_gradcheck(kind):
    inputs = make_inputs(5, kind)
    leaves = [inputs[n][:1].clone().requires_grad_(True) if n != "log_decay" or inputs[n].ndim > 1
              else inputs[n].clone().requires_grad_(True) for n in ARGS if inputs[n] is not None]
    names = [n for n in ARGS if inputs[n] is not None]

    def fn(*args):
        return linear_attention(**dict(zip(names, args)), scale=0.5, mode="chunked", chunk_size=2)

    assert torch.autograd.gradcheck(fn, leaves, fast_mode=True)


f64 = torch.float64


def _bad(**changes):
    return {**make_inputs(7, "vector"), **changes}


BAD = {
    "q_rank": (_bad(q=torch.zeros(2, 7, 12, dtype=f64)), ValueError, "q must have shape (B, L, H, K)"),
    "empty": (_bad(q=torch.zeros(2, 0, H, K, dtype=f64)), ValueError, "empty sequence"),
    "k_shape": (_bad(k=torch.zeros(2, 7, H, K + 1, dtype=f64)), ValueError, "k must have shape (B, L, H, K) like q"),
    "v_shape": (_bad(v=torch.zeros(2, 6, H, V, dtype=f64)), ValueError, "v must have shape (B, L, H, V)"),
    "decay_shape": (_bad(log_decay=torch.zeros(2, 7, dtype=f64)), ValueError, "log_decay must be None or have shape"),
    "state_shape": (_bad(initial_state=torch.zeros(2, H, V, K, dtype=f64)), ValueError, "initial_state must have shape (B, H, K, V)"),
    "dtype": (_bad(v=torch.zeros(2, 7, H, V)), TypeError, "v is torch.float32"),
    "int": (_bad(k=torch.zeros(2, 7, H, K, dtype=torch.long)), TypeError, "k must be a real floating-point"),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_bad_input_names_the_problem(case):
    inputs, error, message = BAD[case]
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        linear_attention(**inputs)


@pytest.mark.parametrize("chunk_size", [0, 3, 48, 2.0])
def test_chunk_size_must_be_power_of_two(chunk_size):
    with pytest.raises(ValueError, match="chunk_size must be a power of two"):
        linear_attention(**make_inputs(7, "none"), chunk_size=chunk_size)


def test_unknown_mode():
    with pytest.raises(ValueError, match="no mode 'fast'"):
        linear_attention(**make_inputs(7, "none"), mode="fast")
