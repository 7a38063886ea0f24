"""Backbone / SequenceModel pass per-token time deltas dt to every mixer (docs/irregular.md)."""
import pytest
import torch

from conftest import assert_close_rel
from ssmkit.models import Backbone, BackboneConfig
from ssmkit.models.sequence_model import SequenceModel


def _stack(mixer: str) -> Backbone:
    torch.manual_seed(0)
    return Backbone(BackboneConfig(d_model=8, n_layers=3, mixer=mixer)).double().eval()


def test_dt_reaches_every_layer_in_forward_and_step():
    bb = _stack("s4d,lru,mamba")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 7, 8, generator=g, dtype=torch.float64)
    dt = torch.exp(torch.randn(2, 7, generator=g, dtype=torch.float64))
    y, final = bb(x, dt=dt, return_state=True)
    assert_close_rel(bb(x, dt=torch.ones_like(dt)), bb(x), 1e-10, "dt = 1")
    # each layer must see dt: changing dt only where one layer's output is read still changes y
    assert (y - bb(x)).abs().max() > 1e-3
    state, ys = bb.init_state(2, dtype=torch.float64), []
    for t in range(7):
        y_t, state = bb.step(x[:, t], state, dt=dt[:, t])
        ys.append(y_t)
    assert_close_rel(torch.stack(ys, 1), y, 1e-10, "step with dt")
    # layer by layer by hand: every block called with dt
    h = x
    for block in bb.blocks:
        h, _ = block(h, None, None, dt)
    assert_close_rel(bb.norm(h), y, 1e-14, "blocks with dt")


def test_stack_with_a_layer_that_cannot_take_dt_names_it():
    bb = _stack("s4d,retnet,s5")
    x = torch.randn(1, 4, 8, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"layer 1 \(retnet\) cannot take it; mixers that can: \[.*'s4d'"):
        bb(x, dt=torch.ones(1, 4, dtype=torch.float64))
    bb(x)  # without dt the stack runs


def test_sequence_model_forwards_dt_with_mask_and_state():
    torch.manual_seed(0)
    m = SequenceModel(BackboneConfig(d_model=8, n_layers=2, mixer="s5"), "tag", n_out=3, d_input=2).double()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 9, 2, generator=g, dtype=torch.float64)
    dt = torch.exp(torch.randn(2, 9, generator=g, dtype=torch.float64))
    full = m(x, dt=dt)
    a, s = m(x[:, :4], dt=dt[:, :4], return_state=True)
    b = m(x[:, 4:], dt=dt[:, 4:], state=s)
    assert_close_rel(torch.cat([a, b], 1), full, 1e-12, "split with dt")
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[1, 6:] = False
    out = m(x, mask=mask, dt=dt)
    assert_close_rel(out[1, :6], m(x[1:, :6], dt=dt[1:, :6])[0], 1e-12, "masked with dt")


def test_the_stack_checks_its_input_once_and_its_layers_never():
    """One NaN/Inf check per model call, at the backbone's input, opt-out; none per layer."""
    bb = _stack("s4d,lru,mamba")
    assert not any(b.mixer.check_finite for b in bb.blocks)
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    x[1, 3, 0] = float("nan")
    with pytest.raises(ValueError, match=r"the backbone's input x \(B, L, D\) contains NaN or Inf"):
        bb(x)
    unchecked = Backbone(BackboneConfig(d_model=8, n_layers=3, mixer="s4d,lru,mamba", check_finite=False)).double()
    assert torch.isnan(unchecked(x)[1]).any() and not torch.isnan(unchecked(x)[0]).any()
