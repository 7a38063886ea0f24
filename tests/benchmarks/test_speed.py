"""Benchmark plumbing (not speed): tables, crossover, the decode and SSD suites on tiny shapes."""
from __future__ import annotations

import torch

import pytest

from ssmkit.benchmarks import measure
from ssmkit.benchmarks.selective_scan import bench_selective_scan
from ssmkit.benchmarks.projections import projection_fns, time_projections
from ssmkit.benchmarks.speed import BenchRow, Limits, bench_decode, bench_mixers, crossover, format_rows, rows_json
from ssmkit.benchmarks.ssd import bench_ssd
from ssmkit.layers import create_mixer, sized_for


def _rows(times: dict[int, tuple[float, float]]) -> list[BenchRow]:
    rows = []
    for L, (attn, mixer) in times.items():
        rows += [BenchRow("attention", L, attn, attn), BenchRow("m", L, mixer, mixer)]
    return rows


def test_crossover_is_first_length_from_which_always_faster():
    assert crossover(_rows({1: (1, 2), 2: (2, 1), 4: (4, 5), 8: (8, 1), 16: (16, 2)}), "m", "attention") == 8
    assert crossover(_rows({1: (1, 0.5), 2: (2, 1)}), "m", "attention") == 1
    assert crossover(_rows({1: (1, 0.5), 2: (2, 3)}), "m", "attention") is None


def test_format_rows_gives_ratios():
    table = format_rows(_rows({8: (2.0, 0.5)}), "attention")
    assert "| m | 8 | 0.5000 | 0.25 | 0.5000 | 0.25 |" in table
    table = format_rows([BenchRow("attention", 8, 1.0, 2.0), BenchRow("m", 8, None, None, 5, None, 9.0, "too big")],
                        "attention")
    assert "| m | 8 | - | - | - | - | 5 | - | 9 | skipped: too big |" in table


def test_decode_and_ssd_suites_run():
    rows = bench_decode(["s4d"], [4, 8], d_model=8, steps=2)
    assert [r.length for r in rows] == [4, 8] and all(r.forward_s > 0 for r in rows)
    rows = bench_ssd([16], batch=1, heads=2, head_dim=4, d_state=4, chunk_size=8, repeats=1)
    assert rows[0].name == "ssmkit ssd chunked" and rows[0].backward_s > 0


def test_a_row_over_the_available_memory_is_skipped(monkeypatch):
    """A fake machine with 1 MB available: rows predicted over half of it are skipped, every suite."""
    monkeypatch.setattr(measure, "available_bytes", lambda: 2**20)
    rows = bench_mixers(["s4d"], [8, 4096], batch=1, d_model=8, backward=False)
    skipped = {(r.name, r.length): r.skipped for r in rows}
    assert skipped[("attention", 8)] is None and skipped[("s4d", 8)] is None
    assert "of the 1 MB available" in skipped[("s4d", 4096)] and "attention at L = 4096" in skipped[("attention", 4096)]
    big = bench_ssd([16, 8192], batch=1, heads=2, head_dim=4, d_state=4, chunk_size=8, repeats=1)
    assert [r.skipped is None for r in big if r.name == "ssmkit ssd chunked"] == [True, False]
    scan = bench_selective_scan((16, 8192), B=1, D=4, N=2, repeats=1, backward=False, only=("chunked",))
    assert scan[0].skipped is None and scan[0].forward_s > 0 and "MB available" in scan[1].skipped
    decode = bench_decode(["s4d"], [4, 8192], d_model=8, steps=1)
    assert decode[0].skipped is None and "prefill" in decode[1].skipped


def test_a_row_over_the_time_budget_is_skipped():
    """The second length's time is predicted from the first (linear for a constant-size state)."""
    rows = bench_mixers(["s4d"], [8, 16], batch=1, d_model=8, backward=False, limits=Limits(seconds=1e-9))
    assert all(r.skipped is None for r in rows if r.length == 8)
    assert all("s budget" in r.skipped and r.forward_s is None for r in rows if r.length == 16)


