"""Every ``ssmkit bench`` suite through the CLI on tiny shapes: the printed table has the expected
rows and columns and sane values (times positive and finite, ratios consistent with the times,
the baseline's ratio 1), and ``--plot`` writes a PNG. Speed itself is never asserted."""
from __future__ import annotations

import math

from ssmkit.cli.main import main
from ssmkit.ops.selective_scan import MODES

PNG = b"\x89PNG\r\n\x1a\n"
TINY = ["--batch", "1", "--d-model", "8", "--repeats", "1"]


def table(out: str) -> list[dict[str, str]]:
    """The rows of the first Markdown table in ``out``, as {column: cell}."""
    lines = [line for line in out.splitlines() if line.startswith("|")]
    assert len(lines) >= 3 and set(lines[1]) <= set("|-"), out
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    assert all(len(r) == len(header) for r in rows), out
    return [dict(zip(header, r)) for r in rows]


def seconds(cell: str) -> float:
    value = float(cell)
    assert math.isfinite(value) and value >= 0, cell
    return value


def check_ratios(rows: list[dict[str, str]], name_col: str, baseline: str, time_col: str, ratio_col: str) -> None:
    """The baseline's ratio is 1.00 and every ratio is time / baseline time, within what rounding the
    printed times (4 decimals) and ratios (2 decimals) allows."""
    half = 5e-5
    for length in {r["L"] for r in rows}:
        at = [r for r in rows if r["L"] == length]
        base = next(r for r in at if r[name_col] == baseline)
        assert base[ratio_col] == "1.00", base
        b = seconds(base[time_col])
        for r in at:
            t, ratio = seconds(r[time_col]), float(r[ratio_col])
            low = max(t - half, 0.0) / (b + half) - 0.005
            high = (t + half) / (b - half) + 0.005 if b > half else math.inf
            assert low <= ratio <= high, (r, base)


def run_bench(capsys, *args: str) -> str:
    assert main(["bench", *args]) == 0
    return capsys.readouterr().out


def test_lti_suite_table_and_plot(tmp_path, capsys):
    png = tmp_path / "lti.png"
    out = run_bench(capsys, "--suite", "lti", "--mixers", "s4d,s5", "--lengths", "16,32", "--d-state", "8",
                    *TINY, "--plot", str(png))
    rows = table(out)
    base = "fft_conv (bare)"
    assert list(rows[0]) == ["mixer", "L", "fwd s", f"fwd / {base}", "fwd+bwd s", f"fwd+bwd / {base}",
                             "state floats", "peak MB"]
    assert {(r["mixer"], r["L"]) for r in rows} == {(m, L) for m in (base, "s4d", "s5") for L in ("16", "32")}
    for r in rows:
        assert seconds(r["fwd+bwd s"]) > 0
    assert all(int(r["state floats"]) > 0 for r in rows if r["mixer"] != base)
    check_ratios(rows, "mixer", base, "fwd+bwd s", f"fwd+bwd / {base}")
    assert png.read_bytes()[:8] == PNG and f"plot: {png}" in out


def test_mixers_suite_table_and_crossover(capsys):
    out = run_bench(capsys, "--suite", "mixers", "--mixers", "s4d,mamba,attention", "--lengths", "16,32", *TINY)
    rows = table(out)
    assert list(rows[0])[:6] == ["mixer", "L", "fwd s", "fwd / attention", "fwd+bwd s", "fwd+bwd / attention"]
    assert {(r["mixer"], r["L"]) for r in rows} >= {(m, L) for m in ("attention", "s4d", "mamba") for L in ("16", "32")}
    for r in rows:
        assert seconds(r["fwd+bwd s"]) > 0 and int(r["state floats"]) > 0
    check_ratios(rows, "mixer", "attention", "fwd+bwd s", "fwd+bwd / attention")
    for name in ("s4d", "mamba"):
        line = next(x for x in out.splitlines() if x.startswith(f"{name}: faster than attention from L = "))
        assert line.rsplit("= ", 1)[1] in ("16", "32", "None")


