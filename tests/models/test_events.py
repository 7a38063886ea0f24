"""arch=event_stream and arch=event_frames: shapes, dt reaching the mixers, binning, bad inputs named."""
from __future__ import annotations

import pytest
import torch

from ssmkit.models import BackboneConfig, DataSpec, create_model
from ssmkit.models.event_frames import bin_events
from ssmkit.models.layouts import EventStream

LAYOUT = EventStream(6, 5, 30.0)
SPEC = DataSpec("classify", 10, None, 4, 0, layout=LAYOUT)


def _events(B: int = 2, L: int = 7) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 5, (B, L), generator=g).float()
    y = torch.randint(0, 6, (B, L), generator=g).float()
    t = torch.sort(torch.rand(B, L, generator=g) * 30, dim=1).values
    p = torch.randint(0, 2, (B, L), generator=g).float() * 2 - 1
    mask = torch.ones(B, L, dtype=torch.bool)
    mask[1, 5:] = False
    dt = torch.diff(t, dim=1, prepend=torch.zeros(B, 1)).clamp_min(1e-3)
    return torch.stack([x, y, t, p], -1), mask, dt


def _model(arch: str = "event_stream", mixer: str = "mamba", **cfg):
    torch.manual_seed(0)
    return create_model(arch, BackboneConfig(d_model=8, n_layers=1, mixer=mixer), SPEC, **cfg)


@pytest.mark.parametrize("arch, mixer, cfg", [("event_stream", "mamba", {}), ("event_stream", "s4d", {"time": "features"}),
                                              ("event_stream", "attention", {"time": "none"}), ("event_frames", "s4d", {}),
                                              ("event_stream", "mamba", {"time": "both"})],
                         ids=["mamba-dt", "s4d-features", "attention-none", "frames", "mamba-both"])
def test_logits_per_stream(arch, mixer, cfg):
    x, mask, dt = _events()
    out = _model(arch, mixer, **cfg)(x, mask=mask, dt=dt)
    assert out.shape == (2, 10) and torch.isfinite(out).all()


def test_the_gaps_reach_the_mixers_as_dt_and_padding_changes_nothing():
    model = _model().double()
    x, mask, dt = _events()
    x, dt = x.double(), dt.double()
    a = model(x, mask=mask, dt=dt)
    assert not torch.allclose(a, model(x, mask=mask, dt=dt * 3))  # the time between events matters
    none = _model(time="none").double()
    assert torch.allclose(none(x, mask=mask, dt=dt), none(x, mask=mask, dt=dt * 3))  # ... unless time=none
    short = model(x[1:, :5], dt=dt[1:, :5])
    assert torch.allclose(a[1:], short, atol=1e-10)  # the padded row equals its real events alone
    both = _model(time="both").double()  # the gaps as dt and the timestamps as features
    assert both.time_proj is not None and not torch.allclose(both(x, mask=mask, dt=dt), both(x, mask=mask, dt=dt * 3))
    features = _model(time="features").double()
    assert torch.allclose(features(x, mask=mask, dt=dt), features(x, mask=mask, dt=dt * 3))  # dt unused there


def test_binning_counts_each_event_in_its_bin_polarity_and_pixel():
    x, mask, _ = _events()
    counts = bin_events(x, mask, LAYOUT, bins=3)
    assert counts.shape == (2, 6, 6, 5) and counts.sum(dim=(1, 2, 3)).tolist() == [7.0, 5.0]
    e = x[0, 0]
    channel = 2 * int(e[2] / 30 * 3) + int(e[3] > 0)
    assert counts[0, channel, int(e[1]), int(e[0])] >= 1


@pytest.mark.parametrize("edit, message", [
    (lambda x: x.__setitem__((0, 3, 2), -1.0), "time order"),
    (lambda x: x.__setitem__((0, 2, 0), 5.0), "integer pixels"),
    (lambda x: x.__setitem__((0, 2, 3), 0.0), "polarity"),
], ids=["negative-gap", "off-sensor", "polarity"])
def test_bad_events_are_named(edit, message):
    x, mask, dt = _events()
    edit(x)
    with pytest.raises(ValueError, match=message):
        _model()(x, mask=mask, dt=dt)


def test_missing_or_negative_gaps_are_refused_when_the_gaps_are_the_step():
    x, mask, dt = _events()
    with pytest.raises(ValueError, match="time='dt' reads the event gaps.*dt=gaps"):
        _model()(x, mask=mask)
    dt[0, 3] = -0.5
    with pytest.raises(ValueError, match="dt must be > 0"):
        _model()(x, mask=mask, dt=dt)


def test_bad_pairings_are_named():
    with pytest.raises(ValueError, match="'time'.*cannot take dt.*arch.time=features"):
        _model(mixer="attention")
    with pytest.raises(ValueError, match="'time'.*'both' gives the event gaps.*cannot take dt"):
        _model(mixer="attention", time="both")
    with pytest.raises(ValueError, match="time='both' reads the event gaps"):
        _model(time="both")(*_events()[:2])
    with pytest.raises(ValueError, match="'time'.*must be one of"):
        _model(time="gaps")
    with pytest.raises(ValueError, match="'event_stream' reads EventStream data"):
        create_model("event_stream", BackboneConfig(d_model=8, n_layers=1, mixer="mamba"),
                     DataSpec("classify", 10, None, 1, 0, (8, 8, 1)))
    with pytest.raises(ValueError, match="'bins'"):
        _model("event_frames", bins=0)
