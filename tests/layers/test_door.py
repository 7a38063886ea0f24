"""Validation at the door, the same for every registered mixer (issue 12, item 5): a state from
another mixer, width, dtype or device is refused naming the expected structure; one input dtype
policy; empty batches (B = 0) in every mode, through step and backward; config values of the wrong
type and sizes that cannot fit in memory refused before anything is allocated."""
from __future__ import annotations

import dataclasses
import typing

import pytest
import torch

import ssmkit
from ssmkit import runtime
from ssmkit.layers import get_mixer_class
from ssmkit.layers.base import _leaves
from ssmkit.layers.registry import weight_bytes
from ssmkit.layers.state import map_state

MIXERS = ssmkit.list_mixers()
D = 8


def _signature(state) -> list[tuple]:
    return [(tuple(t.shape), t.dtype) for t in _leaves(state)]


def _other_state(name: str) -> tuple[str, object]:
    """The zero state of the next mixer (in registry order) whose state looks different."""
    own = _signature(ssmkit.create_mixer(name, D).init_state(2))
    i = MIXERS.index(name)
    for other in MIXERS[i + 1:] + MIXERS[:i]:
        state = ssmkit.create_mixer(other, D).init_state(2)
        if _signature(state) != own:
            return other, state
    raise AssertionError(f"every mixer has the state of {name}")


def _refused(m, state, match: str) -> None:
    """Both doors, forward(state=...) and step(x_t, state), refuse ``state`` naming what was expected."""
    expected = rf"the state does not fit: {match}.*Expected .*\(B, .*; got "
    with pytest.raises(ValueError, match=expected):
        m(torch.zeros(2, 3, D), state)
    with pytest.raises(ValueError, match=expected):
        m.step(torch.zeros(2, D), state)


@pytest.mark.parametrize("name", MIXERS)
def test_a_state_of_another_mixer_is_refused_naming_the_expected_structure(name):
    other, state = _other_state(name)
    _refused(ssmkit.create_mixer(name, D), state, "")


@pytest.mark.parametrize("name", MIXERS)
def test_a_state_of_another_size_is_refused(name):
    m = ssmkit.create_mixer(name, D)
    other = ssmkit.create_mixer(name, 2 * D).init_state(2)
    if _signature(other) == _signature(m.init_state(2)):
        # The state holds modes, not channels (LRU, S5): a wider mixer's state fits, another d_state does not.
        m(torch.zeros(2, 3, D), other)
        other = ssmkit.create_mixer(name, D, d_state=2 * m.config.d_state).init_state(2)
    _refused(m, other, "tensor 0 has shape")


@pytest.mark.parametrize("name", MIXERS)
def test_a_state_of_another_dtype_is_refused(name):
    m = ssmkit.create_mixer(name, D)
    _refused(m, m.init_state(2, dtype=torch.float64), r"tensor 0 is (float64|complex128), expected (float32|complex64)")


@pytest.mark.parametrize("name", MIXERS)
def test_a_state_on_another_device_is_refused(name):
    m = ssmkit.create_mixer(name, D)
    _refused(m, m.init_state(2, device="meta"), "tensor 0 is on meta, expected cpu")
    with pytest.raises(ValueError, match="x is on meta but the parameters .* are on cpu"):
        m(torch.zeros(2, 3, D, device="meta"))


@pytest.mark.parametrize("name", MIXERS)
def test_a_state_of_a_carried_sequence_is_accepted_and_a_wrong_batch_is_named(name):
    """What the check accepts: the state a forward returns (a KV cache or history grown to T), in
    float32 and float64; only its batch must match the input's."""
    for dtype in (torch.float32, torch.float64):
        m = ssmkit.create_mixer(name, D).to(dtype)
        _, s = m(torch.randn(2, 70, D, dtype=dtype), return_state=True)
        m(torch.randn(2, 3, D, dtype=dtype), s)
        m.step(torch.randn(2, D, dtype=dtype), s)
    with pytest.raises(ValueError, match="state has batch size 2 but the input has batch size 3"):
        m.step(torch.randn(3, D, dtype=dtype), s)


GROWING = [n for n in MIXERS if ssmkit.create_mixer(n, D)._growing_state_dims()]


@pytest.mark.parametrize("name", GROWING)
def test_a_growing_state_may_have_any_length_shared_by_its_tensors(name):
    """A KV cache or an input history holds T tokens, any T, but one T for all of its tensors."""
    m = ssmkit.create_mixer(name, D)
    _, s = m(torch.randn(2, 70, D), return_state=True)
    grown = m._growing_state_dims()  # {tensor index: the dim of T}

    def longer(which: set[int]):
        items = [torch.cat([t, torch.zeros_like(t)], dim=grown[i]) if i in which else t
                 for i, t in enumerate(_leaves(s))]
        return type(s)(*items) if hasattr(s, "_fields") else tuple(items)

    y, _ = m.step(torch.zeros(2, D), longer(set(grown)))  # T doubled in every growing tensor
    assert y.shape == (2, D)
    _refused(m, longer({max(grown)}), f"tensor {max(grown)} has shape")


@pytest.mark.parametrize("name", MIXERS)
def test_input_dtype_policy(name):
    """x must have the parameters' dtype, or the autocast dtype under autocast: anything else is one
    TypeError naming both dtypes and the fixes, in forward and step alike."""
    m = ssmkit.create_mixer(name, D)
    x = torch.randn(2, 5, D)
    with pytest.raises(TypeError, match=r"x has dtype torch.float64 but the parameters .* are torch.float32.*\.double\(\)"):
        m(x.double())
    with pytest.raises(TypeError, match=r"x_t has dtype torch.float64 but the parameters .* are torch.float32"):
        m.step(x[:, 0].double(), m.init_state(2))
    for low in (torch.bfloat16, torch.float16):
        with pytest.raises(TypeError, match=rf"x has dtype {low} .* are torch.float32.*torch.autocast\('cpu', dtype={low}\)"):
            m(x.to(low))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert m(x.bfloat16()).dtype == torch.bfloat16  # a stack hands a layer its bf16 output
    assert m(x).dtype == torch.float32
    assert m.double()(x.double()).dtype == torch.float64
    with pytest.raises(TypeError, match=r"x has dtype torch.float32 but the parameters .* are torch.float64"):
        m(x)


