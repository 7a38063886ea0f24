"""ops.linear_attention's ``triton`` mode (linear_attention/triton.py) against the reference, on the
CPU through the Triton interpreter (tests/conftest.py sets TRITON_INTERPRET=1 before triton is
imported; on a machine with a GPU these run compiled): every kind of decay, odd lengths crossing
several chunks, key and value widths that are not powers of two and that span several blocks, with
and without an initial state, outputs, final state and the gradients of every input; and how the
mode is chosen and refused."""
from __future__ import annotations

import functools

import pytest
import torch

import ssmkit.ops._triton as tr
from ssmkit.ops import linear_attention as la

from .op_helpers import assert_all_close, outputs_and_grads
from .test_linear_attention import KINDS, make_inputs

def run(inputs: dict, mode: str, chunk_size: int = 16):
    return outputs_and_grads(la.linear_attention, inputs, 1, scale=0.5, mode=mode, chunk_size=chunk_size)


@functools.cache
def reference(L: int, kind: str, state: bool):
    return run(make_inputs(L, kind, state=state), "reference")


@pytest.mark.parametrize("state", [True, False], ids=["state", "zero-state"])
@pytest.mark.parametrize("kind", KINDS)
def test_triton_matches_reference_float64(kind, state):
    """L = 37 crosses two chunk boundaries of 16 and ends inside a third; K = 4, V = 5 are masked
    blocks of 16."""
    assert_all_close(run(make_inputs(37, kind, state=state), "triton"), reference(37, kind, state), 1e-12)


@pytest.mark.parametrize("kind", ["scalar", "vector"])
def test_triton_several_key_and_value_blocks(kind):
    """K = 40 and V = 70 span two key blocks (32 with a vector decay, 64 otherwise) and two value
    blocks of 64: the partial sums over blocks (o, dq, dk, dv) and the per-block state are exercised."""
    g = torch.Generator().manual_seed(3)
    B, L, H, K, V = 1, 19, 1, 40, 70
    inputs = {"q": torch.randn(B, L, H, K, generator=g, dtype=torch.float64),
              "k": torch.randn(B, L, H, K, generator=g, dtype=torch.float64),
              "v": torch.randn(B, L, H, V, generator=g, dtype=torch.float64),
              "log_decay": -torch.rand(*((B, L, H) if kind == "scalar" else (B, L, H, K)), generator=g,
                                       dtype=torch.float64),
              "initial_state": torch.randn(B, H, K, V, generator=g, dtype=torch.float64)}
    assert_all_close(run(inputs, "triton"), run(inputs, "reference"), 1e-12)


def test_triton_chunk_of_64_and_length_one():
    """The default chunk (64) at L = 70 (a second, short chunk) and a single step."""
    for L in (70, 1):
        inputs = make_inputs(L, "scalar", seed=L)
        assert_all_close(run(inputs, "triton", chunk_size=64), run(inputs, "reference"), 1e-12)


def test_triton_float32_and_strong_decay():
    """float32 against the float64 reference, with decays down to exp(-50) per step: every exponent
    the kernels form is ≤ 0, so nothing overflows (a kernel that formed exp(-cumsum) would give inf)."""
    for kind in ("scalar", "vector"):
        inputs = make_inputs(37, kind, strength=25.0)
        expected = run(inputs, "reference")
        actual = run({n: None if t is None else t.float() for n, t in inputs.items()}, "triton")
        out, final, grads = actual
        assert all(torch.isfinite(t).all() for t in (out, final, *grads.values()))
        # float32: the reference's own float32 run loses ~1e-6 here; the same bound for both
        assert_all_close((out.double(), final.double(), {n: g.double() for n, g in grads.items()}), expected, 1e-5)


def test_auto_never_picks_triton_on_cpu(monkeypatch):
    x = torch.zeros(1, 3, 1, 4)
    assert la.MODES.unavailable_reason("triton", x) is None  # it can run here, interpreted ...
    assert la.MODES.resolve("auto", x) == "chunked"  # ... but auto passes over it on a CPU
    assert "CUDA tensors only" in la.MODES.auto_skip_reason("triton", x)


def test_triton_without_interpreter_on_cpu_is_refused(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    inputs = make_inputs(5, "none")
    with pytest.raises(RuntimeError, match=r"mode 'triton' cannot run here: .*CUDA tensors, got a CPU tensor"):
        la.linear_attention(**inputs, mode="triton")
    assert la.MODES.resolve("auto", inputs["q"]) == "chunked"


def test_triton_refuses_other_dtypes():
    q = torch.zeros(1, 3, 1, 4, dtype=torch.complex64)
    assert "float32 or float64" in la.MODES.unavailable_reason("triton", q)


def test_triton_not_installed(monkeypatch):
    monkeypatch.setattr(tr, "_installed", lambda: False)
    assert "triton is not installed (pip install 'ssmkit[triton]')" in la.MODES.unavailable_reason("triton")
