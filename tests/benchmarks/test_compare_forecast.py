"""ssmkit compare on a forecasting task: the seasonal naive baseline (tests/tasks/test_baselines.py)
is recorded in results.json and shown as a row, with MAE beside MSE."""
from __future__ import annotations

import json

from ssmkit.benchmarks import compare as cmp
from ssmkit.benchmarks.report import markdown_table
from ssmkit.tasks import create_task, naive_baseline

MICRO = ["arch=forecaster", "d_model=8", "n_layers=1", "batch_size=8", "progress=false", "task.series=nile"]


def test_compare_records_and_prints_the_baseline(tmp_path):
    spec = cmp.CompareSpec(mixers=["s4d", "lstm"], task="forecast", budget=2, overrides=MICRO, lengths=[8])
    res = cmp.compare(spec, tmp_path, log=lambda s: None)
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["metric"] == "test_mse" and data["configs"]["s4d"]["arch"] == "forecaster"
    expect = naive_baseline(create_task("forecast", series="nile"))
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
    assert "seasonal naive" not in markdown_table(old)
