"""torch.export of a CausalLM's forward and decode step, ONNX export of the step run by onnxruntime
(models.export, docs/compile.md): the exported programs give the model's outputs and states; what
cannot be exported is refused naming the layer, mixer, mode and reason."""
from __future__ import annotations

import pytest
import torch
from conftest import assert_close_rel

from ssmkit.models import BackboneConfig, CausalLM
from ssmkit.models.export import (ExportError, export_forward, export_step, export_step_onnx, state_from_leaves,
                                  state_leaves)

V = 13


def _lm(mixers, **cfg) -> CausalLM:
    torch.manual_seed(0)
    mixers = tuple(mixers)
    bb = BackboneConfig(d_model=16, n_layers=len(mixers), mixer=mixers, mixer_cfg=cfg, ffn_mult=2)
    return CausalLM(bb, V).eval()


def _ids(B=2, L=7, seed=1):
    return torch.randint(0, V, (B, L), generator=torch.Generator().manual_seed(seed))


def _assert_states(got, want, tol, what):
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        assert_close_rel(a, b, tol, f"{what} state leaf {i}")


# every recurrence kind: selective scans (C++ op in the forward), SSD, a diagonal complex LTI SSM,
# a complex diagonal RNN, the fused LSTM, chunked linear attention, RG-LRU, a window, softmax attention
FORWARD = ("mamba", "mamba2", "s4d", "lru", "lstm", "gla", "rglru", "swa", "attention")


def test_exported_forward_equals_the_model():
    lm = _lm(FORWARD)
    ids = _ids()
    program = export_forward(lm, ids)
    assert any("selective_scan_cpp_forward" in str(n.target) for n in program.graph.nodes)  # one custom op node
    logits, *leaves = program.module()(ids)
    with torch.no_grad():
        ref, state = lm(ids, return_state=True)
    assert_close_rel(logits, ref, 1e-6, "logits")
    _assert_states(leaves, state_leaves(state), 1e-6, "forward")


def test_exported_step_continues_a_prefilled_state():
    lm = _lm(FORWARD[:-1])  # attention's step has no fixed-shape graph (tested below)
    ids = _ids()
    program = export_step(lm, batch_size=2).module()
    with torch.no_grad():
        _, state = lm(ids, return_state=True)
        leaves = state_leaves(state)
        for t in range(3):
            token = _ids(2, 1, seed=10 + t)[:, 0]
            logits, *leaves = program(token, *leaves)
            ref, state = lm.step(token, state)
            assert_close_rel(logits, ref, 1e-6, f"step {t} logits")
            _assert_states(leaves, state_leaves(state), 1e-6, f"step {t}")
    assert state_leaves(state_from_leaves(state, leaves))[0] is leaves[0]


def test_onnx_step_runs_in_onnxruntime(tmp_path):
    ort = pytest.importorskip("onnxruntime", reason="ONNX export is checked with onnxruntime (the test extra)")
    pytest.importorskip("onnxscript", reason="torch.onnx.export(dynamo=True) needs onnxscript (the test extra)")
    lm = _lm(("mamba", "mamba2", "rglru", "gla", "lstm"))
    path = export_step_onnx(lm, tmp_path / "step.onnx", batch_size=2)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    assert names[0] == "token" and names[1] == "state_0"
    with torch.no_grad():
        _, state = lm(_ids(), return_state=True)
        leaves = [t.numpy() for t in state_leaves(state)]
        for t in range(3):
            token = _ids(2, 1, seed=20 + t)[:, 0]
            logits, *leaves = session.run(None, dict(zip(names, [token.numpy(), *leaves])))
            ref, state = lm.step(token, state)
            assert_close_rel(torch.from_numpy(logits), ref, 1e-5, f"onnx step {t} logits")
            _assert_states([torch.from_numpy(x) for x in leaves], state_leaves(state), 1e-5, f"onnx step {t}")


def test_what_cannot_be_exported_is_named():
    with pytest.raises(ExportError, match=r"step of this CausalLM: layer 1 \(attention, mode 'sdpa'\): its KV cache grows"):
        export_step(_lm(("mamba", "attention")))
    with pytest.raises(ExportError, match=r"layer 0 \(hyena, mode 'fft'\): its input history grows"):
        export_step(_lm(("hyena",)))
    with pytest.raises(ExportError, match=r"layer 0 \(lru, mode 'chunked'\): its state is complex-valued"):
        export_step_onnx(_lm(("lru",)), "unused.onnx")
    with pytest.raises(ExportError, match=r"layer 0 \(vpt, mode 'solve'\): its Cayley transform solves"):
        export_step_onnx(_lm(("vpt",)), "unused.onnx")
