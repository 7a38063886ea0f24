"""ops.ssd's ``triton`` mode (ssd/triton.py: the chunked linear-attention kernels with one decay per
head, B and C read per group) against the reference, interpreted on the CPU (TRITON_INTERPRET=1 from
tests/conftest.py): odd lengths crossing several chunks, grouped B/C, every kind of D, with and
without an initial state; outputs, final state and every gradient."""
from __future__ import annotations

import pytest
import torch

from ssmkit.ops import ssd as ssd_op

from .test_ssd import assert_all_close, make_inputs, reference_with_grads, run_with_grads


@pytest.mark.parametrize("d_kind", ["H", "HP", "none"], ids=lambda d: f"D_{d}")
@pytest.mark.parametrize("H,G", [(1, 1), (4, 2)], ids=lambda v: str(v))
def test_triton_matches_reference_float64(H, G, d_kind):
    """L = 53 crosses 3 chunks of 16 and ends in a partial one."""
    assert_all_close(run_with_grads(make_inputs(53, H, G, d_kind), "triton", chunk_size=16),
                     reference_with_grads(53, H, G, d_kind), 1e-12)


def test_triton_chunk_64_zero_state_and_one_step():
    for L, state in ((70, False), (1, True)):
        inputs = make_inputs(L, 4, 1, state=state, seed=L)
        expected = run_with_grads(inputs, "reference")
        assert_all_close(run_with_grads(inputs, "triton", chunk_size=64), expected, 1e-12)


def test_triton_float32_long_decay():
    """float32 with decays to exp(-150) over a chunk: no overflow, the float32 reference's accuracy."""
    inputs = make_inputs(37, 4, 2)
    inputs["A"] = inputs["A"] * 5.0
    expected = run_with_grads(inputs, "reference")
    out, final, grads = run_with_grads({n: None if t is None else t.float() for n, t in inputs.items()},
                                       "triton", chunk_size=16)
    assert all(torch.isfinite(t).all() for t in (out, final, *grads.values()))
    assert_all_close((out.double(), final.double(), {n: g.double() for n, g in grads.items()}), expected, 1e-5)


def test_auto_and_refusal(monkeypatch):
    x = make_inputs(5, 2, 1)["x"]
    assert ssd_op.MODES.resolve("auto", x) == "chunked"
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="ssd: mode 'triton' cannot run here"):
        ssd_op.ssd(**make_inputs(5, 2, 1), mode="triton")
