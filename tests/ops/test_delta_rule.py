"""ops.delta_rule: the reference vs the papers' equations, chunked vs reference (outputs, final
state, gradients of every input incl. beta, log_alpha and the initial state)."""
from __future__ import annotations

import functools
import re

import pytest
import torch
from conftest import assert_close_rel

from ssmkit.ops.delta_rule import delta_rule

from .op_helpers import assert_all_close, outputs_and_grads

K, V, BATCH = 5, 3, 2
ARGS = ("q", "k", "v", "beta", "log_alpha", "initial_state")


def make_inputs(L: int, H: int = 3, gated: bool = True, dtype=torch.float64, seed: int = 0,
                state: bool = True) -> dict:
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    def rand(*shape):
        return torch.rand(*shape, generator=g, dtype=torch.float64)

    k = randn(BATCH, L, H, K)
    inputs = {
        "q": randn(BATCH, L, H, K),
        "k": k / k.norm(dim=-1, keepdim=True),  # the layers L2-normalize keys
        "v": randn(BATCH, L, H, V),
        "beta": rand(BATCH, L, H),
        # a spread of decays, some heads forgetting within a few steps
        "log_alpha": -rand(BATCH, L, H) * torch.linspace(0.05, 3.0, H, dtype=torch.float64)
        if gated else None,
        "initial_state": randn(BATCH, H, K, V) if state else None,
    }
    return {n: None if t is None else t.to(dtype) for n, t in inputs.items()}


def run_with_grads(inputs: dict, mode: str, chunk_size: int = 4, scale: float = 0.7, seed: int = 1):
    """(o, final_state, {name: grad}) of a fixed random projection of both outputs."""
    return outputs_and_grads(delta_rule, inputs, seed, scale=scale, mode=mode, chunk_size=chunk_size)


@functools.cache
def reference_with_grads(L: int, H: int, gated: bool):
    return run_with_grads(make_inputs(L, H, gated), "reference")


def test_reference_is_the_papers_recurrence():
    """S_t = α_t S_{t-1} (I - β_t k_t k_tᵀ) + β_t v_t k_tᵀ, o_t = S_t q_t with explicit (V, K)
    matrices; the op keeps Sᵀ."""
    inputs = make_inputs(9, H=2)
    o, final = delta_rule(**inputs, scale=0.7, mode="reference")
    q, k, v, beta, la, s0 = (inputs[n] for n in ARGS)
    for b in range(BATCH):
        for h in range(2):
            S = s0[b, h].T.clone()  # (V, K)
            for t in range(9):
                kt, bt = k[b, t, h], beta[b, t, h]
                S = torch.exp(la[b, t, h]) * S @ (torch.eye(K, dtype=S.dtype) - bt * torch.outer(kt, kt))
                S = S + bt * torch.outer(v[b, t, h], kt)
                assert_close_rel(o[b, t, h], S @ (0.7 * q[b, t, h]), 1e-13, f"o[{b}, {t}, {h}]")
            assert_close_rel(final[b, h], S.T, 1e-13, f"final[{b}, {h}]")


def test_unit_beta_stores_the_value_exactly():
    """The delta rule's defining property: with β = 1 and a unit key, reading k back gives v."""
    inputs = make_inputs(6, gated=False)
    inputs["beta"] = torch.ones_like(inputs["beta"])
    for mode in ("reference", "chunked"):
        o, final = delta_rule(**{**inputs, "q": inputs["k"]}, mode=mode, chunk_size=4)
        assert_close_rel(o, inputs["v"], 1e-12, f"{mode}: S_t k_t")
        last_k = inputs["k"][:, -1]
        read = torch.einsum("bhk,bhkv->bhv", last_k, final)
        assert_close_rel(read, inputs["v"][:, -1], 1e-12, f"{mode}: final state read at k_L")