def _state_grad_leaves(state) -> list[torch.Tensor]:
    return [t for t in _leaves(state) if t.requires_grad]


@pytest.mark.parametrize("name", MIXERS)
def test_an_empty_batch_runs_in_every_mode(name):
    """B = 0: outputs and states have the shapes of a non-empty call (a KV cache's length too) in
    every mode, with or without a state and a mask; step and init_state(0); gradients flow."""
    m = ssmkit.create_mixer(name, D)
    x = torch.randn(1, 5, D)
    _, s1 = m(x, return_state=True)
    want = [(0, *t.shape[1:]) for t in _leaves(s1)]
    assert [tuple(t.shape) for t in _leaves(m.init_state(0))] == [(0, *t.shape[1:]) for t in _leaves(m.init_state(1))]
    for mode in m.available_modes(x):
        x0 = torch.zeros(0, 5, D, requires_grad=True)
        s0 = map_state(lambda t: t[:0].detach().requires_grad_(t.is_floating_point() or t.is_complex()), s1)
        y, s = m(x0, s0, mask=torch.ones(0, 5, dtype=torch.bool), return_state=True, mode=mode)
        assert y.shape == (0, 5, D) and y.dtype == torch.float32
        assert [tuple(t.shape) for t in _leaves(s)] == want, mode
        assert m(x0, mode=mode).shape == (0, 5, D)
        m.zero_grad(set_to_none=True)
        loss = y.sum() + sum(t.real.sum() for t in _leaves(s) if t.requires_grad)
        inputs = [x0, *_state_grad_leaves(s0)]  # positions and lengths carry no gradient: None
        grads = torch.autograd.grad(loss, inputs, retain_graph=True, allow_unused=True)
        assert grads[0].shape == x0.shape
        assert all(g is None or g.shape == t.shape for g, t in zip(grads, inputs))
        loss.backward()
        assert all(p.grad is None or not p.grad.any() for p in m.parameters()), "an empty batch moved a weight"
    y_t, s = m.step(torch.zeros(0, D), m.init_state(0))
    assert y_t.shape == (0, D) and [tuple(t.shape)[0] for t in _leaves(s)] == [0] * len(want)


def _wrong_values(tp) -> list:
    """Values that do not have the annotated type ``tp`` (None is allowed where tp is optional)."""
    args = set(typing.get_args(tp)) or {tp}
    if int in args:
        return [8.5, "8", True]
    if float in args:
        return ["0.1", True]
    if bool in args:
        return [1, "yes"]
    if str in args:
        return [3]
    return [object()]


@pytest.mark.parametrize("name", MIXERS)
def test_config_values_of_the_wrong_type_are_named(name):
    cls = get_mixer_class(name).Config
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        for bad in _wrong_values(hints[field.name]):
            with pytest.raises(TypeError, match=rf"'{field.name}': expected .*, got {bad!r}"):
                ssmkit.create_mixer(name, D, **{field.name: bad})


@pytest.mark.parametrize("name", MIXERS)
def test_the_size_check_counts_every_family_on_the_meta_device(name):
    """create_mixer refuses sizes that cannot fit only if it can count them: every family builds on
    the meta device, and the count equals the real module's bytes."""
    m = ssmkit.create_mixer(name, D)
    real = sum(t.numel() * t.element_size() for t in [*m.parameters(), *m.buffers()])
    assert weight_bytes(name, D) == real > 0


def test_a_size_that_cannot_fit_is_refused_before_anything_is_allocated(monkeypatch):
    need = weight_bytes("mamba", 64, d_state=32)
    built_on = []
    cls = get_mixer_class("mamba")
    init = cls.__init__

    def recording_init(self, *args, **kwargs):
        built_on.append(torch.get_default_device().type)
        init(self, *args, **kwargs)

    monkeypatch.setattr(cls, "__init__", recording_init)
    monkeypatch.setattr(runtime, "available_memory", lambda device: need - 1)
    with pytest.raises(ValueError, match=r"mixer 'mamba' with d_model=64, d_state=32 needs .* KiB for its "
                                         r"parameters and buffers, but .* KiB of memory is available on cpu"):
        ssmkit.create_mixer("mamba", 64, d_state=32)
    assert set(built_on) <= {"meta"}, "a real build started before the refusal"
    monkeypatch.setattr(runtime, "available_memory", lambda device: need)
    assert ssmkit.create_mixer("mamba", 64, d_state=32).config.d_state == 32
    assert built_on[-1] == "cpu"
    monkeypatch.setattr(runtime, "available_memory", lambda device: None)  # unknown: nothing checked
    ssmkit.create_mixer("mamba", 64, d_state=32)


def test_the_issue_sizes_are_refused_naming_them(monkeypatch):
    monkeypatch.setattr(runtime, "available_memory", lambda device: 2**36)  # a 64 GiB machine
    with pytest.raises(ValueError, match=r"mixer 'mamba' with d_model=1000000 needs 22.7 TiB .* but 64 GiB"):
        ssmkit.create_mixer("mamba", d_model=10**6)
    with pytest.raises(ValueError, match=r"with d_model=8, d_state=1000000000 needs 179 GiB .* but 64 GiB"):
        ssmkit.create_mixer("mamba", 8, d_state=10**9)
