"""No host sync in ``forward`` or ``step`` off the CPU, checked without a GPU: on the meta device a
tensor has no values, so any read of one on the host (``.item()``, ``bool(t)``, ``int(t)``,
``.tolist()``, the value checks) raises. A CausalLM's decode step and a backbone's forward run there
exactly as on CUDA (value checks are for CPU tensors only: ``layers.base.checks_values``)."""
from __future__ import annotations

import pytest
import torch

import ssmkit
from ssmkit.layers.base import check_finite, checks_values
from ssmkit.models import CausalLM
from ssmkit.models.backbone import BackboneConfig

V = 32
# The families that read values on the host, and why (each a shape decided by tensor values):
# a KV cache or an input history that grows to the longest row's length, or a raster position
# checked against the image; mamba's PyTorch chunked scan (forward only) picks its chunk spans from
# the values of dt, and on CUDA auto runs its triton mode instead (tested by the interpreter tests).
READS_VALUES = {
    "attention": "the KV cache grows to the longest row (layers/attention.py)",
    "hyena": "the input history grows to the longest row (layers/hyena.py)",
    "s4nd": "the raster position is checked against the image size (layers/s4nd.py)",
}
FORWARD_READS_VALUES = {**READS_VALUES, "mamba": "the chunked scan's chunk spans follow dt (ops/selective_scan/chunked.py)"}
STEP_FAMILIES = [n for n in ssmkit.list_mixers() if n not in READS_VALUES]
FORWARD_FAMILIES = [n for n in ssmkit.list_mixers() if n not in FORWARD_READS_VALUES]


def _meta_lm(name: str) -> CausalLM:
    lm = CausalLM(BackboneConfig(d_model=16, n_layers=2, mixer=name), V)
    return lm.to("meta")


def _read_on_host():
    x = torch.zeros(3, device="meta")
    return [lambda: x.sum().item(), lambda: bool(x.any()), lambda: x.tolist(), lambda: int(x.max())]


def test_meta_tensors_refuse_host_reads():
    """What the tests below rely on: every kind of host read fails on the meta device."""
    for read in _read_on_host():
        with pytest.raises((RuntimeError, NotImplementedError)):
            read()


@pytest.mark.parametrize("name", STEP_FAMILIES)
def test_decode_step_reads_no_value(name):
    lm = _meta_lm(name)
    state = lm.init_state(2, device="meta")
    token = torch.zeros(2, dtype=torch.long, device="meta")
    for _ in range(2):
        logits, state = lm.step(token, state)
    assert logits.shape == (2, V) and logits.device.type == "meta"


@pytest.mark.parametrize("name", FORWARD_FAMILIES)
def test_forward_reads_no_value(name):
    lm = _meta_lm(name)
    ids = torch.zeros(2, 9, dtype=torch.long, device="meta")
    logits, state = lm(ids, return_state=True)
    assert logits.shape == (2, 9, V)
    lm(ids, state)  # continuing from a state


# Which calls of each listed family read values: (forward from no state, forward from a state, step).
# attention and hyena start no cache without a state; mamba's step is the chunk-free recurrence.
READS = {"attention": (False, True, True), "hyena": (False, True, True), "s4nd": (True, True, True),
         "mamba": (True, True, False)}


@pytest.mark.parametrize("name", sorted(FORWARD_READS_VALUES))
def test_the_listed_exceptions_do_read_values(name):
    """The lists above stay true: a family that stops reading values moves to the checked ones."""
    lm = _meta_lm(name)
    ids = torch.zeros(2, 9, dtype=torch.long, device="meta")
    reads = []
    for run in (lambda: lm(ids), lambda: lm(ids, lm.init_state(2, device="meta")),
                lambda: lm.step(ids[:, 0], lm.init_state(2, device="meta"))):
        try:
            run()
            reads.append(False)
        except (RuntimeError, NotImplementedError):
            reads.append(True)
    assert tuple(reads) == READS[name], f"{name} reads values in (forward, forward from a state, step): {reads}"


def test_values_are_still_checked_on_cpu():
    assert checks_values(torch.zeros(1)) and not checks_values(torch.zeros(1, device="meta"))
    with pytest.raises(ValueError, match="NaN or Inf"):
        check_finite(torch.tensor([float("nan")]), "x")
    lm = CausalLM(BackboneConfig(d_model=8, n_layers=1, mixer="gla"), V)
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 32\)"):
        lm.step(torch.tensor([V]), lm.init_state(1))


def test_finite_check_by_a_sum_is_exact():
    """check_finite reads one sum first: an overflowing sum of finite entries must pass, and
    every non-finite entry (including Inf and -Inf together, whose sum is NaN) must still raise."""
    big = torch.full((4,), 3e38)  # finite, sum overflows float32
    check_finite(big, "x")
    check_finite(torch.tensor([1e308, 1e308], dtype=torch.float64), "x")
    check_finite(torch.arange(5), "x")  # integer tensors are always finite
    for bad in ([1.0, float("inf")], [float("-inf"), 2.0], [float("inf"), float("-inf")], [0.0, float("nan")]):
        with pytest.raises(ValueError, match="NaN or Inf"):
            check_finite(torch.tensor(bad), "x")
    with pytest.raises(ValueError, match="NaN or Inf"):
        check_finite(torch.tensor([[1.0, float("nan")]], requires_grad=True), "x")
