"""irregular_sines: batches carry the true gaps in Batch.dt (ones with ignore_dt); data is what it says."""
import math

import pytest
import torch

from ssmkit.models import BackboneConfig
from ssmkit.tasks import create_task
from ssmkit.tasks.irregular import IrregularSinesConfig, irregular_sines_batch


def test_batches_carry_gaps_and_are_reproducible():
    task = create_task("irregular_sines", length=16, n_eval=10)
    b = next(task.batches("val", 10))
    assert b.inputs.shape == (10, 16, 1) and b.targets.shape == (10,) and b.dt.shape == (10, 16)
    assert b.mask is None and (b.dt >= 0.1 - 1e-6).all() and (b.dt <= 3.0 + 1e-6).all()
    again = next(task.batches("val", 10))
    assert torch.equal(b.inputs, again.inputs) and torch.equal(b.dt, again.dt)
    blind = next(create_task("irregular_sines", length=16, n_eval=10, ignore_dt=True).batches("val", 10))
    assert torch.equal(blind.inputs, b.inputs) and torch.equal(blind.dt, torch.ones(10, 16))


def test_samples_are_the_sinusoid_at_the_cumulative_times():
    cfg = IrregularSinesConfig(length=40, noise=0.0)
    b = irregular_sines_batch(cfg, 6, torch.Generator().manual_seed(3))
    t = b.dt.double().cumsum(1)
    f = cfg.frequencies()[b.targets][:, None]
    x = b.inputs[..., 0].double()
    # x = a sin(2 pi f t + phi): fit (a cos phi, a sin phi) by least squares, the residual must vanish
    basis = torch.stack([torch.sin(2 * math.pi * f * t), torch.cos(2 * math.pi * f * t)], -1)  # (B, L, 2)
    coef = torch.linalg.lstsq(basis, x[..., None]).solution
    assert (basis @ coef)[..., 0].sub(x).abs().max() < 1e-5
    amp = coef.norm(dim=1)[:, 0]
    assert ((amp > 0.5 - 1e-5) & (amp < 1.5 + 1e-5)).all()


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="'freq_max'"):
        create_task("irregular_sines", freq_min=0.3, freq_max=0.2)
    with pytest.raises(ValueError, match="'gap_max'"):
        create_task("irregular_sines", gap_min=0.0)


def test_model_sees_dt_one_training_step():
    task = create_task("irregular_sines", length=12, n_train=8)
    torch.manual_seed(0)
    model = task.build_model(BackboneConfig(d_model=8, n_layers=1, mixer="lru"))
    b = next(task.batches("train", 8))
    loss = task.loss(model(b.inputs, **b.model_kwargs()), b)
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in model.parameters() if p.requires_grad)
    with torch.no_grad():
        assert (model(b.inputs, dt=b.dt) - model(b.inputs)).abs().max() > 1e-4
