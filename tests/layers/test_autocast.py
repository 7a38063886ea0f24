"""Every registered mixer under CPU bf16 autocast (``bf16=true`` training): forward and backward run,
outputs and gradients are finite and close to the float32 forward, states stay float32-class and
``step`` works under autocast too. The recurrence / kernel / scan core runs in float32
(``ssmkit.core.precision.float32_core``); only matmul-shaped projections run in bf16.

Tolerances. bf16 keeps 8 significant bits: unit roundoff u = 2^-8 = 3.9e-3. A projection rounds
its input and its output, so a mixer's output carries a few u of error relative to its norm;
measured (D=16, L=33, seed 0): at most 1.1e-2 (hgrn2), most 3e-3..7e-3, and the same at L=2048
(no growth with L: the core accumulates in float32). One step token is noisier: hgrn2's readout
RMS-normalizes o = q S per token, and where that sum cancels (|o| << |q| |S|) the rounding of q
is amplified: 3.9e-2 for seed 0 (1.2e-2 for seed 1; every other family at most 1.1e-2).
OUT_TOL = 5e-2 (~13 u) holds all of these with room. The state is compared elementwise against its largest entry: measured at most 5.8e-3
(~1.5 u: only the inputs of the recurrence are rounded); a core run in bf16 instead gave 2.4e-2
(gla, L=64), so STATE_TOL = 1.5e-2 tells the two apart. Gradients go back through the bf16
projections twice (forward activations and backward products): measured at most 2.2e-2
(x gradient, rwkv6) and 3.8e-2 (parameters, hgrn2, relative to the largest entry); GRAD_TOL = 8e-2.
"""
from __future__ import annotations

import dataclasses

import pytest
import torch

import ssmkit
from ssmkit.testing import rel_err
from ssmkit.core.precision import float32_core, to_float32
from ssmkit.layers.base import _leaves

MIXERS = ssmkit.list_mixers()
OUT_TOL, STATE_TOL, GRAD_TOL = 5e-2, 1.5e-2, 8e-2
STATE_DTYPES = {torch.float32, torch.complex64}


def norm_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """||actual - expected|| / ||expected||: the error relative to the output norm."""
    return ((actual.float() - expected).norm() / expected.norm()).item()


def _run(m, x, w, bf16: bool):
    x = x.clone().requires_grad_(True)
    m.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        y, state = m(x, return_state=True)
    (y.float() * w).sum().backward()
    return y, state, x.grad, [p.grad.clone() for p in m.parameters() if p.grad is not None]


@pytest.mark.parametrize("name", MIXERS)
def test_bf16_autocast_forward_backward_close_to_float32(name):
    torch.manual_seed(0)
    m = ssmkit.create_mixer(name, 16)
    x, w = torch.randn(2, 33, 16), torch.randn(2, 33, 16)
    y32, s32, gx32, gp32 = _run(m, x, w, bf16=False)
    y, s, gx, gp = _run(m, x, w, bf16=True)
    assert y.dtype == torch.bfloat16, "a mixer's output under autocast is in the autocast dtype"
    assert torch.isfinite(y.float()).all() and torch.isfinite(gx).all()
    assert all(torch.isfinite(g).all() for g in gp) and len(gp) == len(gp32)
    assert all(p.dtype == torch.float32 for p in m.parameters())
    err = norm_err(y, y32.detach())
    assert err < OUT_TOL, f"output: {err:.2e}"
    dtypes = {t.dtype for t in _leaves(s)}
    assert dtypes <= STATE_DTYPES, f"state dtypes {dtypes}: a carried state must stay float32-class"
    for a, b in zip(_leaves(s), _leaves(s32)):
        assert rel_err(a, b.detach()) < STATE_TOL
    assert norm_err(gx, gx32) < GRAD_TOL
    for a, b in zip(gp, gp32):
        assert rel_err(a, b) < GRAD_TOL


@pytest.mark.parametrize("name", [n for n in MIXERS if ssmkit.layers.get_mixer_class(n).causal])
def test_bf16_autocast_step_and_carried_state(name):
    torch.manual_seed(0)
    m = ssmkit.create_mixer(name, 16)
    x = torch.randn(2, 9, 16)
    with torch.no_grad():
        _, s32 = m(x[:, :8], return_state=True)
        y32, n32 = m.step(x[:, 8], s32)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            _, s = m(x[:, :8], return_state=True)
            y, n = m.step(x[:, 8], s)
            y_split = m(x[:, 8:], s)  # a forward continuing the carried state
    assert y.dtype == torch.bfloat16 and {t.dtype for t in _leaves(n)} <= STATE_DTYPES
    assert norm_err(y, y32) < OUT_TOL
    assert norm_err(y_split[:, 0], y32) < OUT_TOL
    for a, b in zip(_leaves(n), _leaves(n32)):
        assert rel_err(a, b) < STATE_TOL


def test_float32_core_casts_and_disables_autocast_only_under_autocast():
    seen = {}

    @float32_core
    def core(a, pair, scale=None):
        seen["dtypes"] = (a.dtype, pair[0].dtype, pair[1].dtype, scale.dtype)
        return a @ a.T  # autocast would give bf16 here

    a = torch.randn(3, 3)
    pair = (torch.randn(2).bfloat16(), torch.randn(2, dtype=torch.float64))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = core(a.bfloat16(), pair, scale=torch.ones(1, dtype=torch.bfloat16))
    assert out.dtype == torch.float32
    assert seen["dtypes"] == (torch.float32, torch.float32, torch.float64, torch.float32)
    # Outside autocast nothing is cast: explicit low precision stays what the caller gave.
    assert core(a.bfloat16(), pair, scale=torch.ones(1)).dtype == torch.bfloat16
    assert seen["dtypes"][:2] == (torch.bfloat16, torch.bfloat16)


def test_to_float32_walks_containers():
    @dataclasses.dataclass
    class S:
        h: torch.Tensor
        n: int = 3

    out = to_float32({"s": S(torch.zeros(2, dtype=torch.bfloat16)), "c": [torch.zeros(1, dtype=torch.complex64)]})
    assert out["s"].h.dtype == torch.float32 and out["s"].n == 3
    assert out["c"][0].dtype == torch.complex64


def test_ops_keep_strict_dtype_checks_outside_autocast():
    from ssmkit.ops.short_conv import short_conv

    with pytest.raises(TypeError, match="weight is torch.float32"):
        short_conv(torch.randn(1, 4, 2, dtype=torch.bfloat16), torch.randn(2, 3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, state = short_conv(torch.randn(1, 4, 2, dtype=torch.bfloat16), torch.randn(2, 3))
    assert y.dtype == state.dtype == torch.float32
