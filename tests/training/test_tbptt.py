"""Truncated BPTT: exact when the chunk covers the sequence, exact forward with carried state."""
import pytest
import torch

from conftest import assert_close_rel
from ssmkit.tasks.base import Batch
from ssmkit.training import TrainConfig, fit
from ssmkit.training.tbptt import forward_backward, loss_weight

from .tiny import QUIET, TinyTask, tiny_model


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.fixture
def lm():
    task = TinyTask("lm", n=4, length=11)
    mask = torch.ones(4, 11, dtype=torch.bool)
    mask[1, 7:] = False  # a padded row: the chunk after position 7 holds no real token of it
    return task, Batch(task.x, task.y, mask)


@pytest.mark.parametrize("mixer", ["s4d", "mamba"])
def test_chunk_covering_the_length_equals_plain_bptt(lm, mixer):
    task, batch = lm
    model = tiny_model(task, mixer=mixer).double()
    task.loss(model(batch.inputs, mask=batch.mask), batch).backward()
    plain = _grads(model)
    model.zero_grad()
    forward_backward(task, model, batch, chunk=11, scale=1 / loss_weight(task, batch))
    chunked = _grads(model)
    assert plain.keys() == chunked.keys() and len(plain) > 3
    for name in plain:
        assert_close_rel(chunked[name], plain[name], 1e-12, name)


@pytest.mark.parametrize("mixer", ["s4d", "mamba"])
def test_short_chunks_carry_the_state_exactly(lm, mixer):
    task, batch = lm
    model = tiny_model(task, mixer=mixer).double()
    full = model(batch.inputs, mask=batch.mask)
    loss_full = task.loss(full, batch)
    loss_full.backward()
    plain = _grads(model)
    model.zero_grad()
    w = loss_weight(task, batch)
    total, kept = forward_backward(task, model, batch, chunk=3, scale=1 / w, keep_outputs=True)
    assert [part.inputs.shape[1] for part, _ in kept] == [3, 3, 3, 2]
    outputs = torch.cat([out for _, out in kept], dim=1)
    assert_close_rel(outputs[batch.mask], full[batch.mask].detach(), 1e-12, "chunked forward")
    assert_close_rel(total / w, loss_full.detach(), 1e-12, "summed chunk losses")
    # the gradient is truncated at chunk boundaries, so it must differ from the full one
    truncated = _grads(model)
    assert max((truncated[n] - plain[n]).abs().max().item() for n in plain) > 1e-6


def test_fit_with_tbptt_learns_and_rejects_pooled_tasks():
    task = TinyTask("lm", n=4, length=12)
    model = tiny_model(task, d_model=16)
    before = fit(task, tiny_model(task, d_model=16), TrainConfig(steps=1, lr=1e-9, **QUIET), log=lambda s: None)
    after = fit(task, model, TrainConfig(steps=60, batch_size=4, lr=3e-2, tbptt=5, **QUIET), log=lambda s: None)
    assert after["test_bits_per_token"] < before["test_bits_per_token"] - 0.3
    with pytest.raises(ValueError, match="'tbptt'.*per-position"):
        fit(TinyTask("classify"), tiny_model(TinyTask("classify")), TrainConfig(steps=1, tbptt=3, **QUIET),
            log=lambda s: None)


@pytest.mark.parametrize("mixer", ["s4d", "lru"])
def test_chunks_cut_the_time_deltas_with_the_inputs(lm, mixer):
    task, batch = lm
    dt = torch.exp(torch.randn(batch.inputs.shape, generator=torch.Generator().manual_seed(1)))
    batch = Batch(batch.inputs, batch.targets, batch.mask, dt.double())
    model = tiny_model(task, mixer=mixer).double()
    full = model(batch.inputs, mask=batch.mask, dt=batch.dt).detach()
    assert (full - model(batch.inputs, mask=batch.mask).detach())[batch.mask].abs().max() > 1e-3
    _, kept = forward_backward(task, model, batch, chunk=4, scale=1.0, keep_outputs=True)
    assert [part.dt.shape[1] for part, _ in kept] == [4, 4, 3]
    outputs = torch.cat([out for _, out in kept], dim=1)
    assert_close_rel(outputs[batch.mask], full[batch.mask], 1e-12, "chunked forward with dt")
