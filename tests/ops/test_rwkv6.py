"""ops.rwkv6: the reference vs the closed form, chunked vs reference (outputs, final state,
gradients of r, k, v, log_w, u and the initial state), stability under strong decays."""
from __future__ import annotations

import functools
import re

import pytest
import torch
from conftest import assert_close_rel

from ssmkit.ops.rwkv6 import exclusive_dyadic_scores, rwkv6

from .op_helpers import assert_all_close, outputs_and_grads

K, V, BATCH = 5, 3, 2
ARGS = ("r", "k", "v", "log_w", "u", "initial_state")


def make_inputs(L: int, H: int = 3, dtype=torch.float64, seed: int = 0, state: bool = True) -> dict:
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    # log w = -exp(x) as in the layer, x spread so that some channels forget within a few steps
    x = randn(BATCH, L, H, K) + torch.linspace(-4.0, 1.0, K, dtype=torch.float64)
    inputs = {
        "r": randn(BATCH, L, H, K),
        "k": randn(BATCH, L, H, K),
        "v": randn(BATCH, L, H, V),
        "log_w": -torch.exp(x),
        "u": randn(H, K),
        "initial_state": randn(BATCH, H, K, V) if state else None,
    }
    return {n: None if t is None else t.to(dtype) for n, t in inputs.items()}


def run_with_grads(inputs: dict, mode: str, chunk_size: int = 4, seed: int = 1):
    """(o, final_state, {name: grad}) of a fixed random projection of both outputs."""
    return outputs_and_grads(rwkv6, inputs, seed, mode=mode, chunk_size=chunk_size)


@functools.cache
def reference_with_grads(L: int, H: int):
    return run_with_grads(make_inputs(L, H), "reference")


def test_reference_is_the_closed_form():
    """o_t = Σ_{s<t} Σ_k r_tk k_sk Π_{s<i<t} w_ik v_s + (r_t ∘ u ∘ k_t)·1 v_t + (r_t ∘ Π_{i<t} w_i)ᵀ S_0:
    the output reads the state before step t, the current token only through the bonus u."""
    L = 8
    inputs = make_inputs(L, H=2)
    o, final = rwkv6(**inputs, mode="reference")
    r, k, v, lw, u, s0 = (inputs[n] for n in ARGS)
    w = torch.exp(lw)
    for t in range(L):
        want = ((r[:, t] * u * k[:, t]).sum(-1, keepdim=True)) * v[:, t]
        want = want + torch.einsum("bhk,bhkv->bhv", r[:, t] * w[:, :t].prod(1), s0)
        for s in range(t):
            decay = w[:, s + 1 : t].prod(1)  # empty product = 1 for s = t - 1
            want = want + (r[:, t] * k[:, s] * decay).sum(-1, keepdim=True) * v[:, s]
        assert_close_rel(o[:, t], want, 1e-13, f"o[:, {t}]")
    S = w.prod(1)[..., None] * s0
    for s in range(L):
        S = S + (k[:, s] * w[:, s + 1 :].prod(1))[..., None] * v[:, s, :, None, :]
    assert_close_rel(final, S, 1e-13, "final_state")


def test_exclusive_dyadic_scores_definition():
    g = torch.Generator().manual_seed(3)
    r, k = torch.randn(2, 8, 4, generator=g, dtype=torch.float64).unbind(0)
    w = torch.rand(8, 4, generator=g, dtype=torch.float64)
    A, r_dec, k_dec, total = exclusive_dyadic_scores(r, k, w)
    for t in range(8):
        for s in range(8):
            want = (r[t] * k[s] * w[s + 1 : t].prod(0)).sum() if s < t else torch.zeros(())
            assert_close_rel(A[t, s], want, 1e-14, f"A[{t}, {s}]")
        assert_close_rel(r_dec[t], r[t] * w[:t].prod(0), 1e-14, f"r_dec[{t}]")
        assert_close_rel(k_dec[t], k[t] * w[t + 1 :].prod(0), 1e-14, f"k_dec[{t}]")
    assert_close_rel(total[0], w.prod(0), 1e-14, "total")


