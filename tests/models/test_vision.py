"""arch=vision: patch embedding, the four scan orders (raster, vim, cross, s4nd), errors, training, CLI."""
from __future__ import annotations

import json

import pytest
import torch

from ssmkit.testing import assert_close_rel
from ssmkit.models import BackboneConfig, DataSpec, create_model
from ssmkit.models.scans import ScanMixer
from ssmkit.models.vision import PatchEmbed, VisionModel

SPEC = DataSpec("classify", 10, None, 1, 0, (8, 8, 1))
SCAN_MIXERS = [("raster", "s4d"), ("vim", "s4d"), ("cross", "s4d"), ("s4nd", "s4nd"), ("vim", "mamba"),
               ("cross", "attention")]


def _model(scan: str, mixer: str = "s4d", patch: int = 2, spec: DataSpec = SPEC, **cfg) -> VisionModel:
    torch.manual_seed(0)
    return create_model("vision", BackboneConfig(d_model=8, n_layers=2, mixer=mixer), spec, scan=scan,
                        patch=patch, **cfg)


@pytest.mark.parametrize("scan, mixer", SCAN_MIXERS, ids=lambda v: v)
def test_shapes_of_every_scan(scan, mixer):
    model = _model(scan, mixer)
    x = torch.randn(3, 64, 1)
    assert model(x).shape == (3, 10)
    n_tokens = 16 + (scan == "vim")  # 4 x 4 patches of 2 x 2 (+ Vim's class token)
    assert model.features(x).shape == (3, n_tokens, 8)
    dirs = {"raster": 1, "s4nd": 1, "vim": 2, "cross": 4}[scan]  # mixers per block
    assert sum(1 for m in model.backbone.blocks[0].mixer.modules() if hasattr(m, "state_size_at")) >= dirs


def test_patches_are_the_pixels_of_each_square_row_major():
    embed = PatchEmbed((4, 6, 2), 2, 8)
    x = torch.arange(2 * 24 * 2, dtype=torch.float64).view(2, 24, 2)
    img = x.view(2, 4, 6, 2)
    want = torch.stack([img[:, 2 * r:2 * r + 2, 2 * c:2 * c + 2].reshape(2, 8)
                        for r in range(2) for c in range(3)], dim=1)
    assert torch.equal(embed.patches(x), want)
    assert torch.equal(PatchEmbed((4, 6, 2), 1, 8).patches(x), x)  # patch 1: the pixel sequence itself


def test_cross_scan_is_the_sum_of_four_directions_mapped_back():
    torch.manual_seed(1)
    h, w, D = 3, 4, 5
    mixer = ScanMixer("cross", "s4d", D, (h, w)).double()
    x = torch.randn(2, h * w, D, dtype=torch.float64)
    rows = [r * w + c for r in range(h) for c in range(w)]  # token index of each step, row-major
    cols = [r * w + c for c in range(w) for r in range(h)]  # column-major
    want = torch.zeros_like(x)
    for bi, order in zip(mixer.dirs, (rows, cols)):
        for m, o in ((bi.fwd, order), (bi.bwd, order[::-1])):
            want[:, o] += m(x[:, o])  # step t of this direction lands on token o[t]
    assert_close_rel(mixer(x), want, 1e-12)


def test_vim_class_token_sits_in_the_middle_and_feeds_the_head():
    model = _model("vim").double()
    x = torch.randn(2, 64, 1, dtype=torch.float64)
    seq = model.tokens(x)
    patches = model.embed(x) + model.pos.weight
    assert model.cls_index == 8 and seq.shape[1] == 17
    assert torch.equal(seq[:, 8], model.cls.expand(2, -1))
    assert torch.equal(torch.cat([seq[:, :8], seq[:, 9:]], 1), patches)
    assert_close_rel(model(x), model.head(model.features(x)[:, 8]), 1e-12)
    mean = _model("vim", readout="mean").double()
    h = mean.features(x)
    assert_close_rel(mean(x), mean.head(torch.cat([h[:, :8], h[:, 9:]], 1).mean(1)), 1e-12)


def test_s4nd_scan_is_the_s4nd_2d_forward_and_equals_its_raster_scan():
    model = _model("s4nd", "s4nd").double()
    mixer = model.backbone.blocks[0].mixer
    x = torch.randn(2, 16, 8, dtype=torch.float64)
    assert_close_rel(mixer(x), mixer.dirs[0].forward_2d(x.view(2, 4, 4, 8)).reshape(2, 16, 8), 1e-12)
    # the same weights read as a causal raster sequence (S4ND's SequenceMixer path, grid 4 x 4)
    raster = _model("raster", "s4nd").double()
    raster.load_state_dict(model.state_dict())
    img = torch.randn(2, 64, 1, dtype=torch.float64)
    assert_close_rel(raster(img), model(img), 1e-10)


