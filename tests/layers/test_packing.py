"""Packed rows (cu_seqlens): bad offsets are refused at the door of every mixer, the checker's
packed rows fail for a mixer that lets documents leak into each other, and the packing helpers
(unpack / repack, Bidirectional) are exact. packed == separate for every mixer and mode is the
``packed:<mode>`` row of the registry-wide test (test_registry_equivalence.py)."""
from __future__ import annotations

import pytest
import torch

import ssmkit
from ssmkit.layers import Bidirectional, index_state
from ssmkit.layers.call import document_lengths, repack, unpack
from ssmkit.testing import check_mixer, rel_err

MIXERS = ssmkit.list_mixers()
CU = torch.tensor([0, 3, 4, 9], dtype=torch.int32)


@pytest.mark.parametrize("name", MIXERS)
def test_bad_offsets_are_refused(name):
    m = ssmkit.create_mixer(name, 8)
    x = torch.randn(1, 9, 8)
    cases = [
        (torch.tensor([1, 4, 9], dtype=torch.int32), "must start at 0"),
        (torch.tensor([0, 5, 5, 9], dtype=torch.int32), "strictly increasing.*5 then 5"),
        (torch.tensor([0, 6, 4, 9], dtype=torch.int32), "strictly increasing.*6 then 4"),
        (torch.tensor([0, 4, 8], dtype=torch.int32), "end at the row length L=9, got 8"),
        (torch.tensor([0, 4, 10], dtype=torch.int32), "end at the row length L=9, got 10"),
        (torch.tensor([0.0, 9.0]), "int32"),
        (torch.tensor([[0, 9]], dtype=torch.int32), "1-D"),
        (torch.tensor([0], dtype=torch.int32), "N \\+ 1 >= 2"),
    ]
    for cu, match in cases:
        with pytest.raises(ValueError, match=match):
            m(x, cu_seqlens=cu)
    with pytest.raises(TypeError, match="cu_seqlens must be a torch.Tensor"):
        m(x, cu_seqlens=[0, 9])
    with pytest.raises(ValueError, match="batch size 1, got B=2"):
        m(torch.randn(2, 9, 8), cu_seqlens=CU)
    with pytest.raises(ValueError, match="cu_seqlens and mask were both given"):
        m(x, mask=torch.ones(1, 9, dtype=torch.bool), cu_seqlens=CU)
    # the state has one row per document
    with pytest.raises(ValueError, match="one state row per document: 3"):
        m(x, m.init_state(1), cu_seqlens=CU)
    y, s = m(x, m.init_state(3), cu_seqlens=CU, return_state=True)
    assert y.shape == x.shape and all(t.shape[0] == 3 for t in ssmkit.layers.base._leaves(s))


def test_int64_offsets_and_one_document_are_the_plain_call():
    torch.manual_seed(0)
    m = ssmkit.create_mixer("mamba", 8).double()
    x = torch.randn(1, 9, 8, dtype=torch.float64)
    y, s = m(x, return_state=True)
    y1, s1 = m(x, cu_seqlens=torch.tensor([0, 9]), return_state=True)
    assert torch.equal(y, y1) and all(torch.equal(a, b) for a, b in zip(s, s1))


def test_unpack_repack():
    assert document_lengths(CU, 9, 1) == [3, 1, 5]
    x = torch.arange(9.0).view(1, 9, 1)
    rows = unpack(x, [3, 1, 5], fill=-1.0)
    assert rows[..., 0].tolist() == [[0, 1, 2, -1, -1], [3, -1, -1, -1, -1], [4, 5, 6, 7, 8]]
    assert torch.equal(repack(rows, torch.tensor([3, 1, 5])), x)


class _Leaky(ssmkit.layers.get_mixer_class("lru")):
    """LRU whose packed path runs the whole row as one sequence: documents leak into each other."""

    def _forward_packed(self, x, state, docs, dt, mode, need_state):
        y, final = self._forward(x, index_state(state, slice(0, 1)), ssmkit.layers.ForwardCall(mode))
        return y, index_state(final, [0] * len(docs))


def test_the_checker_fails_a_mixer_whose_documents_leak():
    from ssmkit.layers.registry import MIXERS as REGISTRY

    ssmkit.layers.register_mixer("_leaky_lru")(_Leaky)
    try:
        rows = [r for r in check_mixer("_leaky_lru", length=13) if r.check.startswith("packed:")]
        assert rows and not any(r.passed for r in rows), "\n".join(map(str, rows))
        assert all(r.error > 1e-3 for r in rows)
    finally:
        REGISTRY.unregister("_leaky_lru")


