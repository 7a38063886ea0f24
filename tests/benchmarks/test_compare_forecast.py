"""ssmkit compare on a forecasting task: the seasonal naive baseline is scored on the models' own
test windows and units, recorded in results.json and shown as a row, with MAE beside MSE."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from ssmkit.benchmarks import compare as cmp
from ssmkit.testing import assert_close_rel
from ssmkit.tasks import create_task
from ssmkit.tasks.forecast import seasonal_naive
from ssmkit.training import evaluate

MICRO = ["arch=forecaster", "d_model=8", "n_layers=1", "batch_size=8", "progress=false", "task.series=nile"]


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
    base = cmp.naive_baseline(task, batch_size=7)
    assert base["season"] == task.season and base["name"] == f"seasonal naive (m={task.season})"
    scored = evaluate(task, SeasonalNaive(task.info.horizon, task.season), "test", batch_size=5)
    assert_close_rel(torch.tensor(base["metrics"]["test_mse"]), torch.tensor(scored["mse"]), 1e-6)
    assert_close_rel(torch.tensor(base["metrics"]["test_mae"]), torch.tensor(scored["mae"]), 1e-6)
    independent = task.naive_baseline("test")  # the task's own one-batch computation
    assert_close_rel(torch.tensor(base["metrics"]["test_mse"]), torch.tensor(independent["mse"]), 1e-5)


def test_no_baseline_for_other_tasks():
    assert cmp.naive_baseline(create_task("ucr", dataset="GunPoint")) is None


def test_compare_records_and_prints_the_baseline(tmp_path):
    spec = cmp.CompareSpec(mixers=["s4d", "lstm"], task="forecast", budget=2, overrides=MICRO, lengths=[8])
    res = cmp.compare(spec, tmp_path, log=lambda s: None)
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["metric"] == "test_mse" and data["configs"]["s4d"]["arch"] == "forecaster"
    expect = cmp.naive_baseline(create_task("forecast", series="nile"))
    assert data["baseline"] == expect == res["baseline"]
    for r in data["runs"]:
        assert set(r["metrics"]) >= {"test_mse", "test_mae"}
    table = (tmp_path / "results.md").read_text()
    assert "| mixer | test mse | test mae |" in table
    mse, mae = expect["metrics"]["test_mse"], expect["metrics"]["test_mae"]
    assert f"| seasonal naive (m=1) | {mse:.4f} | {mae:.4f} | - |" in table
    lstm = next(r for r in data["runs"] if r["mixer"] == "lstm")["metrics"]
    assert f"| `lstm` | {lstm['test_mse']:.4f} | {lstm['test_mae']:.4f} |" in table
    old = {k: v for k, v in data.items() if k != "baseline"}  # results written before baselines existed
    assert "seasonal naive" not in cmp.markdown_table(old)
