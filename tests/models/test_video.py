"""arch=video: shapes per order and scan, causality in time, the residual head, bad settings named;
arch=video_conv (the CNN baseline): its window of frames, persistence at the start, bad settings named."""
from __future__ import annotations

import pytest
import torch

from ssmkit.models import BackboneConfig, DataSpec, create_model
from ssmkit.models.layouts import VideoFrames
from ssmkit.models.video_conv import frame_windows

SPEC = DataSpec("predict", 64, None, 64, 0, layout=VideoFrames(8, 8))


def _model(mixer: str = "s4d", **cfg):
    torch.manual_seed(0)
    return create_model("video", BackboneConfig(d_model=8, n_layers=1, mixer=mixer), SPEC, patch=4, **cfg)


@pytest.mark.parametrize("mixer, cfg", [("s4d", {}), ("mamba", {"scan": "cross"}), ("attention", {}),
                                        ("s4d", {"order": "joint"})], ids=["s4d-vim", "mamba-cross", "attention", "joint"])
def test_next_frames_for_every_order_and_scan(mixer, cfg):
    model = _model(mixer, **cfg)
    x = torch.rand(2, 5, 64)
    assert model(x).shape == (2, 5, 64)
    assert len(model.backbone.blocks) == (1 if cfg.get("order") == "joint" else 2)


@pytest.mark.parametrize("order", ["factorized", "joint"])
def test_frame_t_never_sees_a_later_frame(order):
    model = _model(order=order).double()
    x = torch.rand(1, 5, 64, dtype=torch.float64)
    x2 = x.clone()
    x2[:, 3:] += 1.0
    y, y2 = model(x), model(x2)
    assert torch.allclose(y[:, :3], y2[:, :3], atol=1e-10)
    assert (y[:, 3:] - y2[:, 3:]).abs().max() > 1e-3


def test_the_residual_head_predicts_the_change_from_the_current_frame():
    plain, res = _model(residual=False).double(), _model().double()
    x = torch.rand(2, 3, 64, dtype=torch.float64)
    assert torch.equal(res(x), x)  # untrained: copies the last frame
    res.load_state_dict(plain.state_dict())
    assert torch.allclose(res(x), x + plain(x))


@pytest.mark.parametrize("spec, kw, message", [
    (SPEC, {"patch": 3}, "'patch': 3 does not divide the 8 x 8 frame"),
    (SPEC, {"mixer": "s4nd"}, "'mixer'"),
    (SPEC, {"order": "spiral"}, "'order'"),
    (DataSpec("predict", 64, None, 64, 0), {}, "'video' reads VideoFrames data"),
], ids=["patch", "s4nd", "order", "not-video"])
def test_bad_settings_are_named(spec, kw, message):
    mixer = kw.pop("mixer", "s4d")
    with pytest.raises(ValueError, match=message):
        create_model("video", BackboneConfig(d_model=8, n_layers=1, mixer=mixer), spec, **{"patch": 4, **kw})


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match=r"\(B, T, 64\)"):
        _model()(torch.rand(2, 5, 63))


def _conv(**cfg):
    torch.manual_seed(0)
    return create_model("video_conv", BackboneConfig(d_model=8, n_layers=1), SPEC, **cfg)


def test_frame_windows_hold_the_last_frames_with_zeros_before_the_clip():
    x = torch.arange(1, 4, dtype=torch.float64).view(1, 3, 1).expand(1, 3, 64)
    w = frame_windows(x, 2)
    assert w.shape == (1, 3, 2, 64)
    assert w[0, :, :, 0].tolist() == [[0.0, 1.0], [1.0, 2.0], [2.0, 3.0]]


def test_the_conv_baseline_sees_only_its_window_and_starts_as_persistence():
    x = torch.rand(2, 5, 64, dtype=torch.float64)
    assert torch.equal(_conv().double()(x), x)  # untrained: copies the last frame
    model = _conv(residual=False, context=2).double()
    x2 = x.clone()
    x2[:, 1] += 1.0
    y, y2 = model(x), model(x2)
    assert y.shape == (2, 5, 64)
    assert torch.equal(y[:, [0, 3, 4]], y2[:, [0, 3, 4]])  # frame 1 is in the windows of t = 1, 2 only
    assert all((y[:, t] - y2[:, t]).abs().max() > 1e-6 for t in (1, 2))


@pytest.mark.parametrize("kw, spec, message", [
    ({"context": 0}, SPEC, "'context'"),
    ({"layers": 1}, SPEC, "'layers'"),
    ({}, DataSpec("predict", 64, None, 64, 0), "'video_conv' reads VideoFrames data"),
], ids=["context", "layers", "not-video"])
def test_conv_baseline_bad_settings_are_named(kw, spec, message):
    with pytest.raises(ValueError, match=message):
        create_model("video_conv", BackboneConfig(d_model=8, n_layers=1), spec, **kw)
    if not kw:
        with pytest.raises(ValueError, match=r"\(B, T, 64\)"):
            _conv()(torch.rand(2, 5, 63))
