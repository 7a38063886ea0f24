"""Every ``ssmkit bench`` suite through the CLI on tiny shapes: the printed table has the expected
rows and columns and sane values (times positive and finite, ratios consistent with the times,
the baseline's ratio 1), and ``--plot`` writes a PNG. Speed itself is never asserted."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

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


@pytest.fixture(autouse=True)
def _results_in_tmp(tmp_path, monkeypatch):
    """``ssmkit bench`` writes results/bench-<suite>.{md,json} under the working directory."""
    monkeypatch.chdir(tmp_path)


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
                             "state floats", "peak MB (fwd)", "predicted MB", "note"]
    assert {(r["mixer"], r["L"]) for r in rows} == {(m, L) for m in (base, "s4d", "s5") for L in ("16", "32")}
    for r in rows:
        assert seconds(r["fwd+bwd s"]) > 0
    assert all(int(r["state floats"]) > 0 and float(r["predicted MB"]) > 0 for r in rows if r["mixer"] != base)
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
                             "peak MB fwd", "peak MB fwd+bwd", "predicted MB", "note"]
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
    assert list(rows[0]) == ["mixer", "context L", "ms per generated token (B=1)", "state floats", "note"]
    assert {(r["mixer"], r["context L"]) for r in rows} == {(m, L) for m in ("mamba", "mamba2") for L in ("16", "32")}
    for r in rows:
        assert seconds(r["ms per generated token (B=1)"]) > 0
    for name in ("mamba", "mamba2"):  # a recurrent state does not grow with the context
        assert len({r["state floats"] for r in rows if r["mixer"] == name}) == 1


def test_json_written_beside_the_table(tmp_path, capsys):
    out = run_bench(capsys, "--suite", "mixers", "--mixers", "s4d", "--lengths", "16", *TINY, "--forward-only",
                    "--out", str(tmp_path / "m"))
    record = json.loads((tmp_path / "m.json").read_text())
    assert record["suite"] == "mixers" and record["machine"]["cpu_count"] >= 1
    assert {(r["name"], r["length"]) for r in record["rows"]} == {("attention", 16), ("s4d", 16)}
    assert all(r["forward_s"] > 0 and r["skipped"] is None for r in record["rows"])
    md = (tmp_path / "m.md").read_text().splitlines()
    assert [x for x in md if x.startswith("|")] == [x for x in out.splitlines() if x.startswith("|")]
    assert md[0].startswith("torch ") and "s4d: faster than attention from L = " in md[-1]


def test_rows_that_cannot_fit_are_skipped_with_the_reason(capsys):
    # At D = 8 s4d's row is predicted at ~0.2 MB at L = 16 and both rows at ~1 MB at L = 2048.
    out = run_bench(capsys, "--suite", "mixers", "--mixers", "s4d", "--lengths", "16,2048", *TINY,
                    "--memory-mb", "0.3", "--forward-only")
    rows = {(r["mixer"], r["L"]): r for r in table(out)}
    for name in ("attention", "s4d"):
        skipped = rows[(name, "2048")]
        assert skipped["fwd s"] == "-" and "> the 0.3 MB limit" in skipped["note"], skipped
        assert float(skipped["predicted MB"]) > 0.3
        assert rows[(name, "16")]["note"] == "" and seconds(rows[(name, "16")]["fwd s"]) > 0
    record = json.loads(Path("results/bench-mixers.json").read_text())
    assert sum(r["skipped"] is not None for r in record["rows"]) == 2


def test_generate_suite_matches_transformers_tokens(capsys):
    """A tiny mamba / mamba2 through transformers' save_pretrained and ssmkit's load_pretrained:
    the same greedy tokens, tokens/s and the weight-bandwidth floor in the table and the JSON."""
    out = run_bench(capsys, "--suite", "generate", "--layers", "2", "--d-model", "16", "--vocab", "50",
                    "--prompt-length", "5", "--new-tokens", "4", "--repeats", "1")
    rows = {r["model"]: r for r in table(out)}
    names = ("ssmkit", "ssmkit step loop", "transformers", "ssmkit bfloat16", "ssmkit int8")
    assert set(rows) == {f"{k} {n}" for k in ("mamba", "mamba2") for n in names}
    for kind in ("mamba", "mamba2"):
        assert rows[f"{kind} transformers"]["same tokens"] == "yes"
        assert rows[f"{kind} ssmkit step loop"]["same tokens"] == "yes"
        ours = rows[f"{kind} ssmkit"]
        assert float(ours["tokens/s"]) > 0 and float(ours["floor tokens/s"]) > 0
        ratio = float(ours["tokens/s"]) / float(rows[f"{kind} transformers"]["tokens/s"])
        assert abs(float(ours["/ transformers"]) - ratio) <= 0.01 * ratio + 0.01
        # decode tokens/s is "-" when the one-token call happened to take as long (tiny shapes: noise)
        cells = ours["decode tokens/s"], rows[f"{kind} transformers"]["decode tokens/s"]
        if "-" in cells:
            assert ours["decode / transformers"] == "-"
        else:
            decode = float(cells[0]) / float(cells[1])
            assert abs(float(ours["decode / transformers"]) - decode) <= 0.01 * decode + 0.01
        for weights in ("bfloat16", "int8"):  # weight-only storage: fewer bytes, logits near float32's
            row = rows[f"{kind} ssmkit {weights}"]
            assert float(row["weight MB"]) < 0.6 * float(ours["weight MB"])
            assert 0 < float(row["logit error"]) < 0.1 and 0 <= float(row["argmax agreement"]) <= 1
            assert row["same tokens"] in ("yes", "NO")
    record = json.loads(Path("results/bench-generate.json").read_text())
    assert record["batch"] == 1 and record["d_model"] == 16 and len(record["rows"]) == 10
    for r in record["rows"]:  # decode tokens/s: the whole call's less the one-token call's
        assert r["decode_tokens_per_s"] is None or r["decode_tokens_per_s"] > 0


def test_generate_suite_skips_what_cannot_fit(capsys):
    out = run_bench(capsys, "--suite", "generate", "--mixers", "mamba", "--layers", "2", "--d-model", "16",
                    "--vocab", "50", "--prompt-length", "5", "--new-tokens", "2", "--memory-mb", "0.01")
    (row,) = table(out)
    assert row["tokens/s"] == "-" and "> the 0.01 MB limit" in row["note"], row


def test_compile_suite_rows():
    from ssmkit.benchmarks.compiled import bench_compile, format_rows

    rows = bench_compile(["s4d", "mamba"], [8], batch=1, d_model=8, backend="eager", repeats=1)
    assert [(r.name, r.length) for r in rows] == [("s4d", 8), ("mamba", 8)]
    for r in rows:
        assert r.eager_s > 0 and r.compiled_s > 0 and r.build_s > 0
        assert r.loss_err < 1e-6  # the compiled step computes the eager loss
        assert abs(r.speedup - r.eager_s / r.compiled_s) < 1e-12
    lines = table(format_rows(rows))
    assert lines[0]["speed-up"].endswith("x") and lines[1]["mixer"] == "mamba"


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
