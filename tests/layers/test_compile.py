"""torch.compile on every registered mixer (docs/compile.md): every mode traces as one graph
(``fullgraph=True``: a graph break is an error) with the ``eager`` backend, and the ``auto`` mode's
forward and backward run through AOTAutograd (``aot_eager``) with the eager results. The compiled
C++ selective scan is a custom op (torch.library), so it stays inside the graph. Tiny shapes: the
cost is tracing, not arithmetic. Inductor's speed is measured by ``ssmkit bench --suite compile``.
"""
from __future__ import annotations

import pytest
import torch
import torch._dynamo as dynamo
from conftest import assert_close_rel
from torch.utils._pytree import tree_leaves

from ssmkit.layers import create_mixer, list_mixers
from ssmkit.testing.equivalence import PEER_MODES

D, L = 8, 5
# s4nd reads the sequence as the raster of a height x width image: one just large enough.
SETTINGS = {"s4nd": {"height": 2, "width": 3}}
# step() of these reads its state's values to size the next state (a KV cache or an input history
# that grows): such a step cannot be one graph; it compiles with graph breaks.
DATA_DEPENDENT_STEP = {"attention", "hyena"}


def _mixer(name: str):
    torch.manual_seed(0)
    return create_mixer(name, D, **SETTINGS.get(name, {}))


def _grads(y, x, m, w):
    params = [p for p in m.parameters() if p.requires_grad]
    return torch.autograd.grad((y * w).sum(), [x, *params], allow_unused=True)


# Triton kernels (ours and flash-linear-attention's) are GPU code: on this CPU they run only under
# Triton's interpreter, which dynamo cannot trace; no GPU has compiled them yet (docs/compile.md).
KERNEL_MODES = ("triton", *PEER_MODES)


@pytest.mark.parametrize("name", list_mixers())
def test_compiles_as_one_graph(name):
    """auto: forward and backward through aot_eager; every other mode: forward through eager; the
    step through eager. fullgraph=True throughout (a graph break raises)."""
    m = _mixer(name)
    x = torch.randn(2, L, D, requires_grad=True)
    w = torch.randn(2, L, D)
    dynamo.reset()
    y = torch.compile(lambda x: m(x), backend="aot_eager", fullgraph=True)(x)
    y0 = m(x)
    assert_close_rel(y, y0, 1e-5, f"{name} y")
    names = ["x", *(n for n, p in m.named_parameters() if p.requires_grad)]
    for n, a, b in zip(names, _grads(y, x, m, w), _grads(y0, x, m, w), strict=True):
        assert (a is None) == (b is None), n
        if a is not None:
            assert_close_rel(a, b, 1e-4, f"{name} grad {n}")

    auto = m.resolve_mode("auto", x)
    with torch.no_grad():
        for mode in m.available_modes(x):
            if mode == auto or mode in KERNEL_MODES:
                continue
            dynamo.reset()
            run = torch.compile(lambda x, mode=mode: m(x, mode=mode, return_state=True), backend="eager", fullgraph=True)
            (y, s), (y0, s0) = run(x), m(x, mode=mode, return_state=True)
            assert_close_rel(y, y0, 1e-5, f"{name} {mode} y")
            for a, b in zip(tree_leaves(s), tree_leaves(s0), strict=True):
                assert_close_rel(a, b, 1e-5, f"{name} {mode} state")

        x_t, state = torch.randn(2, D), m(torch.randn(2, 3, D), return_state=True)[1]
        dynamo.reset()
        full = name not in DATA_DEPENDENT_STEP
        y, s = torch.compile(m.step, backend="eager", fullgraph=full)(x_t, state)
        y0, s0 = m.step(x_t, state)
        assert_close_rel(y, y0, 1e-5, f"{name} step")
        if not full:  # the exception is real: dynamo finds the break
            assert dynamo.explain(m.step)(x_t, state).graph_break_count > 0
