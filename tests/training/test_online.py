"""Online learning (RTRL): the online gradient against BPTT through the whole sequence, memory, errors."""
from __future__ import annotations

import copy
import gc
import runpy
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ssmkit.testing import assert_close_rel
from ssmkit.layers import create_mixer
from ssmkit.training.online import OnlineLearner, OnlineModel, build_online_model, mse

L, B, D_IN, D, D_OUT = 13, 3, 3, 4, 2

CASES = {
    "lru": ("lru", {"d_state": 5}, True),
    "s5": ("s5", {"d_state": 8, "blocks": 2}, True),
    "s5-bilinear-noconj": ("s5", {"d_state": 6, "blocks": 2, "conj_sym": False, "discretization": "bilinear"}, True),
    "s4d": ("s4d", {"d_state": 6}, True),
    "s4d-bilinear-trainB": ("s4d", {"d_state": 6, "discretization": "bilinear", "trainable_B": True}, True),
    "dss": ("dss", {"d_state": 6}, True),
    "rglru": ("rglru", {"lru_width": 8, "num_heads": 2}, False),  # no exact encoder trace: see docs
}


def _grads(model, x, y, online: bool) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    if online:
        learner = OnlineLearner(model, update_every=0)
        learner.reset(x.shape[0])
        for t in range(x.shape[1]):
            learner.step(x[:, t], y[:, t])
        learner.flush_gradients()
    else:
        out = model(x)
        sum(mse(out[:, t], y[:, t]) for t in range(x.shape[1])).backward()
    return {k: p.grad.clone() for k, p in model.named_parameters()}


def _model_and_data(name, cfg, encoder, n_layers=1, residual=False, seed=0):
    torch.manual_seed(seed)
    d_in = D_IN if encoder else D
    model = build_online_model(name, d_in, D_OUT, D, n_layers, encoder=encoder, residual=residual, **cfg).double()
    x = torch.randn(B, L, d_in, dtype=torch.float64)
    y = torch.randn(B, L, D_OUT, dtype=torch.float64)
    return model, x, y


@pytest.mark.parametrize("case", list(CASES))
def test_online_gradient_equals_bptt(case):
    name, cfg, encoder = CASES[case]
    model, x, y = _model_and_data(name, cfg, encoder)
    ref, got = _grads(model, x, y, online=False), _grads(model, x, y, online=True)
    assert set(got) == set(ref)
    for k in ref:
        assert ref[k].abs().max() > 0, k  # every parameter is reached, so the check can fail
        assert_close_rel(got[k], ref[k], 1e-10, name=f"{case}: {k}")


def test_rglru_with_encoder_exact_except_encoder():
    model, x, y = _model_and_data("rglru", CASES["rglru"][1], encoder=True)
    ref, got = _grads(model, x, y, online=False), _grads(model, x, y, online=True)
    for k in ref:
        if not k.startswith("encoder."):
            assert_close_rel(got[k], ref[k], 1e-10, name=k)
    # the encoder gets only the instantaneous (spatial) error through linear_x and the conv
    assert F.cosine_similarity(got["encoder.weight"].flatten(), ref["encoder.weight"].flatten(), 0) < 0.999


# Residual 2-layer stacks. Cosine similarity of the approximate lower-layer gradient (encoder and
# layer 0) with BPTT's, measured on seeds 0/1/2: LRU 0.9993/0.9993/0.9992, RG-LRU 0.9951/1.0000/0.9999.
STACKS = {"lru": ({"d_state": 5}, True, 0.99), "rglru": ({"lru_width": 8, "num_heads": 2}, False, 0.98)}


@pytest.mark.parametrize("name", list(STACKS))
def test_two_layer_stack_exact_on_top_approximate_below(name):
    cfg, encoder, min_cos = STACKS[name]
    model, x, y = _model_and_data(name, cfg, encoder, n_layers=2, residual=True)
    ref, got = _grads(model, x, y, online=False), _grads(model, x, y, online=True)
    lower = [k for k in ref if k.startswith(("layers.0.", "encoder."))]
    for k in ref:
        if k not in lower:  # top layer and readout: exact
            assert_close_rel(got[k], ref[k], 1e-10, name=k)
    g = torch.cat([got[k].flatten() for k in lower])
    r = torch.cat([ref[k].flatten() for k in lower])
    cos = F.cosine_similarity(g, r, 0).item()
    assert min_cos < cos < 1 - 1e-6, f"lower-layer cosine {cos:.4f}"  # approximate, not exact


