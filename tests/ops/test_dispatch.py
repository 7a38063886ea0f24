"""The one mode dispatch of every op (ops.dispatch.Modes): auto per device and dtype, an explicit
mode that cannot run raises with its reason, a fallback is logged exactly once, options reach only
the modes that take them; every op and the layers that use them go through it."""
from __future__ import annotations

import logging

import pytest
import torch

import ssmkit
import ssmkit.log
import ssmkit.ops.selective_scan as ss
from ssmkit.ops import delta_rule, linear_attention, linear_scan, long_conv, mlstm, rwkv6, short_conv, ssd
from ssmkit.ops.dispatch import Modes


def _fast(x, scale=1.0):
    return ("fast", scale)


def _slow(x, scale=1.0):
    return ("slow", scale)


def _float32_on_cpu(x):
    if x is None:
        return None
    if x.device.type != "cpu":
        return f"needs a CPU tensor, got {x.device}"
    return None if x.dtype == torch.float32 else f"needs float32, got {x.dtype}"


MODES = Modes("toy", {"fast": _fast, "slow": _slow}, unavailable={"fast": _float32_on_cpu},
              options={"fast": ("scale",)})


@pytest.fixture
def fresh_log(monkeypatch):
    monkeypatch.setattr(ssmkit.log, "_logged", set())


def test_a_sequence_of_names_in_autos_order():
    assert list(MODES) == ["fast", "slow"] and MODES[0] == "fast" and len(MODES) == 2
    assert "slow" in MODES and "auto" not in MODES


def test_auto_picks_per_device_and_dtype(fresh_log):
    assert MODES.resolve("auto", torch.zeros(2)) == "fast"
    assert MODES.resolve("auto", torch.zeros(2, dtype=torch.float64)) == "slow"
    assert MODES.resolve("auto", torch.zeros(2, device="meta")) == "slow"
    assert MODES.available(torch.zeros(2, dtype=torch.float64)) == ["slow"]
    assert MODES.available() == ["fast", "slow"]


def test_explicit_mode_that_cannot_run_raises_with_its_reason():
    with pytest.raises(RuntimeError, match=r"toy: mode 'fast' cannot run here: needs float32, got torch.float64"):
        MODES.resolve("fast", torch.zeros(2, dtype=torch.float64))
    with pytest.raises(RuntimeError, match="mixer X: mode 'fast' cannot run here: needs a CPU tensor"):
        MODES.resolve("fast", torch.zeros(2, device="meta"), owner="mixer X")
    assert MODES.resolve("slow", torch.zeros(2, dtype=torch.float64)) == "slow"


def test_unknown_mode_lists_the_modes():
    with pytest.raises(ValueError, match=r"toy has no mode 'fft'; modes: \['auto', 'fast', 'slow'\]"):
        MODES.resolve("fft", torch.zeros(2))
    with pytest.raises(ValueError, match="no mode 'fft'"):
        MODES.unavailable_reason("fft")


def test_fallback_is_logged_exactly_once_per_reason(fresh_log, caplog):
    x64 = torch.zeros(2, dtype=torch.float64)
    with caplog.at_level(logging.WARNING, logger="ssmkit"):
        for _ in range(3):
            assert MODES.run("auto", x64, x64) == ("slow", 1.0)
        MODES.run("auto", torch.zeros(2), torch.zeros(2))  # no fallback: nothing logged
        MODES.run("slow", x64, x64)  # an explicit mode is no fallback
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["toy: auto runs 'slow' because 'fast' cannot run here: needs float32, got torch.float64"]
    with caplog.at_level(logging.WARNING, logger="ssmkit"):
        MODES.run("auto", x64.half(), x64.half())  # another dtype, another reason: logged once more
    assert len(caplog.records) == 2 and "torch.float16" in caplog.records[-1].getMessage()


def test_options_reach_only_the_modes_that_take_them():
    x = torch.zeros(2)
    assert MODES.run("fast", x, x, scale=3.0) == ("fast", 3.0)
    assert MODES.run("slow", x, x, scale=3.0) == ("slow", 1.0)


