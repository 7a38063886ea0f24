"""arch=segmenter: shapes per scan and block, the U's grids and skips, bad settings named."""
from __future__ import annotations

import pytest
import torch

from ssmkit.models import BackboneConfig, DataSpec, create_model
from ssmkit.models.unet import merge_groups, split_groups

SPEC = DataSpec("tag", 11, None, 1, 0, (16, 16, 1))


def _model(mixer: str = "s4d", **cfg):
    torch.manual_seed(0)
    return create_model("segmenter", BackboneConfig(d_model=8, n_layers=1, mixer=mixer), SPEC, **cfg)


@pytest.mark.parametrize("mixer, cfg", [("s4d", {"scan": "cross"}), ("s4d", {"scan": "vim"}), ("mamba", {"scan": "raster"}),
                                        ("attention", {}), ("s4nd", {"scan": "s4nd"}), ("s4d", {"block": "conv"})],
                         ids=["cross", "vim", "raster-mamba", "attention", "s4nd", "conv"])
def test_per_pixel_logits_for_every_scan_and_block(mixer, cfg):
    model = _model(mixer, patch=2, stages=3, **cfg)
    x = torch.rand(2, 256, 1)
    out = model(x)
    assert out.shape == (2, 256, 11)
    assert model.backbone.grids == [(8, 8), (4, 4), (2, 2)]
    assert len(model.backbone.blocks) == (0 if cfg.get("block") == "conv" else 5)  # 3 encoder + 2 decoder stages
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_merge_and_split_groups_are_inverse_and_keep_2x2_neighbourhoods():
    x = torch.arange(2 * 16 * 3, dtype=torch.float64).view(2, 16, 3)  # a 4 x 4 grid of 3 channels
    merged = merge_groups(x, (4, 4))
    assert merged.shape == (2, 4, 12)
    assert torch.equal(merged[0, 1], torch.cat([x[0, 2], x[0, 3], x[0, 6], x[0, 7]]))  # top-right 2 x 2 group
    assert torch.equal(split_groups(merged, (2, 2), 2), x)


def test_the_skip_carries_fine_detail_to_the_output():
    """A pixel change inside one 2 x 2 patch reaches that patch's logits through the stage-0 skip even
    with the deeper stages' contribution removed."""
    model = _model(stages=2).double()
    with torch.no_grad():
        model.backbone.expands[0].weight.zero_()
        model.backbone.expands[0].bias.zero_()
    x = torch.rand(1, 256, 1, dtype=torch.float64)
    x2 = x.clone()
    x2[0, 0] += 1
    assert (model(x2)[0, 0] - model(x)[0, 0]).abs().max() > 1e-6


@pytest.mark.parametrize("spec, cfg, mixer, message", [
    (SPEC, {"patch": 3}, "s4d", "'patch': 3 does not divide the 16 x 16 image"),
    (SPEC, {"patch": 2, "stages": 5}, "s4d", "'stages'"),
    (SPEC, {"scan": "s4nd"}, "s4d", "'s4nd' needs mixer 's4nd'"),
    (SPEC, {"block": "dense"}, "s4d", "'block'"),
    (DataSpec("classify", 10, None, 1, 0, (16, 16, 1)), {}, "s4d", "tag task with image inputs"),
    (DataSpec("tag", 11, None, 1, 0, None), {}, "s4d", "without image_shape"),
], ids=["patch", "stages", "s4nd", "block", "kind", "no-image"])
def test_bad_settings_are_named(spec, cfg, mixer, message):
    with pytest.raises(ValueError, match=message):
        create_model("segmenter", BackboneConfig(d_model=8, n_layers=1, mixer=mixer), spec, **cfg)


def test_bad_inputs_are_named():
    model = _model()
    with pytest.raises(ValueError, match=r"\(B, 256, 1\)"):
        model(torch.rand(2, 255, 1))
    mask = torch.ones(2, 256, dtype=torch.bool)
    mask[0, 3] = False
    with pytest.raises(ValueError, match="padded pixels"):
        model(torch.rand(2, 256, 1), mask=mask)
