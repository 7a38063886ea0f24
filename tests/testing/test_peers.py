"""ssmkit.testing.peers (``ssmkit check --peers``): the Triton modes, ssmkit's and flash-linear-
attention's, refereed in float32 against the float64 reference, interpreted on the CPU; a wrong or
crashing kernel is reported as a failure, one that cannot run is n/a with its reason."""
from __future__ import annotations

import pytest
import torch

import ssmkit.ops.linear_attention as la
from ssmkit.cli.main import main
from ssmkit.testing.peers import check_peers

pytestmark = pytest.mark.usefixtures("triton_first_config")


def test_every_kernel_is_refereed():
    rows = check_peers(length=21)
    failed = [str(r) for r in rows if not r.passed]
    assert not failed, "\n".join(failed)
    ran = {(r.mixer, r.check) for r in rows if not r.allowed}
    for op in ("linear_attention", "ssd", "selective_scan"):
        assert {(op, "triton:out+state"), (op, "triton:grads")} <= ran
    # fla's fused recurrent kernels run interpreted, for every decay kind; its chunk kernels cannot
    assert sum(r.check == "fla_recurrent:grads" and not r.allowed for r in rows) == 4
    fla = [r for r in rows if r.check == "fla"]
    assert fla and all(r.allowed and "Triton interpreter" in r.detail for r in fla)


def _drop_decay(q, k, v, log_decay=None, initial_state=None, scale=1.0):
    return la.linear_attention_reference(q, k, v, None, initial_state, scale)


def _crash(*args, **kwargs):
    raise RuntimeError("illegal memory access (test)")


@pytest.mark.parametrize("broken,expected", [(_drop_decay, "fla_recurrent:out+state"), (_crash, "fla_recurrent")])
def test_a_wrong_or_crashing_peer_is_reported(monkeypatch, broken, expected):
    monkeypatch.setitem(la.MODES._fns, "fla_recurrent", broken)
    rows = [r for r in check_peers(["linear_attention"], length=9) if r.check.startswith("fla_recurrent")]
    bad = [r for r in rows if not r.passed]
    assert bad and {r.check for r in bad} >= {expected}
    if broken is _crash:
        assert all("raised RuntimeError: illegal memory access" in r.detail for r in bad)


def test_cli_check_peers(capsys):
    assert main(["check", "--peers", "ssd", "--lengths", "19"]) == 0
    out = capsys.readouterr().out
    assert "ssd" in out and "triton:grads" in out and "ALL PASS" in out and "float32" in out


def test_unknown_op_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown op 'no_such_op'"):
        check_peers(["no_such_op"])


def test_inputs_move_to_the_device():
    rows = check_peers(["selective_scan"], length=5, device=torch.device("cpu"))
    assert all(r.passed for r in rows)