@pytest.mark.parametrize("gated", [False, True], ids=["plain", "gated"])
@pytest.mark.parametrize("L", [1, 7, 13, 64, 67], ids=lambda v: f"L{v}")
@pytest.mark.parametrize("H", [1, 3], ids=lambda v: f"H{v}")
def test_chunked_matches_reference_float64(H, L, gated):
    actual = run_with_grads(make_inputs(L, H, gated), "chunked", chunk_size=16)
    assert_all_close(actual, reference_with_grads(L, H, gated), 1e-10)


@pytest.mark.parametrize("chunk_size", [1, 2, 5, 13, 64])
def test_chunked_any_chunk_size(chunk_size):
    expected = reference_with_grads(13, 3, True)
    assert_all_close(run_with_grads(make_inputs(13), "chunked", chunk_size=chunk_size), expected, 1e-10)


@pytest.mark.parametrize("chunks_per_segment", [1, 3])
def test_long_input_in_segments(monkeypatch, chunks_per_segment):
    """Long inputs run in segments of whole chunks with the state carried (and split, not sliced,
    so that gradients are gathered once): same outputs, state and gradients."""
    import ssmkit.ops.delta_rule.chunked as chunked

    per_chunk = BATCH * 3 * 4 * max(4, K + V)  # B H T max(T, K + V) at chunk_size 4
    monkeypatch.setattr(chunked, "SEGMENT_ELEMENTS", chunks_per_segment * per_chunk)
    for gated in (False, True):
        actual = run_with_grads(make_inputs(37, gated=gated), "chunked", chunk_size=4)
        assert_all_close(actual, reference_with_grads(37, 3, gated), 1e-10)


def test_zero_initial_state_is_none():
    inputs = make_inputs(13, state=False)
    o_ref, s_ref = delta_rule(**inputs, mode="reference")
    o, s = delta_rule(**inputs, mode="chunked", chunk_size=4)
    assert_close_rel(o, o_ref, 1e-10, "o")
    assert_close_rel(s, s_ref, 1e-10, "final_state")
    zeros = {**inputs, "initial_state": torch.zeros(BATCH, 3, K, V, dtype=torch.float64)}
    assert torch.equal(delta_rule(**zeros, mode="chunked", chunk_size=4)[0], o)


@pytest.mark.parametrize("L", [7, 70], ids=lambda v: f"L{v}")
def test_chunked_float32_matches_float64_reference(L):
    """float32 chunked vs the float64 reference on the same values: rounding only."""
    inputs64 = make_inputs(L)
    inputs32 = {n: None if t is None else t.float() for n, t in inputs64.items()}
    expected = run_with_grads(inputs64, "reference")
    assert_all_close(run_with_grads(inputs32, "chunked", chunk_size=32), expected, 1e-5, 1e-4)


def test_strong_decay_stays_finite_float32():
    """log α = -80 on most steps: 1/γ would overflow float32 within a chunk; no mode forms it.
    The decays to the chunk end are summed directly: as differences of prefix sums (~ -1700)
    their float32 exponents would be off by ~1e-4 and the final state with them."""
    inputs64 = make_inputs(64)
    inputs64["log_alpha"] = torch.full_like(inputs64["log_alpha"], -80.0)
    inputs64["log_alpha"][:, ::3] = -1e-3
    inputs32 = {n: t.float() for n, t in inputs64.items()}
    actual = run_with_grads(inputs32, "chunked", chunk_size=32)
    for name, t in [("o", actual[0]), ("final", actual[1]), *actual[2].items()]:
        assert torch.isfinite(t).all(), f"{name} has non-finite values"
    assert_all_close(actual, run_with_grads(inputs64, "reference"), 1e-5, 1e-4)


