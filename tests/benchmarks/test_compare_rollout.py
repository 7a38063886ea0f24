"""ssmkit compare on a dynamical system: every cell records its closed-loop roll-out (error and
invariant drift per horizon) and the report shows them as a table."""
from __future__ import annotations

import copy

from ssmkit.benchmarks import compare as cmp
from ssmkit.benchmarks import report
from ssmkit.benchmarks.grid import CompareSpec

MICRO = ["d_model=8", "n_layers=1", "batch_size=4", "progress=false", "task.steps=40", "task.n_train=2",
         "task.n_val=1", "task.n_test=2"]


def test_compare_records_and_prints_the_rollouts(tmp_path):
    spec = CompareSpec(mixers=["vpt", "lstm"], tasks=["rigid_body"], train_lengths=[8], budget=2, overrides=MICRO,
                       speed_lengths=[])
    res = cmp.compare(spec, tmp_path, log=lambda s: None)
    assert res["tasks"]["rigid_body"]["metric"] == "test_mse"
    for c in res["cells"]:
        r = c["rollout"]
        assert r["horizons"] == [1, 10, 30, 32] and r["warmup"] == 8 and len(r["error"]) == 4
        assert set(r["invariant_drift"]) == {"casimir", "energy"}
    table = (tmp_path / "report" / "results.md").read_text()
    assert "**Roll-outs: rigid_body trained at L = 8**" in table
    assert "| mixer | error h=1 | error h=10 | error h=30 | error h=32 | casimir drift h=32 | energy drift h=32 |" in table
    vpt = next(c for c in res["cells"] if c["mixer"] == "vpt")["rollout"]
    assert f"| `vpt` | {vpt['error'][0]:.2e} |" in table

    # the first table names the metric and its direction; a chance accuracy never sits in an mse column
    assert "**Test mse at the training length**" in table and "Test mse, lower is better" in table
    assert "| chance | - |" in table
    with_chance = copy.deepcopy(res)
    with_chance["tasks"]["rigid_body"]["lengths"]["8"]["chance"] = 0.25
    assert "| chance | - |" in report.markdown(with_chance)
    with_chance["tasks"]["rigid_body"]["metric"] = "test_accuracy"  # as a classification task's
    assert "| chance | 25.0 |" in report.markdown(with_chance)
