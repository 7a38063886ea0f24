"""Packed rows through the models (docs/packing.md): a CausalLM over a packed row equals each
document run alone (logits, per-document states, gradients); what cannot take them says so.
doc_lm's packing loader and training on it: tests/tasks/test_packing.py."""
from __future__ import annotations

import pytest
import torch

from ssmkit.layers.base import _leaves
from ssmkit.models import BackboneConfig, CausalLM
from ssmkit.models.sequence_model import SequenceModel
from ssmkit.tasks import Batch
from ssmkit.tasks.packing import packed_batch
from ssmkit.testing import rel_err
from ssmkit.testing.equivalence import _grown_err
from ssmkit.training.distributed import Dist, shard
from ssmkit.training.tbptt import time_chunks

V = 13
DOCS = ((0, 4), (4, 5), (5, 16))


def _lm() -> CausalLM:
    torch.manual_seed(0)
    cfg = BackboneConfig(d_model=8, n_layers=3, mixer="mamba,attention,hyena", ffn_mult=2,
                         mixer_cfg={"hyena": {"max_len": 64}})
    return CausalLM(cfg, V).double()


def test_causal_lm_packed_equals_each_document_alone():
    lm = _lm()
    ids = torch.randint(0, V, (1, 16), generator=torch.Generator().manual_seed(0))
    cu = torch.tensor([0, 4, 5, 16], dtype=torch.int32)
    logits, state = lm(ids, cu_seqlens=cu, return_state=True)
    loss = logits.logsumexp(-1).sum()
    g_packed = torch.autograd.grad(loss, list(lm.parameters()))
    alone, loss = [], 0
    for i, (a, b) in enumerate(DOCS):
        out, s = lm(ids[:, a:b], return_state=True)
        alone.append(out)
        loss = loss + out.logsumexp(-1).sum()
        for layer, (sp, sa) in enumerate(zip(state, s)):  # per-document states, layer by layer
            row = [t[i : i + 1] for t in _leaves(sp)]
            err = max(_grown_err(p, q) for p, q in zip(row, _leaves(sa)))
            assert err < 1e-12, f"document {i} layer {layer}: {err:.2e}"
    assert rel_err(logits, torch.cat(alone, 1)) < 1e-12
    g_alone = torch.autograd.grad(loss, list(lm.parameters()))
    assert max(rel_err(p, q) for p, q in zip(g_packed, g_alone)) < 1e-11
    assert rel_err(lm(ids), logits) > 1e-3, "the boundaries did matter"


def test_pooled_heads_refuse_packed_rows():
    model = SequenceModel(BackboneConfig(d_model=8, n_layers=1), "classify", 3, vocab_size=V)
    with pytest.raises(ValueError, match="needs a per-position head.*'classify'"):
        model(torch.zeros(1, 5, dtype=torch.long), cu_seqlens=torch.tensor([0, 2, 5], dtype=torch.int32))


def test_training_refuses_what_it_cannot_do_with_a_packed_batch():
    b = packed_batch(torch.arange(20), torch.tensor([0, 8]), torch.tensor([6, 5]))
    with pytest.raises(ValueError, match="tbptt=0"):
        time_chunks(b, 4)
    with pytest.raises(ValueError, match="cannot be split over 2 processes"):
        shard(b, Dist(rank=0, world=2))
    with pytest.raises(ValueError, match="no mask"):
        Batch(b.inputs, b.targets, torch.ones_like(b.inputs, dtype=torch.bool), cu_seqlens=b.cu_seqlens)