def test_a_declaration_must_name_its_modes():
    with pytest.raises(ValueError, match="unknown: \\['cpp'\\]"):
        Modes("bad", {"slow": _slow}, unavailable={"cpp": _float32_on_cpu})
    with pytest.raises(ValueError, match="non-empty"):
        Modes("bad", ())


def test_no_mode_can_run_says_why():
    only = Modes("toy", {"fast": _fast}, unavailable={"fast": _float32_on_cpu})
    with pytest.raises(RuntimeError, match="no mode can run here: fast: needs float32"):
        only.resolve("auto", torch.zeros(2, dtype=torch.float64))


OPS = {
    "linear_scan": (linear_scan.MODES, "chunked"), "long_conv": (long_conv.MODES, "fft"),
    "short_conv": (short_conv.MODES, "conv1d"), "ssd": (ssd.MODES, "chunked"),
    "linear_attention": (linear_attention.MODES, "chunked"), "delta_rule": (delta_rule.MODES, "chunked"),
    "rwkv6": (rwkv6.MODES, "chunked"), "mlstm": (mlstm.MODES, "chunked"),
}


@pytest.mark.parametrize("op", sorted(OPS))
def test_every_op_declares_its_modes_through_dispatch(op):
    modes, auto = OPS[op]
    assert isinstance(modes, Modes) and modes.owner == op and "reference" in modes
    assert modes.resolve("auto", torch.zeros(1)) == auto


def test_selective_scan_falls_back_per_device_and_dtype(monkeypatch, fresh_log, caplog):
    monkeypatch.setattr(ss, "cpp_unavailable_reason", lambda: None)
    assert ss.MODES.resolve("auto", torch.zeros(1, 1, 1)) == "cpp"
    with caplog.at_level(logging.WARNING, logger="ssmkit"):
        assert ss.MODES.resolve("auto", torch.zeros(1, 1, 1, dtype=torch.bfloat16)) == "chunked"
        assert ss.MODES.resolve("auto", torch.zeros(1, 1, 1, dtype=torch.bfloat16)) == "chunked"
    assert len(caplog.records) == 1 and "torch.bfloat16 on cpu" in caplog.records[0].getMessage()


def test_mamba_asks_its_op(monkeypatch, fresh_log, caplog):
    """The layer's modes are the op's: no fallback logic of its own, one log line, the op's reason."""
    m = ssmkit.create_mixer("mamba", 8)
    assert m.modes is ss.MODES
    monkeypatch.setattr(ss, "cpp_unavailable_reason", lambda: "no compiler (test)")
    x = torch.randn(1, 4, 8)
    # triton too when its interpreter is on (the suite on a CPU); auto never takes it for a CPU tensor
    assert [mode for mode in m.available_modes(x) if mode != "triton"] == ["chunked", "reference"]
    with caplog.at_level(logging.WARNING, logger="ssmkit"):
        y = m(x)
        m(x)
    assert [r.getMessage().count("no compiler (test)") for r in caplog.records] == [1]
    assert "Mamba" in caplog.records[0].getMessage()
    assert torch.equal(y, m(x, mode="chunked"))
    with pytest.raises(RuntimeError, match="Mamba: mode 'cpp' cannot run here: no compiler"):
        m(x, mode="cpp")


def test_auto_picks_triton_for_cuda_tensors_and_never_for_cpu_ones():
    """The Triton ops' choice, read from the inputs' device and dtype only: a stand-in with a CUDA
    device (no GPU needed) gets ``triton``; a CPU tensor never does, interpreter or not."""
    from types import SimpleNamespace

    from ssmkit.ops import selective_scan as ss_op

    cuda_like = SimpleNamespace(device=torch.device("cuda", 0), dtype=torch.float32)
    cpu = torch.zeros(1, 1, 1)
    for modes in (linear_attention.MODES, ssd.MODES, ss_op.MODES):
        assert modes.resolve("auto", cuda_like) == "triton"
        assert modes.resolve("auto", cpu) != "triton"
    assert linear_attention.MODES.resolve("auto", SimpleNamespace(device=torch.device("cuda"),
                                                                  dtype=torch.bfloat16)) == "chunked"