def _tensor_count() -> int:
    gc.collect()
    with warnings.catch_warnings():  # isinstance on deprecated torch module attributes warns
        warnings.simplefilter("ignore")
        return sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor))


@pytest.mark.parametrize("name", ["lru", "rglru"])
def test_memory_does_not_grow_with_stream_length(name):
    cfg, encoder = CASES[name][1], CASES[name][2]
    torch.manual_seed(0)
    model = build_online_model(name, D_IN if encoder else D, D_OUT, D, 1, encoder=encoder, **cfg)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    learner = OnlineLearner(model, opt, update_every=3)
    d_in = D_IN if encoder else D

    def run(n):
        for _ in range(n):
            learner.step(torch.randn(2, d_in), torch.randn(2, D_OUT))

    run(12)
    held, mem, count = learner.held_tensors(), learner.memory(), _tensor_count()
    run(120)
    assert learner.held_tensors() == held
    assert learner.memory() == mem
    assert _tensor_count() == count
    assert all(t.grad_fn is None for r in learner.rtrl for t in r.held().values())
    assert mem["per_stream"] == mem["state_floats_per_stream"] + mem["trace_floats_per_stream"] > 0


def test_optimizer_steps_every_k_tokens():
    torch.manual_seed(0)
    model = build_online_model("lru", D_IN, D_OUT, D, 1, d_state=4)
    learner = OnlineLearner(model, torch.optim.SGD(model.parameters(), lr=0.1), update_every=4)
    before = model.layers[0].nu_log.detach().clone()
    for t in range(3):
        learner.step(torch.randn(2, D_IN), torch.randn(2, D_OUT))
    assert torch.equal(model.layers[0].nu_log, before)
    learner.step(torch.randn(2, D_IN), torch.randn(2, D_OUT))
    assert not torch.equal(model.layers[0].nu_log, before)


def test_learning_reduces_loss_on_a_filter_stream():
    torch.manual_seed(0)
    model = build_online_model("lru", 1, 1, 8, 1, d_state=8)
    x = torch.randn(4, 300, 1)
    y = torch.zeros_like(x)
    for t in range(1, 300):  # a running average with time constant 5, variance 1
        y[:, t] = 0.8 * y[:, t - 1] + 0.6 * x[:, t]
    frozen = OnlineLearner(copy.deepcopy(model), update_every=0).observe(x, y)
    learned = OnlineLearner(model, torch.optim.Adam(model.parameters(), lr=1e-2), update_every=1).observe(x, y)
    # measured: 0.47 learned vs 0.91 frozen over the last 100 tokens
    assert learned[-100:].mean() < 0.7 * frozen[-100:].mean()


def test_unsupported_mixer_errors():
    with pytest.raises(ValueError, match=r"supported mixers: lru, s4d, dss, s5, rglru"):
        build_online_model("mamba", 3, 2, 4)
    with pytest.raises(ValueError, match=r"'gru' is not supported.*lru, s4d"):
        OnlineModel([create_mixer("gru", 4)], torch.nn.Linear(4, 2))
    with pytest.raises(ValueError, match="needs an optimizer"):
        OnlineLearner(build_online_model("lru", 3, 2, 4, d_state=2), update_every=2)
    with pytest.raises(ValueError, match="must equal d_model"):
        build_online_model("lru", 3, 2, 4, encoder=False)
    learner = OnlineLearner(build_online_model("lru", 3, 2, 4, d_state=2), update_every=0)
    learner.step(torch.randn(2, 3), torch.randn(2, 2))
    with pytest.raises(ValueError, match="batch 5 but the learner holds 2"):
        learner.step(torch.randn(5, 3), torch.randn(5, 2))


def test_demo_smoke(tmp_path, monkeypatch):
    script = Path(__file__).resolve().parents[2] / "examples" / "online_rtrl.py"
    out = tmp_path / "loss.png"
    monkeypatch.setattr(sys, "argv", [str(script), "--tokens", "24", "--streams", "2", "--d-model", "4",
                                      "--d-state", "4", "--delay", "6", "--window", "3", "--log-every", "8",
                                      "--out", str(out), "--no-plot"])
    result = runpy.run_path(str(script), run_name="__main__")
    final = result["FINAL"]
    assert set(final) == {"rtrl", "tbptt-3", "tbptt-long"}
    assert all(v == v and v > 0 for v in final.values())
