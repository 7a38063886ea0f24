"""The prepared GPU benchmark (ssmkit.benchmarks.gpu, ``ssmkit bench --suite gpu``), its CPU side:
arguments, the refusal with the reason when there is no CUDA device, the inputs it builds (accepted
by each op), the bandwidth arithmetic and the tables it writes. The measurements need a GPU."""
from __future__ import annotations

import dataclasses
import importlib

import pytest
import torch

from ssmkit.benchmarks import gpu
from ssmkit.cli.main import main


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_cli_without_cuda_measures_nothing_and_says_why(no_cuda, capsys, tmp_path):
    assert main(["bench", "--suite", "gpu", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "not run: the gpu suite needs a CUDA device" in err and "nothing was measured" in err
    assert not any(tmp_path.iterdir())  # no file pretends to hold numbers


def test_run_without_cuda_raises_with_the_reason(no_cuda, tmp_path):
    with pytest.raises(RuntimeError, match="needs a CUDA device"):
        gpu.run(gpu.GpuPlan(out=tmp_path))


def test_plan_defaults_and_bad_values():
    plan = gpu.GpuPlan()
    assert plan.lengths == (2048, 8192, 32768) and plan.budget_s < 360  # the 6 minutes
    with pytest.raises(ValueError, match="lengths must be positive"):
        gpu.GpuPlan(lengths=(0,))
    with pytest.raises(ValueError, match="budget_s must be > 0"):
        gpu.GpuPlan(budget_s=0)


def test_cli_rejects_plot_for_the_gpu_suite(capsys):
    assert main(["bench", "--suite", "gpu", "--plot", "x.png"]) == 2
    assert "--plot draws the lti and mixers suites, not 'gpu'" in capsys.readouterr().err


@pytest.mark.parametrize("case", gpu.CASES, ids=lambda c: c.name)
def test_inputs_fit_their_op(case):
    """Each case's inputs, at a tiny length and width, run through its op (chunked mode on the CPU),
    and the byte count grows linearly with L."""
    small = dataclasses.replace(case, sizes={k: (2 if k in ("B", "G") else min(v, 8)) for k, v in case.sizes.items()})
    op = getattr(importlib.import_module(f"ssmkit.ops.{case.op}"), case.op)
    y, state = op(**small.make(5, "cpu", torch.Generator().manual_seed(0)), mode="chunked")
    assert torch.isfinite(y).all() and torch.isfinite(state).all()
    per_token = case.bytes_moved(2) - case.bytes_moved(1)
    assert per_token > 0 and case.bytes_moved(101) - case.bytes_moved(1) == 100 * per_token
    assert "triton" in case.modes and "chunked" in case.modes


def test_peak_bandwidth_by_device_name():
    assert gpu.peak_bandwidth("NVIDIA H200") == 4.8e12
    assert gpu.peak_bandwidth("NVIDIA H100 80GB HBM3") == 3.35e12
    assert gpu.peak_bandwidth("some other device") is None


def test_no_mamba_ssm_means_no_mamba_ssm_rows():
    assert importlib.util.find_spec("mamba_ssm") is None  # not installable without a CUDA build here
    assert gpu._peers(gpu.CASES[0]) == {}


def test_markdown_tables():
    result = {"device": "NVIDIA H200", "torch": "2.x", "triton": "3.x", "seconds": 12.0,
              "referee": [{"op": "ssd", "setting": "L=37 groups", "check": "triton:grads", "error": 3e-7,
                           "result": "PASS", "detail": ""},
                          {"op": "linear_attention", "setting": "L=37 key-decay", "check": "fla", "error": "nan",
                           "result": "n/a", "detail": "(cannot run here: ...)"}],
              "kernels": [{"kernel": "ssd", "L": 2048, "impl": "triton", "fwd_s": 1e-3, "fwd_bwd_s": 3e-3,
                           "fwd_bandwidth_gbs": 1200.0, "fwd_bandwidth_of_peak": 0.25, "rel_diff_vs_chunked": 2e-7},
                          {"kernel": "ssd", "L": 32768, "impl": "chunked", "error": "OutOfMemoryError: ..."}],
              "lm": [{"mixer": "mamba", "train_tokens_per_s": 1e5, "decode_ms_per_token_eager": 2.0,
                      "decode_ms_per_token_graph": 0.5}],
              "skipped": ["gla L=32768 fla: the time budget (330 s) was spent"]}
    md = gpu.to_markdown(result)
    assert "| ssd | 2048 | triton | 1.000 | 3.000 | 1200.000 | 25 % | 2.0e-07 |  |" in md
    assert "| ssd | 32768 | chunked | - | - | - | - | - | OutOfMemoryError: ... |" in md
    assert "| mamba | 100000.000 | 2.000 | 0.500 |  |" in md
    assert "| linear_attention | L=37 key-decay | fla | nan | n/a (cannot run here: ...) |" in md
    assert "## Not measured" in md and "time budget" in md
