"""arch=video: shapes per order and scan, causality in time, the residual head, bad settings named."""
from __future__ import annotations

import pytest
import torch

from ssmkit.models import BackboneConfig, DataSpec, create_model
from ssmkit.models.layouts import VideoFrames

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