@pytest.mark.parametrize("L", [1, 2, 7, 13, 64, 67], ids=lambda v: f"L{v}")
@pytest.mark.parametrize("H", [1, 3], ids=lambda v: f"H{v}")
def test_chunked_matches_reference_float64(H, L):
    actual = run_with_grads(make_inputs(L, H), "chunked", chunk_size=16)
    assert_all_close(actual, reference_with_grads(L, H), 1e-10)


@pytest.mark.parametrize("chunk_size", [1, 2, 5, 13, 64])
def test_chunked_any_chunk_size(chunk_size):
    """Chunk sizes round down to a power of two; every one gives the reference's result."""
    expected = reference_with_grads(13, 3)
    assert_all_close(run_with_grads(make_inputs(13), "chunked", chunk_size=chunk_size), expected, 1e-10)


@pytest.mark.parametrize("chunks_per_segment", [1, 3])
def test_long_input_in_segments(monkeypatch, chunks_per_segment):
    """Long inputs run in segments of whole chunks with the state carried (and split, not sliced,
    so that gradients are gathered once): same outputs, state and gradients."""
    import ssmkit.ops.rwkv6.chunked as chunked

    per_chunk = BATCH * 3 * 4 * max(4, K + V)  # B H T max(T, K + V) at chunk_size 4
    monkeypatch.setattr(chunked, "SEGMENT_ELEMENTS", chunks_per_segment * per_chunk)
    actual = run_with_grads(make_inputs(37), "chunked", chunk_size=4)
    assert_all_close(actual, reference_with_grads(37, 3), 1e-10)


def test_zero_initial_state_is_none():
    inputs = make_inputs(13, state=False)
    o_ref, s_ref = rwkv6(**inputs, mode="reference")
    o, s = rwkv6(**inputs, mode="chunked", chunk_size=4)
    assert_close_rel(o, o_ref, 1e-10, "o")
    assert_close_rel(s, s_ref, 1e-10, "final_state")
    zeros = {**inputs, "initial_state": torch.zeros(BATCH, 3, K, V, dtype=torch.float64)}
    assert torch.equal(rwkv6(**zeros, mode="chunked", chunk_size=4)[0], o)


@pytest.mark.parametrize("L", [7, 70], ids=lambda v: f"L{v}")
def test_chunked_float32_matches_float64_reference(L):
    inputs64 = make_inputs(L)
    inputs32 = {n: None if t is None else t.float() for n, t in inputs64.items()}
    expected = run_with_grads(inputs64, "reference")
    assert_all_close(run_with_grads(inputs32, "chunked", chunk_size=32), expected, 1e-5, 1e-4)


def test_strong_decay_stays_finite_float32():
    """log w down to -200 per step on some channels: a factorization through exp(-cumsum) would
    overflow float32 within one step; the dyadic form only multiplies decays <= 1."""
    inputs64 = make_inputs(64)
    inputs64["log_w"][..., :2] = -200.0
    inputs64["log_w"][:, ::5, :, 2] = -90.0
    inputs32 = {n: t.float() for n, t in inputs64.items()}
    actual = run_with_grads(inputs32, "chunked", chunk_size=32)
    for name, t in [("o", actual[0]), ("final", actual[1]), *actual[2].items()]:
        assert torch.isfinite(t).all(), f"{name} has non-finite values"
    assert_all_close(actual, run_with_grads(inputs64, "reference"), 1e-5, 1e-4)


