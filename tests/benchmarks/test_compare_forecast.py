"""ssmkit compare on a forecasting task (no length knob: it runs at its own length): the seasonal
naive baseline (tests/tasks/test_baselines.py) is recorded in each cell and shown as a row, with MAE
beside MSE."""
from __future__ import annotations

from ssmkit.benchmarks import compare as cmp
from ssmkit.benchmarks.grid import CompareSpec
from ssmkit.tasks import create_task, naive_baseline

MICRO = ["arch=forecaster", "d_model=8", "n_layers=1", "batch_size=8", "progress=false", "task.series=nile"]


def test_compare_records_and_prints_the_baseline(tmp_path):
    spec = CompareSpec(mixers=["s4d", "lstm"], tasks=["forecast"], budget=2, overrides=MICRO, speed_lengths=[])
    res = cmp.compare(spec, tmp_path, log=lambda s: None)
    expect = naive_baseline(create_task("forecast", series="nile"))
    (L,) = [int(k) for k in res["tasks"]["forecast"]["lengths"]]
    assert res["tasks"]["forecast"]["metric"] == "test_mse"
    assert res["tasks"]["forecast"]["lengths"][str(L)]["baseline"] == expect
    for c in res["cells"]:
        assert set(c["metrics"]) >= {"test_mse", "test_mae"} and c["config"]["arch"] == "forecaster"
    table = (tmp_path / "report" / "results.md").read_text()
    mse, mae = expect["metrics"]["test_mse"], expect["metrics"]["test_mae"]
    assert f"| seasonal naive (m=1) | {mse:.4f} (mae {mae:.4f}) |" in table
    lstm = next(c for c in res["cells"] if c["mixer"] == "lstm")["metrics"]
    assert f"| `lstm` | {lstm['test_mse']:.4f} (mae {lstm['test_mae']:.4f}) |" in table
    assert "arch `forecaster`" in table
