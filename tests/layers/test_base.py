"""The SequenceMixer base class and the equivalence checker, on a tiny test-only mixer."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from ssmkit.testing import check_mixer, equivalence
from ssmkit.layers import SequenceMixer, register_mixer
from ssmkit.layers.base import MixerConfig, compact, lengths_mask, uncompact
from ssmkit.layers.registry import MIXERS
from ssmkit.ops.linear_scan import linear_scan


@dataclasses.dataclass
class EMAConfig(MixerConfig):
    bug: bool = False  # make the "scan" mode wrong on purpose, to show the checker fails


class EMA(SequenceMixer):
    """h_t = a * h_{t-1} + (1 - a) * x_t, y_t = h_t: the smallest stateful mixer."""

    Config = EMAConfig
    modes = ("reference", "scan")

    def __init__(self, d_model: int, mode: str = "auto", **cfg) -> None:
        super().__init__(d_model, mode, **cfg)
        self.logit = nn.Parameter(torch.linspace(-1, 2, d_model))

    def _forward(self, x, state, call):
        a = torch.sigmoid(self.logit).expand_as(x)
        b = (1 - a) * x
        if call.lengths is not None:
            valid = lengths_mask(call.lengths, x.shape[1])[..., None]
            a = torch.where(valid, a, torch.ones_like(a))
            b = torch.where(valid, b, torch.zeros_like(b))
        if call.mode == "scan" and self.config.bug:
            b = b * 1.001
        h, last = linear_scan(a, b, None if state is None else state[0], mode="reference")
        return h, (last,)

    def _step(self, x_t, state, dt):
        a = torch.sigmoid(self.logit)
        h = a * state[0] + (1 - a) * x_t
        return h, (h,)

    def _zero_state(self, batch_size, device, dtype):
        return (torch.zeros(batch_size, self.d_model, device=device, dtype=dtype),)

    @property
    def state_size(self) -> int:
        return self.d_model


@pytest.fixture
def ema_registered():
    register_mixer("_test_ema")(EMA)
    yield "_test_ema"
    MIXERS.unregister("_test_ema")


def test_checker_passes_a_correct_mixer(ema_registered):
    results = check_mixer(ema_registered)
    names = {r.check for r in results}
    assert {"mode:scan", "step", "split:scan", "state:scan", "mask:scan", "grad:scan"} <= names
    assert all(r.passed for r in results), [str(r) for r in results if not r.passed]


def test_checker_catches_a_wrong_mode(ema_registered):
    results = {r.check: r for r in check_mixer(ema_registered, bug=True)}
    assert not results["mode:scan"].passed
    assert not results["grad:scan"].passed
    assert "mode:reference" not in results, "the reference against itself cannot fail"
    assert results["split:reference"].passed


def test_a_mode_that_cannot_run_is_a_failing_row_naming_why(ema_registered, monkeypatch):
    monkeypatch.setattr(EMA, "mode_unavailable_reason", lambda self, m, x: "no widget (test)" if m == "scan" else None)
    results = {r.check: r for r in check_mixer(ema_registered)}
    row = results["mode:scan"]
    assert not row.passed and "cannot run: no widget (test)" in str(row) and "FAIL" in str(row)
    assert not [c for c in results if c.endswith(":scan") and c != "mode:scan"]
    assert results["step"].passed
    # Only a mode listed as needing hardware that this machine lacks is reported without failing.
    monkeypatch.setitem(equivalence.HARDWARE_MODES, "scan", "a widget")
    row = {r.check: r for r in check_mixer(ema_registered)}["mode:scan"]
    assert row.passed and row.allowed and "n/a" in str(row) and "needs a widget" in str(row)


@pytest.mark.parametrize("length, chunk", [(13, 4), (17, 4), (389, 128), (7, 2), (16, 4), (2, 1), (1, 1)])
def test_crossing_chunk_has_three_chunks_and_a_remainder_where_one_exists(length, chunk):
    assert equivalence.crossing_chunk(length) == chunk


def test_checker_lowers_chunk_fields_to_cross_chunks():
    assert equivalence.crossing_config("mamba2", 13) == {"chunk_size": 4}
    assert equivalence.crossing_config("mamba2", 389) == {"chunk_size": 32}  # its default: never raised
    assert equivalence.crossing_config("s4d", 389) == {"scan_chunk": 128}
    assert equivalence.crossing_config("lstm", 13) == {}
    rows = check_mixer("gla", length=13)
    assert {r.setting for r in rows} == {"L=13 chunk_size=4"}
    assert {r.setting for r in check_mixer("gla", length=13, chunk_size=8)} == {"L=13 chunk_size=8"}


def test_compact_roundtrip():
    x = torch.arange(2 * 6, dtype=torch.float64).reshape(2, 6, 1) + 1
    mask = torch.tensor([[0, 1, 1, 0, 1, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    xc, lengths, order = compact(x, mask)
    assert lengths.tolist() == [3, 6]
    assert xc[0, :, 0].tolist() == [2, 3, 5, 0, 0, 0]
    back = uncompact(xc, mask, order)
    assert torch.equal(back, x * mask[..., None])


@pytest.mark.parametrize(
    "bad, match",
    [
        (torch.zeros(2, 5), "rank 3"),
        (torch.zeros(2, 5, 3), "width 3"),
        (torch.zeros(2, 0, 4), "empty sequence"),
        (torch.full((2, 5, 4), float("nan")), "NaN"),
        (torch.zeros(2, 5, 4, dtype=torch.long), "floating-point"),
    ],
    ids=["rank", "width", "empty", "nan", "int"],
)
def test_bad_input_is_named(bad, match):
    with pytest.raises((ValueError, TypeError), match=match):
        EMA(4)(bad)


def test_bad_mode_mask_state_and_config_are_named():
    m = EMA(4)
    x = torch.zeros(2, 5, 4)
    with pytest.raises(ValueError, match="no mode 'fft'"):
        m(x, mode="fft")
    with pytest.raises(ValueError, match="mask must be a bool tensor"):
        m(x, mask=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="batch size 3"):
        m(x, state=m.init_state(3))
    with pytest.raises(TypeError, match="valid keys: \\['bug'\\]"):
        EMA(4, colour="red")
    with pytest.raises(TypeError, match="'bug': expected bool"):
        EMA(4, bug="yes")
    with pytest.raises(ValueError, match="d_model"):
        EMA(0)
