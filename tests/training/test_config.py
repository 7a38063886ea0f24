"""TrainConfig validation, key=value overrides, and the warmup + cosine schedule."""
import math

import pytest

from ssmkit.models import BackboneConfig
from ssmkit.config import config_from_overrides
from ssmkit.training import TrainConfig, warmup_cosine


def test_overrides_parse_to_the_field_types():
    cfg = config_from_overrides(TrainConfig, ["lr=1", "steps=1_000", "betas=0.8, 0.95", "ssm_lr=none",
                                              "bf16=on", "log_dir=runs/a=b", "grad_clip=0"])
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)
    assert cfg.steps == 1000 and cfg.betas == (0.8, 0.95) and cfg.ssm_lr is None
    assert cfg.bf16 is True and cfg.log_dir == "runs/a=b" and cfg.grad_clip == 0.0
    assert config_from_overrides(TrainConfig, ["ssm_lr=1e-3"]).ssm_lr == 1e-3
    base = TrainConfig(steps=7, lr=0.5)
    assert config_from_overrides(TrainConfig, ["seed=3"], base=base) == TrainConfig(steps=7, lr=0.5, seed=3)
    bb = config_from_overrides(BackboneConfig, ["mixer=mamba", 'mixer_cfg={"d_state": 4}'])
    assert bb.mixer == "mamba" and bb.mixer_cfg == {"d_state": 4}


@pytest.mark.parametrize("override, error, words", [
    (["colour=red"], TypeError, ["unknown config key 'colour'", "valid keys", "'steps'", "'lr'"]),
    (["lr=fast"], ValueError, ["'lr'", "'fast'", "float"]),
    (["steps=2.5"], ValueError, ["'steps'", "int"]),
    (["bf16=maybe"], ValueError, ["'bf16'", "bool"]),
    (["betas=0.9"], ValueError, ["'betas'", "2 comma-separated values"]),
    (["steps"], ValueError, ["key=value"]),
    (["epochs=-1"], ValueError, ["'epochs'", ">= 0"]),
    (["steps=0"], ValueError, ["'steps'", "epochs > 0"]),
    (["device=gpu"], ValueError, ["'device'", "cuda:N"]),
    (["patience=3"], ValueError, ["'patience'", "eval_every"]),
    (["warmup_fraction=1"], ValueError, ["'warmup_fraction'", "[0, 1)"]),
    (["checkpoint_every=10"], ValueError, ["'checkpoint_every'", "checkpoint_dir"]),
    (["lr=inf"], ValueError, ["'lr'", "finite"]),
    (["ssm_lr=nan"], ValueError, ["'ssm_lr'", "finite"]),
    (["grad_clip=inf"], ValueError, ["'grad_clip'", "finite"]),
], ids=lambda v: v[0] if isinstance(v, list) else None)
def test_rejections_name_the_field(override, error, words):
    with pytest.raises(error) as info:
        config_from_overrides(TrainConfig, override)
    for w in words:
        assert w in str(info.value), f"{w!r} not in {info.value}"


def test_constructor_rejects_ill_typed_values():
    with pytest.raises(TypeError, match="'steps': expected int, got True"):
        TrainConfig(steps=True)
    with pytest.raises(TypeError, match="'lr': expected float, got '0.1'"):
        TrainConfig(lr="0.1")
    with pytest.raises(TypeError, match="'ssm_lr': expected float | None"):
        TrainConfig(ssm_lr="x")
    with pytest.raises(TypeError, match="'betas'"):
        TrainConfig(betas=(0.9,))
    assert TrainConfig(lr=1, betas=(0, 1 - 1e-3)).betas == (0.0, 0.999)


def test_warmup_cosine_values():
    total, warm = 110, 10
    f = [warmup_cosine(s, total, warm) for s in range(total)]
    assert f[:3] == [0.1, 0.2, 0.3] and f[9] == 1.0 == f[10]
    assert f[60] == pytest.approx(0.5)  # halfway through the 100 cosine steps
    assert f[35] == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.25)))
    assert all(a >= b for a, b in zip(f[10:], f[11:])) and 0 < f[-1] < 1e-3
    g = [warmup_cosine(s, total, warm, min_ratio=0.2) for s in range(total)]
    assert g[60] == pytest.approx(0.6) and g[-1] > 0.2
    assert [warmup_cosine(s, 5, 0, min_ratio=1.0) for s in range(5)] == [1.0] * 5
    assert warmup_cosine(0, 1, 0) == 1.0  # a one-step run is not spent at lr 0