@pytest.mark.parametrize("name", ["s4d", "attention"])
def test_bidirectional_packed_is_each_document_alone(name):
    torch.manual_seed(0)
    bi = Bidirectional(name, 8).double()
    x = torch.randn(1, 9, 8, dtype=torch.float64)
    y = bi(x, cu_seqlens=CU)
    alone = torch.cat([bi(x[:, a:b]) for a, b in ((0, 3), (3, 4), (4, 9))], 1)
    assert rel_err(y, alone) < 1e-13
    assert rel_err(bi(x), alone) > 1e-3  # the documents did matter


@pytest.mark.parametrize("name", ["lru", "rwkv6"])
def test_the_checker_fails_a_native_reset_that_keeps_the_state(name, monkeypatch):
    """A family's native path that forgot the reset (here: call.zero_starts does nothing, so LRU's
    decay and RWKV-6's token shift carry across documents) fails its packed rows."""
    monkeypatch.setattr(ssmkit.layers.ForwardCall, "zero_starts", lambda self, a: a)
    rows = [r for r in check_mixer(name, length=13) if r.check.startswith("packed:")]
    assert rows and not any(r.passed for r in rows), "\n".join(map(str, rows))
    assert all("native" in r.detail for r in rows)


def test_a_native_mode_runs_the_row_in_one_pass(monkeypatch):
    """With no state in or out, a mode in packed_modes sees the packed row itself and its starts."""
    m = ssmkit.create_mixer("mamba", 8)
    seen = []
    real = type(m)._forward

    def spy(self, x, state, call):
        seen.append((tuple(x.shape), None if call.starts is None else call.starts.nonzero()[:, 1].tolist()))
        return real(self, x, state, call)

    monkeypatch.setattr(type(m), "_forward", spy)
    m(torch.randn(1, 9, 8), cu_seqlens=CU)
    m(torch.randn(1, 9, 8), cu_seqlens=CU, return_state=True)  # per-document states: documents as rows
    assert seen == [((1, 9, 8), [3, 4]), ((3, 5, 8), None)]


@pytest.mark.parametrize("name", ["s4d", "lru", "mamba", "mamba2"])
def test_packed_dt_is_each_document_with_its_own_dt(name):
    """Per-token time deltas are packed like x, on both paths (native: no state; documents as rows:
    with the final states)."""
    torch.manual_seed(0)
    m = ssmkit.create_mixer(name, 8).double()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 9, 8, generator=g, dtype=torch.float64)
    dt = torch.exp(torch.randn(1, 9, generator=g, dtype=torch.float64))
    docs = ((0, 3), (3, 4), (4, 9))
    alone = [m(x[:, a:b], dt=dt[:, a:b], return_state=True) for a, b in docs]
    y_alone = torch.cat([y for y, _ in alone], 1)
    for mode in m.modes:
        if m.dt_modes is not None and mode not in m.dt_modes:
            continue
        assert rel_err(m(x, dt=dt, cu_seqlens=CU, mode=mode), y_alone) < 1e-12, mode
        y, s = m(x, dt=dt, cu_seqlens=CU, mode=mode, return_state=True)
        assert rel_err(y, y_alone) < 1e-12, mode
        for i, (_, si) in enumerate(alone):
            for a, b in zip(ssmkit.layers.base._leaves(index_state(s, slice(i, i + 1))), ssmkit.layers.base._leaves(si)):
                assert rel_err(a, b) < 1e-12, (mode, i)
    assert rel_err(m(x, dt=dt, cu_seqlens=CU), m(x, cu_seqlens=CU)) > 1e-4, "dt had no effect"


def test_documents_as_rows_for_a_mode_without_reset_is_logged_once(caplog):
    import logging

    from ssmkit import log as ssmkit_log

    m = ssmkit.create_mixer("swa", 8)
    message = "mode 'chunked' has no native reset"
    for key in [k for k in ssmkit_log._logged if message in k and "'swa'" in k]:  # logged by an earlier test
        ssmkit_log._logged.discard(key)
    with caplog.at_level(logging.INFO, logger="ssmkit"):
        for _ in range(2):
            m(torch.randn(1, 9, 8), cu_seqlens=CU, mode="chunked")
    assert sum(message in r.getMessage() for r in caplog.records) == 1