def test_selective_suite_lists_every_mode_and_the_peer(capsys):
    # Forward only: each peak is measured in a fresh interpreter (seconds apiece); the backward
    # columns are covered by tests/benchmarks/test_selective_scan_bench.py.
    assert MODES.unavailable_reason("cpp") is None, "the compiled scan is part of what the bench compares"
    out = run_bench(capsys, "--suite", "selective", "--lengths", "16", "--d-state", "4", "--forward-only", *TINY)
    rows = table(out)
    assert list(rows[0]) == ["impl", "L", "fwd s", "fwd / cpp", "fwd+bwd s", "fwd+bwd / cpp", "fwd+bwd / fwd",
                             "peak MB fwd", "peak MB fwd+bwd"]
    assert {r["impl"] for r in rows} == {"reference", "chunked", "cpp", "mambapy.pscan"}  # peers extra
    for r in rows:
        seconds(r["fwd s"])
        assert float(r["peak MB fwd"]) >= 0, "the peak is measured in a child process; '-' means it failed"
        assert r["fwd+bwd s"] == "-"
    check_ratios(rows, "impl", "cpp", "fwd s", "fwd / cpp")


def test_ssd_suite_against_transformers(capsys):
    out = run_bench(capsys, "--suite", "ssd", "--lengths", "16,32", *TINY)
    rows = table(out)
    base = "ssmkit ssd chunked"
    assert {(r["mixer"], r["L"]) for r in rows} == {(m, L) for m in (base, "transformers mamba2_chunk_scan")
                                                    for L in ("16", "32")}
    for r in rows:
        assert seconds(r["fwd s"]) > 0 and seconds(r["fwd+bwd s"]) > 0
    check_ratios(rows, "mixer", base, "fwd s", f"fwd / {base}")


def test_decode_suite_seconds_per_token_and_state(capsys):
    out = run_bench(capsys, "--suite", "decode", "--lengths", "16,32", "--d-model", "8")
    rows = table(out)
    assert list(rows[0]) == ["mixer", "context L", "ms per generated token (B=1)", "state floats"]
    assert {(r["mixer"], r["context L"]) for r in rows} == {(m, L) for m in ("mamba", "mamba2") for L in ("16", "32")}
    for r in rows:
        assert seconds(r["ms per generated token (B=1)"]) > 0
    for name in ("mamba", "mamba2"):  # a recurrent state does not grow with the context
        assert len({r["state floats"] for r in rows if r["mixer"] == name}) == 1


def test_packing_suite_one_row_per_mixer_and_length(capsys):
    out = run_bench(capsys, "--suite", "packing", "--mixers", "mamba,attention", "--lengths", "24,30",
                    "--docs", "3", *TINY)
    rows = table(out)
    assert [(r["mixer"], r["L"], r["documents"]) for r in rows] == [
        (m, L, "3") for m in ("mamba", "attention") for L in ("24", "30")]
    for r in rows:
        one, packed, padded = (seconds(r[f"{k} CPU ms"]) for k in ("one document", "packed", "padded"))
        assert packed > 0 and padded > 0
        half = 0.05  # the times print with 0.1 ms, the ratio with 0.01
        high = (packed + half) / (one - half) + 0.005 if one > half else math.inf
        assert (packed - half) / (one + half) - 0.005 <= float(r["packed / one"]) <= high, r
    assert {r["packed mode"] for r in rows if r["mixer"] == "mamba"} == {"cpp (native reset)"}
    assert {r["packed mode"] for r in rows if r["mixer"] == "attention"} == {"sdpa (documents as rows)"}
    # a mixer that cannot run at a length is a row saying why, not a crash of the whole table
    rows = table(run_bench(capsys, "--suite", "packing", "--mixers", "s4nd", "--lengths", "1100", *TINY))
    assert rows[0]["packed mode"].startswith("not run: s4nd scans a height x width = 32 x 32 image")
