"""What the base mixer owns for every family: init_state's device and dtype follow the parameters, the
padding helpers of ForwardCall, and the non-finite input check (at forward for a bare mixer, never
in step, off inside a stack that checks its own input)."""
from __future__ import annotations

import pytest
import torch

import ssmkit
from ssmkit.layers.base import _leaves, skip_finite_checks
from ssmkit.layers.call import ForwardCall

MIXERS = ssmkit.list_mixers()
CAUSAL = [n for n in MIXERS if ssmkit.layers.get_mixer_class(n).causal]


def _real_dtype(t: torch.Tensor) -> torch.dtype:
    return {torch.complex64: torch.float32, torch.complex128: torch.float64}.get(t.dtype, t.dtype)


@pytest.mark.parametrize("name", MIXERS)
def test_init_state_follows_the_parameters(name):
    m = ssmkit.create_mixer(name, 8).double()
    assert {_real_dtype(t) for t in _leaves(m.init_state(2))} == {torch.float64}
    assert {_real_dtype(t) for t in _leaves(m.init_state(2, dtype=torch.float32))} == {torch.float32}
    m = m.to("meta")  # a device other than the CPU without an accelerator
    assert {t.device.type for t in _leaves(m.init_state(2))} == {"meta"}
    assert {t.device.type for t in _leaves(m.init_state(2, device="cpu"))} == {"cpu"}


def test_forward_call_pads():
    call = ForwardCall("chunked", lengths=torch.tensor([3, 1]))
    t = torch.arange(1.0, 9.0).view(2, 4, 1)
    assert call.zero_pads(t)[..., 0].tolist() == [[1, 2, 3, 0], [5, 0, 0, 0]]
    assert call.one_pads(t)[..., 0].tolist() == [[1, 2, 3, 1], [5, 1, 1, 1]]
    assert call.fill_pads(t, -float("inf"))[1, 1, 0] == -float("inf")
    assert call.zero_pads(torch.ones(2, 4, 3, 2)).sum() == 4 * 3 * 2  # trailing dims broadcast
    later = call.after(2)
    assert later.lengths.tolist() == [1, 0] and later.mode == "chunked"
    assert later.zero_pads(torch.ones(2, 2))[..., None].sum() == 1
    full = ForwardCall("chunked")
    assert full.zero_pads(t) is t and full.real(4) is None and full.after(3) is full


@pytest.mark.parametrize("name", CAUSAL)
def test_step_never_checks_values(name):
    """No host sync per generated token: a NaN input reaches the state instead of raising."""
    m = ssmkit.create_mixer(name, 8)
    y, _ = m.step(torch.full((2, 8), float("nan")), m.init_state(2))
    assert y.shape == (2, 8)


def test_a_bare_mixer_checks_its_input_and_a_stack_turns_that_off():
    m = ssmkit.create_mixer("s4d", 8)
    x = torch.randn(1, 5, 8)
    x[0, 2, 3] = float("inf")
    with pytest.raises(ValueError, match="x contains NaN or Inf"):
        m(x)
    skip_finite_checks(torch.nn.Sequential(m))
    assert not m.check_finite
    assert m(x).shape == x.shape  # unchecked: the caller checked (or chose not to)
