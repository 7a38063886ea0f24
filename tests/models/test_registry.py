"""The architecture registry and the ``arch`` / ``arch.<field>`` run settings."""
import dataclasses

import pytest
import torch

from ssmkit.runs import RunConfig, apply_overrides, build_model
from ssmkit.models import BackboneConfig, DataSpec, SequenceModel, create_model, list_archs, register_arch
from ssmkit.tasks import create_task
from ssmkit.training import TrainConfig


def _run() -> RunConfig:
    return RunConfig(task="adding", model=BackboneConfig(d_model=8, n_layers=1, mixer="s4d"), train=TrainConfig())


def test_sequence_is_the_default_architecture():
    assert "sequence" in list_archs()
    spec = DataSpec(kind="classify", n_out=3, d_input=2)
    model = create_model("sequence", BackboneConfig(d_model=8, n_layers=1), spec)
    assert isinstance(model, SequenceModel)
    assert model(torch.randn(2, 5, 2)).shape == (2, 3)


def test_unknown_architecture_and_fields_are_named():
    with pytest.raises(KeyError, match="unknown architecture 'nope'"):
        create_model("nope", BackboneConfig(), DataSpec("classify", 2))
    with pytest.raises(TypeError, match="unknown config key"):
        create_model("sequence", BackboneConfig(), DataSpec("classify", 2), bogus=1)
    with pytest.raises(ValueError, match="'arch'"):
        apply_overrides(_run(), ["arch=nope"])
    with pytest.raises(TypeError, match="arch.bogus"):
        apply_overrides(_run(), ["arch.bogus=1"])


def test_registered_architecture_is_built_by_a_run():
    @dataclasses.dataclass
    class WideConfig:
        scale: float = 1.0

    class Scaled(torch.nn.Module):
        def __init__(self, inner, scale):
            super().__init__()
            self.inner, self.scale = inner, scale

        def forward(self, inputs, mask=None):
            return self.scale * self.inner(inputs, mask=mask)

    @register_arch("_test_scaled", WideConfig)
    def build(backbone, spec, pool, cfg):
        return Scaled(create_model("sequence", backbone, spec, pool), cfg.scale)

    run = apply_overrides(_run(), ["arch=_test_scaled", "arch.scale=2.5"])
    assert run.arch == "_test_scaled" and run.arch_cfg == {"scale": 2.5}
    assert RunConfig.from_json(run.to_json()) == run
    with pytest.raises(ValueError, match="scale"):
        apply_overrides(run, ["arch.scale=wide"])
    model = build_model(create_task("adding", length=10), run)
    assert isinstance(model, Scaled) and model.scale == 2.5
    # back to the default architecture: its (empty) settings, not the other one's
    assert apply_overrides(run, ["arch=sequence"]).arch_cfg == {}
