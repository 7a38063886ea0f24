"""The dynamical-systems tasks: trajectories against the integrator's invariants and the exact flow,
windows and targets, and the closed-loop roll-out scored with models whose answer is known."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from ssmkit.models import BackboneConfig
from ssmkit.tasks import create_task
from ssmkit.tasks.dynamics import SYSTEMS, integrate

from .data_helpers import one_training_step

SMALL = dict(steps=64, n_train=4, n_val=2, n_test=3, length=8)


@pytest.mark.parametrize("name", sorted(SYSTEMS))
def test_trajectories_keep_the_systems_invariants(name):
    task = create_task(name, **SMALL)
    for split, z in task.trajectories.items():
        assert z.shape == (SMALL[f"n_{split}"], 64, SYSTEMS[name].dim) and z.dtype == torch.float64
        for inv_name, inv in task.system.invariants.items():
            values = inv(z)
            drift = ((values - values[:, :1]).abs() / values[:, :1].abs()).max().item()
            assert drift < 1e-8, f"{split} {inv_name}: {drift:.1e}"
    if name == "rigid_body":
        assert torch.allclose(task.trajectories["train"][:, 0].norm(dim=-1), torch.ones(4, dtype=torch.float64))
    # the vector field moves the state: not a constant trajectory
    assert (task.trajectories["test"][:, -1] - task.trajectories["test"][:, 0]).abs().max() > 0.1


def _oscillator_matrix() -> np.ndarray:
    """z' = A z for z = (q1, q2, p1, p2), from the field itself (it is linear)."""
    return np.stack([SYSTEMS["coupled_oscillators"].field(e) for e in np.eye(4)], axis=1)


def test_oscillators_follow_the_exact_flow():
    z0 = np.random.default_rng(3).standard_normal((5, 4))
    z = integrate(SYSTEMS["coupled_oscillators"], z0, 200, 0.1)
    exact = np.stack([z0 @ scipy.linalg.expm(_oscillator_matrix() * 0.1 * t).T for t in range(200)], axis=1)
    assert np.abs(z - exact).max() < 1e-8


def test_rigid_body_field_is_eulers_equations():
    m = np.array([0.3, -0.5, 0.8])
    I1, I2, I3 = 2.0, 1.0, 2.0 / 3.0
    euler = np.array([(I2 - I3) / (I2 * I3) * m[1] * m[2], (I3 - I1) / (I3 * I1) * m[2] * m[0],
                      (I1 - I2) / (I1 * I2) * m[0] * m[1]])
    assert np.allclose(SYSTEMS["rigid_body"].field(m), euler, rtol=0, atol=1e-15)


def test_windows_and_targets():
    task = create_task("coupled_oscillators", **SMALL)
    assert task.info.kind == "trajectory" and task.info.d_input == task.info.n_classes == 4
    for split in ("train", "val", "test"):
        batches = list(task.batches(split, 5, seed=1, epoch=2))
        assert sum(len(b.inputs) for b in batches) == task.info.sizes[split]
        b = batches[0]
        assert b.inputs.shape == b.targets.shape == (5, 8, 4) and b.mask is None
        # inputs are consecutive states of one trajectory and the targets their mean velocities
        z = task.trajectories[split].float()
        first = (z[:, :, None] == b.inputs[0, 0]).all(-1).nonzero()[0]
        window = z[first[0], first[1] : first[1] + 9]
        assert torch.equal(b.inputs[0], window[:-1])
        assert torch.allclose(b.targets[0], (window[1:] - window[:-1]) / 0.1, atol=1e-5)
    again = next(task.batches("train", 5, seed=1, epoch=2))
    assert torch.equal(again.inputs, next(task.batches("train", 5, seed=1, epoch=2)).inputs)
    assert not torch.equal(again.inputs, next(task.batches("train", 5, seed=1, epoch=3)).inputs)


class _Flow(nn.Module):
    """A 'model' answering (Φ(z) - z) / dt for the exact one-step flow Φ(z) = z e^{A dt}: no state."""

    def __init__(self, dt: float) -> None:
        super().__init__()
        step = torch.from_numpy(scipy.linalg.expm(_oscillator_matrix() * dt).T)
        self.register_buffer("step", step)
        self.dt = dt
        self.w = nn.Parameter(torch.zeros(()))  # the roll-out reads the device from a parameter

    def forward(self, inputs, mask=None, state=None, return_state=False):
        z = inputs.double()
        return ((z @ self.step - z) / self.dt).float(), (state or 0) + 1


def test_rollout_of_the_exact_flow_has_no_error_and_no_drift():
    task = create_task("coupled_oscillators", **SMALL)
    r = task.rollout_metrics(_Flow(0.1))
    assert r["horizons"] == [1, 10, 30, 56] and r["warmup"] == 8
    # float32 outputs times dt: ~1e-8 per step, accumulated over 56 steps
    assert max(r["error"]) < 1e-5 and max(r["invariant_drift"]["energy"]) < 1e-5


def test_rollout_of_a_model_that_stands_still():
    task = create_task("coupled_oscillators", **SMALL)

    class Still(_Flow):
        def forward(self, inputs, mask=None, state=None, return_state=False):
            return torch.zeros_like(inputs), state

    r = task.rollout_metrics(Still(0.1))
    z = task.trajectories["test"]
    expected = ((z[:, 7:8] - z[:, 8:]).norm(dim=-1) / z[:, 8:].norm(dim=-1)).mean(0)
    assert np.allclose(r["error"], expected[[0, 9, 29, 55]].numpy(), rtol=1e-12)


@pytest.mark.parametrize("name", sorted(SYSTEMS))
def test_a_model_trains_and_rolls_out(name):
    task = create_task(name, **SMALL)
    assert set(one_training_step(task, mixer="vpt")) == {"mse", "mae"}
    model = task.build_model(BackboneConfig(d_model=16, n_layers=1, mixer="vpt"))
    r = task.rollout_metrics(model)
    assert len(r["error"]) == len(r["horizons"]) and all(np.isfinite(r["error"]))
    assert set(r["invariant_drift"]) == set(SYSTEMS[name].invariants)


def test_bad_settings_name_the_field():
    with pytest.raises(ValueError, match="'steps'"):
        create_task("rigid_body", length=32, steps=33)
    with pytest.raises(ValueError, match="'dt'"):
        create_task("rigid_body", dt=0.0)