@pytest.mark.parametrize("mode", ["reference", "chunked"])
def test_zero_log_w_zero_key_step_is_identity(mode):
    """log w = 0 and k = 0 leave the state unchanged: the layer masks padded steps that way."""
    inputs = make_inputs(20)
    keep = torch.ones(20, dtype=torch.bool)
    keep[[0, 3, 4, 11, 19]] = False
    m = keep[None, :, None, None]
    padded = {**inputs, "k": inputs["k"] * m, "log_w": inputs["log_w"] * m}
    o_pad, s_pad = rwkv6(**padded, mode=mode, chunk_size=4)
    short = {n: t[:, keep] if n in ("r", "k", "v", "log_w") else t for n, t in inputs.items()}
    o_short, s_short = rwkv6(**short, mode=mode, chunk_size=4)
    assert_close_rel(s_pad, s_short, 1e-12, "final_state")
    assert_close_rel(o_pad[:, keep], o_short, 1e-12, "o at kept steps")


def test_split_sequence_with_carried_state():
    inputs = make_inputs(41)
    seq = ("r", "k", "v", "log_w")
    o, s = rwkv6(**inputs, chunk_size=8)
    o1, s1 = rwkv6(**{n: t[:, :17] if n in seq else t for n, t in inputs.items()}, chunk_size=8)
    rest = {n: t[:, 17:] if n in seq else t for n, t in inputs.items()}
    o2, s2 = rwkv6(**{**rest, "initial_state": s1}, chunk_size=8)
    assert_close_rel(torch.cat([o1, o2], dim=1), o, 1e-12, "o")
    assert_close_rel(s2, s, 1e-12, "final_state")


def test_auto_is_chunked():
    inputs = make_inputs(13)
    o_auto, s_auto = rwkv6(**inputs, chunk_size=4)
    o, s = rwkv6(**inputs, mode="chunked", chunk_size=4)
    assert torch.equal(o_auto, o) and torch.equal(s_auto, s)


def test_chunked_gradcheck():
    inputs = make_inputs(5, H=1)
    inputs = {n: (t if n == "u" else t[:1]).clone().requires_grad_(True) for n, t in inputs.items()}

    def fn(*args):
        return rwkv6(*args, mode="chunked", chunk_size=2)

    assert torch.autograd.gradcheck(fn, [inputs[n] for n in ARGS], fast_mode=True)


def _bad(**changes):
    inputs = make_inputs(7)
    inputs.update(changes)
    return inputs


f64 = torch.float64
BAD = {
    "k_rank": (_bad(k=torch.zeros(2, 7, 15, dtype=f64)), "k must have shape (B, L, H, K)"),
    "empty": ({n: t[:, :0] if n in ("r", "k", "v", "log_w") else t for n, t in make_inputs(7).items()},
              "empty sequence"),
    "r_shape": (_bad(r=torch.zeros(2, 7, 3, K + 1, dtype=f64)), "r must have shape (B, L, H, K)"),
    "log_w_shape": (_bad(log_w=torch.zeros(2, 7, 3, dtype=f64)), "log_w must have shape (B, L, H, K)"),
    "v_shape": (_bad(v=torch.zeros(2, 6, 3, V, dtype=f64)), "v must have shape (B, L, H, V)"),
    "u_shape": (_bad(u=torch.zeros(K, dtype=f64)), "u must have shape (H, K)"),
    "state_shape": (_bad(initial_state=torch.zeros(2, 3, V, K, dtype=f64)),
                    "initial_state must have shape (B, H, K, V)"),
    "dtype_mismatch": (_bad(u=torch.ones(3, K)), "u is torch.float32"),
    "integer": (_bad(v=torch.ones(2, 7, 3, V, dtype=torch.long)), "v must be a real floating-point"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_names_the_argument(case):
    inputs, message = BAD[case]
    with pytest.raises((ValueError, TypeError), match=re.escape(message)):
        rwkv6(**inputs)


def test_bad_mode_and_chunk_size():
    with pytest.raises(ValueError, match="rwkv6 has no mode 'fft'"):
        rwkv6(**make_inputs(7), mode="fft")
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        rwkv6(**make_inputs(7), chunk_size=0)