@pytest.mark.parametrize("mode", ["reference", "chunked"])
def test_zero_beta_zero_log_alpha_step_is_identity(mode):
    """β = 0 and log α = 0 leave the state unchanged: the layers mask padded steps that way."""
    inputs = make_inputs(20)
    keep = torch.ones(20, dtype=torch.bool)
    keep[[0, 3, 4, 11, 19]] = False
    padded = {**inputs, "beta": inputs["beta"] * keep[None, :, None],
              "log_alpha": inputs["log_alpha"] * keep[None, :, None]}
    o_pad, s_pad = delta_rule(**padded, mode=mode, chunk_size=4)
    short = {n: t[:, keep] if n != "initial_state" else t for n, t in inputs.items()}
    o_short, s_short = delta_rule(**short, mode=mode, chunk_size=4)
    assert_close_rel(s_pad, s_short, 1e-12, "final_state")
    assert_close_rel(o_pad[:, keep], o_short, 1e-12, "o at kept steps")


def test_split_sequence_with_carried_state():
    inputs = make_inputs(41)
    o, s = delta_rule(**inputs, chunk_size=8)
    first = {n: t[:, :17] if n != "initial_state" else t for n, t in inputs.items()}
    o1, s1 = delta_rule(**first, chunk_size=8)
    rest = {n: t[:, 17:] if n != "initial_state" else s1 for n, t in inputs.items()}
    o2, s2 = delta_rule(**rest, chunk_size=8)
    assert_close_rel(torch.cat([o1, o2], dim=1), o, 1e-12, "o")
    assert_close_rel(s2, s, 1e-12, "final_state")


def test_auto_is_chunked():
    inputs = make_inputs(13)
    o_auto, s_auto = delta_rule(**inputs, chunk_size=4)
    o, s = delta_rule(**inputs, mode="chunked", chunk_size=4)
    assert torch.equal(o_auto, o) and torch.equal(s_auto, s)


@pytest.mark.parametrize("gated", [False, True], ids=["plain", "gated"])
def test_chunked_gradcheck(gated):
    inputs = make_inputs(4, H=1, gated=gated)
    inputs = {n: None if t is None else t[:1].clone().requires_grad_(True) for n, t in inputs.items()}
    names = [n for n in ARGS if inputs[n] is not None]

    def fn(*args):
        return delta_rule(**{**inputs, **dict(zip(names, args))}, scale=0.7, mode="chunked", chunk_size=2)

    assert torch.autograd.gradcheck(fn, [inputs[n] for n in names], fast_mode=True)


def _bad(**changes):
    inputs = make_inputs(7)
    inputs.update(changes)
    return inputs


f64 = torch.float64
BAD = {
    "k_rank": (_bad(k=torch.zeros(2, 7, 15, dtype=f64)), "k must have shape (B, L, H, K)"),
    "empty": ({n: t[:, :0] if n != "initial_state" else t for n, t in make_inputs(7).items()},
              "empty sequence"),
    "q_shape": (_bad(q=torch.zeros(2, 7, 3, K + 1, dtype=f64)), "q must have shape (B, L, H, K)"),
    "v_shape": (_bad(v=torch.zeros(2, 6, 3, V, dtype=f64)), "v must have shape (B, L, H, V)"),
    "beta_shape": (_bad(beta=torch.zeros(2, 7, 3, 1, dtype=f64)), "beta must have shape (B, L, H)"),
    "log_alpha_shape": (_bad(log_alpha=torch.zeros(2, 7, dtype=f64)), "log_alpha must have shape"),
    "state_shape": (_bad(initial_state=torch.zeros(2, 3, V, K, dtype=f64)),
                    "initial_state must have shape (B, H, K, V)"),
    "dtype_mismatch": (_bad(beta=torch.ones(2, 7, 3)), "beta is torch.float32"),
    "integer": (_bad(v=torch.ones(2, 7, 3, V, dtype=torch.long)), "v must be a real floating-point"),
    "not_tensor": (_bad(q=[[0.0]]), "q must be a torch.Tensor"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_names_the_argument(case):
    inputs, message = BAD[case]
    with pytest.raises((ValueError, TypeError), match=re.escape(message)):
        delta_rule(**inputs)


def test_bad_mode_and_chunk_size():
    with pytest.raises(ValueError, match="delta_rule has no mode 'fft'"):
        delta_rule(**make_inputs(7), mode="fft")
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        delta_rule(**make_inputs(7), chunk_size=0)
