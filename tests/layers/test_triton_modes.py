"""The ``triton`` mode through every layer that declares it (ssmkit check's rows: forward, split with
carried state, initial state, masked padding, gradients of input, state and parameters, in float64),
interpreted on the CPU (TRITON_INTERPRET=1 from tests/conftest.py). L = 37 with the chunk fields at 8:
the kernels' chunks of 16 are crossed twice and the last one is partial. The registry-wide test
leaves this mode out only because the interpreter is slow at its lengths."""
from __future__ import annotations

import pytest

import ssmkit
from ssmkit.testing.equivalence import check_mixer

TRITON_MIXERS = [n for n in ssmkit.list_mixers() if "triton" in ssmkit.layers.get_mixer_class(n).modes]


def test_the_families_with_kernels_declare_triton():
    assert {"linear_attention", "retnet", "gla", "hgrn2"} <= set(TRITON_MIXERS)


@pytest.mark.parametrize("name", TRITON_MIXERS)
def test_triton_mode_through_the_layer(name):
    results = check_mixer(name, length=37, modes=("triton",))
    rows = {r.check for r in results if r.check.endswith(":triton")}
    assert rows == {f"{c}:triton" for c in ("mode", "split", "state", "mask", "grad", "packed")}, rows
    failed = [str(r) for r in results if not r.passed or r.allowed]
    assert not failed, "\n".join(failed)
