"""torch.compile of a whole CausalLM (docs/compile.md): a hybrid of the main recurrence kinds traced
as one graph (fullgraph=True) through AOTAutograd, its loss and every gradient equal to eager; the
compiled C++ selective scan (mamba's auto mode here) stays one custom-op node."""
from __future__ import annotations

import torch
import torch._dynamo as dynamo
import torch.nn.functional as F
from conftest import assert_close_rel

from ssmkit.models import BackboneConfig, CausalLM


def test_hybrid_causal_lm_trains_compiled_as_one_graph():
    torch.manual_seed(0)
    mixers = ("mamba", "s4d", "lru", "lstm", "attention")  # every mixer alone: tests/layers/test_compile.py
    lm = CausalLM(BackboneConfig(d_model=16, n_layers=len(mixers), mixer=mixers, ffn_mult=2), 11)
    ids = torch.randint(0, 11, (2, 9), generator=torch.Generator().manual_seed(1))

    def loss_fn(ids):
        return F.cross_entropy(lm(ids[:, :-1]).flatten(0, 1), ids[:, 1:].flatten())

    dynamo.reset()
    compiled = torch.compile(loss_fn, backend="aot_eager", fullgraph=True)
    results = []
    for fn in (compiled, loss_fn):
        loss = fn(ids)
        results.append((loss, torch.autograd.grad(loss, list(lm.parameters()))))
    (loss, grads), (loss0, grads0) = results
    assert_close_rel(loss, loss0, 1e-6, "loss")
    for (name, _), a, b in zip(lm.named_parameters(), grads, grads0, strict=True):
        assert_close_rel(a, b, 1e-4, f"grad {name}")