def test_raster_scan_is_causal_over_patches():
    model = _model("raster", readout="mean").double()
    x = torch.randn(1, 64, 1, dtype=torch.float64)
    x2 = x.clone()
    x2.view(1, 8, 8, 1)[:, 6:, :] += 1.0  # the last patch row only
    h, h2 = model.features(x), model.features(x2)
    assert_close_rel(h2[:, :12], h[:, :12], 1e-12)  # FFT convolution: equal to rounding
    assert (h2[:, 12:] - h[:, 12:]).abs().amax() > 1e-3


@pytest.mark.parametrize("spec, kw, error, message", [
    (DataSpec("classify", 10, None, 1, 0, None), {}, ValueError, "no image_shape"),
    (SPEC, {"patch": 3}, ValueError, "arch.patch=3 does not divide the 8 x 8 image"),
    (SPEC, {"scan": "s4nd"}, ValueError, "needs mixer 's4nd' in every layer"),
    (SPEC, {"scan": "vim", "mixer": "s4nd"}, ValueError, "use scan 's4nd'"),
    (SPEC, {"scan": "raster", "readout": "cls"}, ValueError, "'cls' needs scan 'vim'"),
    (SPEC, {"scan": "spiral"}, ValueError, "scan"),
    (DataSpec("classify", 10, 256, 1, 0, (8, 8, 1)), {}, ValueError, "task.protocol=values"),
    (DataSpec("tag", 10, None, 1, 0, (8, 8, 1)), {}, ValueError, "classifies images"),
], ids=["no-image", "patch", "s4nd-scan", "s4nd-mixer", "cls-readout", "scan-name", "tokens", "kind"])
def test_bad_configs_are_named(spec, kw, error, message):
    kw = {"scan": "vim", **kw}
    mixer = kw.pop("mixer", "s4d")
    with pytest.raises(error, match=message):
        _model(mixer=mixer, spec=spec, **kw)


def test_bad_inputs_are_named():
    model = _model("cross")
    with pytest.raises(ValueError, match=r"\(B, 64, 1\) for image_shape \(8, 8, 1\), got \(2, 63, 1\)"):
        model(torch.randn(2, 63, 1))
    with pytest.raises(TypeError, match="float pixel values"):
        model(torch.zeros(2, 64, 1, dtype=torch.long))
    mask = torch.ones(2, 64, dtype=torch.bool)
    assert model(torch.randn(2, 64, 1), mask=mask).shape == (2, 10)  # an all-real mask is fine
    mask[0, -1] = False
    with pytest.raises(ValueError, match="padded pixels"):
        model(torch.randn(2, 64, 1), mask=mask)
    with pytest.raises(ValueError, match="mixer.height=5 does not match the 4 x 4 patch grid"):
        create_model("vision", BackboneConfig(d_model=8, n_layers=1, mixer="s4nd", mixer_cfg={"height": 5}),
                     SPEC, scan="s4nd", patch=2)


@pytest.mark.parametrize("scan, mixer", SCAN_MIXERS, ids=lambda v: v)
def test_one_training_step_gives_every_parameter_a_finite_gradient(scan, mixer):
    model = _model(scan, mixer)
    torch.manual_seed(2)
    x, y = torch.randn(4, 64, 1), torch.randint(0, 10, (4,))
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
    assert any(p.grad.abs().sum() > 0 for p in model.parameters())
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    assert torch.isfinite(model(x)).all()


def test_image_tasks_carry_their_shape_and_permuted_pixels_do_not():
    from ssmkit.tasks import create_task

    digits = create_task("digits")
    assert digits.info.image_shape == (8, 8, 1)
    model = digits.build_model(BackboneConfig(d_model=8, n_layers=1), arch="vision", scan="raster", patch=4)
    batch = next(iter(digits.batches("val", 5)))
    assert model(batch.inputs, mask=batch.mask).shape == (5, 10)
    with pytest.raises(ValueError, match="psmnist scrambles"):
        create_task("psmnist").build_model(BackboneConfig(d_model=8, n_layers=1), arch="vision")


def test_train_and_eval_cli_with_arch_vision(tmp_path, capsys):
    from ssmkit.cli.main import main

    out = tmp_path / "run"
    args = ["train", "--task", "digits", "--mixer", "s4d", "--set", "arch=vision", "--set", "arch.scan=cross",
            "--set", "arch.patch=2", "--set", "arch.readout=last", "--set", "d_model=8", "--set", "n_layers=1", "--set", "steps=3",
            "--set", "batch_size=16", "--set", "progress=false", "--out", str(out)]
    assert main(args) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["arch"] == "vision" and run["arch_cfg"] == {"scan": "cross", "patch": 2, "readout": "last"}
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(out), "--split", "test"]) == 0
    assert "test accuracy" in capsys.readouterr().out
    assert main(["train", "--task", "psmnist", "--set", "arch=vision", "--set", "steps=1"]) == 2
    assert "no image_shape" in capsys.readouterr().err


def test_positions_and_class_token_get_no_weight_decay():
    from ssmkit.training.optim import param_groups

    model = _model("vim")
    decay = {n for g in param_groups(model, 1e-3, 0.1) if g["weight_decay"] > 0 for n in g["names"]}
    assert "pos.weight" not in decay and "cls" not in decay and "embed.proj.weight" in decay
