"""arch=captioner: teacher-forced logits, greedy generation through the recurrent step after the image
prefix, exact match the same either way, the caption_slots baseline, bad settings named."""
from __future__ import annotations

import pytest
import torch

from ssmkit.models import BackboneConfig, DataSpec, create_model
from ssmkit.models.layouts import ImageCaption

LAYOUT = ImageCaption((8, 8, 1), 5, 7, bos=1, eos=2, pad=0)
SPEC = DataSpec("lm", 7, None, 1, 0, layout=LAYOUT)


def _inputs(tokens: torch.Tensor) -> torch.Tensor:
    pixels = torch.rand(tokens.shape[0], 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return torch.cat([pixels, tokens.double()], 1)[..., None]


def _model(mixer: str = "mamba", **cfg):
    torch.manual_seed(0)
    return create_model("captioner", BackboneConfig(d_model=8, n_layers=2, mixer=mixer), SPEC, patch=4, **cfg).double()


@pytest.mark.parametrize("mixer", ["mamba", "s4d", "attention"])
def test_greedy_generation_is_the_argmax_of_the_teacher_forced_model_on_its_own_output(mixer):
    model = _model(mixer)
    model.eval()
    x = _inputs(torch.ones(3, 5, dtype=torch.long))
    tokens = model.generate(x[:, :64])
    assert tokens.shape == (3, 5)
    # feed the generated caption back, teacher-forced: every position's argmax is the generated token
    # (up to the first EOS; after it generation writes PAD)
    fed = torch.cat([torch.ones(3, 1, dtype=torch.long), tokens[:, :-1]], 1)
    model.cfg.eval_decode = "teacher"
    argmax = model(_inputs(fed)).argmax(-1)
    for row in range(3):
        stop = int((tokens[row] == 2).nonzero()[0]) + 1 if (tokens[row] == 2).any() else 5
        assert torch.equal(argmax[row, :stop], tokens[row, :stop])
    model.cfg.eval_decode = "greedy"
    assert torch.equal(model(x).argmax(-1)[:, 0], tokens[:, 0])  # evaluation scores the generation


def test_training_forward_is_teacher_forced_and_causal_over_the_caption():
    model = _model()
    tokens = torch.tensor([[1, 3, 4, 2, 0]])
    a = model(_inputs(tokens))
    changed = tokens.clone()
    changed[0, 3] = 5
    b = model(_inputs(changed))
    assert a.shape == (1, 5, 7)
    assert torch.allclose(a[:, :3], b[:, :3]) and not torch.allclose(a[:, 3:], b[:, 3:])


def test_caption_slots_baseline_gives_every_position_at_once():
    torch.manual_seed(0)
    model = create_model("caption_slots", BackboneConfig(d_model=8, n_layers=1), SPEC)
    x = _inputs(torch.ones(2, 5, dtype=torch.long)).float()
    out = model(x)
    x2 = x.clone()
    x2[:, 64:] = 2.0  # the caption positions of the input are not read
    assert out.shape == (2, 5, 7) and torch.equal(out, model(x2))


@pytest.mark.parametrize("spec, kw, message", [
    (SPEC, {"patch": 3}, "'patch': 3 does not divide the 8 x 8 image"),
    (SPEC, {"eval_decode": "beam"}, "'eval_decode'"),
    (DataSpec("lm", 7, 7), {}, "'captioner' reads ImageCaption data"),
    (DataSpec("classify", 7, None, 1, 0, layout=LAYOUT), {}, "kind 'lm'"),
], ids=["patch", "decode", "not-captions", "kind"])
def test_bad_settings_are_named(spec, kw, message):
    with pytest.raises(ValueError, match=message):
        create_model("captioner", BackboneConfig(d_model=8, n_layers=1, mixer="s4d"), spec, **{"patch": 4, **kw})


def test_a_caption_that_does_not_fit_the_slots_is_refused():
    model = _model()
    with pytest.raises(ValueError, match="longer than T = 5 tokens"):
        model(_inputs(torch.ones(1, 6, dtype=torch.long)))
    with pytest.raises(ValueError, match=r"token ids in \[0, 7\)"):
        model(_inputs(torch.full((1, 5), 9, dtype=torch.long)))
