"""The selective-scan benchmark runs end to end on a tiny shape (speed itself is never asserted)."""
from __future__ import annotations

from ssmkit.benchmarks.selective_scan import bench_selective_scan, format_rows
from ssmkit.ops.selective_scan import MODES


def test_bench_rows_cover_every_runnable_mode():
    rows = bench_selective_scan(lengths=(8, 16), B=1, D=4, N=2, repeats=1, reference_max_length=8)
    assert MODES.unavailable_reason("cpp") is None, "the compiled scan is part of what the bench compares"
    expected = {"reference", "chunked", "cpp"}
    assert {r.impl for r in rows if r.length == 8} >= expected
    assert "reference" not in {r.impl for r in rows if r.length == 16}
    for r in rows:
        assert r.forward_s > 0 and r.forward_backward_s is not None and r.forward_backward_s > 0
    table = format_rows(rows)
    assert table.count("\n") == len(rows) + 1 and "| chunked | 16 |" in table
