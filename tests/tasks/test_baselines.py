"""The yardsticks of a task's test split: the chance level, and the seasonal naive forecast scored
on the models' own test windows and units."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from ssmkit.testing import assert_close_rel
from ssmkit.tasks import chance_accuracy, create_task, naive_baseline
from ssmkit.tasks.forecast import seasonal_naive
from ssmkit.training import evaluate


def test_chance_is_the_most_frequent_answer():
    task = create_task("copy_memory", n_symbols=2, n_copy=1, delay=2, n_eval=400)
    chance = chance_accuracy(task)
    assert 0.5 <= chance < 0.6  # two equally likely symbols
    assert chance_accuracy(create_task("adding", length=8, n_eval=4)) is None


class SeasonalNaive(nn.Module):
    """The baseline as a model, so that the training loop's evaluate scores it like any other."""

    def __init__(self, horizon: int, season: int) -> None:
        super().__init__()
        self.horizon, self.season = horizon, season
        self.unused = nn.Parameter(torch.zeros(()))  # evaluate reads the device from a parameter

    def forward(self, inputs, mask=None):
        return seasonal_naive(inputs, self.horizon, self.season)


@pytest.mark.parametrize("series", ["sunspots", "nile"])
def test_baseline_is_what_evaluate_gives_the_naive_model(series):
    task = create_task("forecast", series=series)
    base = naive_baseline(task, batch_size=7)
    assert base["season"] == task.season and base["name"] == f"seasonal naive (m={task.season})"
    scored = evaluate(task, SeasonalNaive(task.info.horizon, task.season), "test", batch_size=5)
    assert_close_rel(torch.tensor(base["metrics"]["test_mse"]), torch.tensor(scored["mse"]), 1e-6)
    assert_close_rel(torch.tensor(base["metrics"]["test_mae"]), torch.tensor(scored["mae"]), 1e-6)
    independent = task.naive_baseline("test")  # the task's own one-batch computation
    assert_close_rel(torch.tensor(base["metrics"]["test_mse"]), torch.tensor(independent["mse"]), 1e-5)


def test_no_baseline_for_other_tasks():
    assert naive_baseline(create_task("ucr", dataset="GunPoint")) is None