def test_length_bound_mixers_are_sized_for_the_lengths_asked():
    assert sized_for("hyena", 16384) == {"max_len": 16384}
    assert sized_for("hyena", 100, max_len=4096) == {"max_len": 4096}  # never shrunk
    assert sized_for("s4d", 16384, d_state=4) == {"d_state": 4}  # not length-bound
    with pytest.raises(ValueError, match="max_len"):
        create_mixer("hyena", 8, max_len=16, filter_order=8)(torch.zeros(1, 17, 8))
    rows = bench_mixers(["hyena"], [2100], batch=1, d_model=8, backward=False)  # default max_len: 2048
    assert [r.skipped for r in rows] == [None, None] and rows[1].forward_s > 0
    # S4ND's raster runs over a height x width image (32 x 32 by default): a square that holds L
    assert sized_for("s4nd", 1100) == {"height": 34, "width": 34} and sized_for("s4nd", 1024) == {}
    assert sized_for("s4nd", 1100, height=64) == {"height": 64}  # 64 x 32 = 2,048 positions already
    with pytest.raises(ValueError, match="set height and width"):
        create_mixer("s4nd", 8, d_state=4)(torch.zeros(1, 1100, 8))
    rows = bench_mixers(["s4nd"], [1100], batch=1, d_model=8, backward=False, projections=False)
    assert rows[1].skipped is None and rows[1].forward_s > 0


def test_what_counts_as_a_projection():
    names = lambda n, **cfg: [p[0] for p in projection_fns(create_mixer(n, 16, **cfg))]  # noqa: E731
    assert names("mamba") == ["in_proj", "x_proj", "dt_proj", "out_proj"]
    assert {"q_proj", "k_proj", "v_proj", "proj_up", "proj_down", "igate", "fgate"} == set(names("mlstm"))
    assert names("lstm") == ["rnn.weight_ih_l0", "out_proj"]  # the recurrent weight_hh is not one
    assert {"B_re", "B_im", "C_re", "C_im"} <= set(names("lru"))  # declared in projection_params
    assert projection_fns(torch.nn.Sequential(torch.nn.Conv1d(4, 4, 3), torch.nn.LayerNorm(4))) == []
    assert time_projections(torch.nn.LayerNorm(4), 1, 8) == (None, None)


def test_mixer_rows_carry_their_projection_floor():
    rows = bench_mixers(["mamba"], [32], batch=1, d_model=16)
    for r in rows:
        assert r.proj_forward_s > 0 and r.proj_backward_s > 0 and r.projections
        assert r.forward_over_projections == r.forward_s / r.proj_forward_s
        assert r.backward_over_projections == r.backward_s / r.proj_backward_s
        assert r.backward_over_forward == r.backward_s / r.forward_s
    mamba = rows[1]
    assert mamba.projections == "in_proj, x_proj, dt_proj, out_proj"
    js = rows_json(rows)["rows"][1]
    assert js["proj_forward_s"] == mamba.proj_forward_s and js["fwd_over_proj"] == mamba.forward_over_projections
    table = format_rows(rows, "attention", projections=True)
    assert f"| {mamba.proj_forward_s:.4f} | {mamba.forward_over_projections:.2f} | " in table
    assert f"| {mamba.backward_over_projections:.2f} | {mamba.backward_over_forward:.2f} |" in table


def test_a_mixer_without_projections_says_so(monkeypatch):
    from ssmkit.layers.vpt import VolumePreservingTransformer

    monkeypatch.setattr(VolumePreservingTransformer, "projection_params", ())  # vpt has no nn.Linear
    rows = bench_mixers(["vpt"], [16], batch=1, d_model=8, backward=False)
    vpt = rows[1]
    assert vpt.projections == "none" and vpt.proj_forward_s is None and vpt.forward_over_projections is None
    assert vpt.forward_s > 0
    line = [x for x in format_rows(rows, "attention", projections=True).splitlines() if x.startswith("| vpt ")][0]
    assert "no projections (no nn.Linear)" in line
    assert rows_json(rows)["rows"][1]["fwd_over_proj"] is None


def test_a_row_recalibrates_its_memory_prediction_on_the_lengths_it_ran():
    """Saved bytes that grow as L^2 up to a chunk of 256 and as 256 L beyond (mLSTM-like): the
    quadratic through the probes (64, 128, 256) overshoots 32x at 8,192; after the row ran at 1,024
    the fit through the longest points predicts 8,192 exactly (the suite skipped mLSTM at 16k
    predicting 156 GB before this)."""
    from ssmkit.benchmarks.measure import CellPredictor, saved_bytes

    def build(L: int):
        x = torch.randn(L, requires_grad=True)
        T = min(L, 256)

        def run():
            a = x.view(-1, T)
            return (a[:, :, None] * a[:, None, :]).exp().sum()  # exp saves its (L / T, T, T) output
        return run

    true = saved_bytes(build(8192))
    assert true == 4 * 8192 * 256 + 4 * 8192  # the exp's output and x (mul's saved inputs)
    predictor = CellPredictor(build, grows=False)
    assert predictor.saved(8192) > 3 * true  # the probes alone: far too high
    predictor.calibrate(1024)
    assert predictor.saved(8192) == pytest.approx(true, rel=1e-9)
