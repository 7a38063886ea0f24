"""Activation checkpointing (TrainConfig.checkpoint_activations): equal gradients, less saved activation memory."""
import pytest
import torch
import torch.nn.functional as F

from conftest import assert_close_rel
from ssmkit.models import BackboneConfig
from ssmkit.models.lm import CausalLM
from ssmkit.training import TrainConfig, fit
from ssmkit.training.loop import checkpoint_blocks

from .tiny import QUIET, TinyTask, tiny_model


def lm(dropout: float = 0.1) -> CausalLM:
    torch.manual_seed(0)
    cfg = BackboneConfig(d_model=16, n_layers=4, mixer=("mamba", "gla", "s4d", "mamba"), ffn_mult=2, dropout=dropout)
    return CausalLM(cfg, 7).double()


def grads_and_saved_bytes(model: CausalLM, ids: torch.Tensor) -> tuple[list[torch.Tensor], int]:
    """Parameter gradients of one step, and the bytes autograd holds for the backward pass when the
    forward ends (by storage; a checkpointed block holds its input only, and what it recomputes
    during the backward pass lives one block at a time)."""
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    torch.manual_seed(1)  # the same dropout masks in both runs
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = F.cross_entropy(model(ids).flatten(0, 1), ids.flatten())
    outside = sum(saved.values())
    loss.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    return grads, outside


def test_checkpointed_blocks_give_the_same_gradients_and_keep_fewer_activations():
    ids = torch.randint(0, 7, (2, 64), generator=torch.Generator().manual_seed(0))
    model = lm()
    plain, plain_bytes = grads_and_saved_bytes(model, ids)
    checkpoint_blocks(model, True)
    recomputed, ckpt_bytes = grads_and_saved_bytes(model, ids)
    for (name, _), a, b in zip(model.named_parameters(), recomputed, plain):
        assert_close_rel(a, b, 1e-12, name)
    # only each block's input (and the embedding / head) stays saved: measured 3,142,792 -> 124,936 bytes (25x) here
    assert ckpt_bytes * 3 < plain_bytes, (ckpt_bytes, plain_bytes)
    model.eval()
    with torch.no_grad():  # no autograd, nothing to recompute: the same forward
        assert torch.equal(model(ids), (checkpoint_blocks(model, False), model(ids))[1])


def test_fit_with_checkpoint_activations_trains_to_the_same_weights(tmp_path):
    task = TinyTask("lm", n=8)
    cfg = TrainConfig(steps=3, batch_size=4, lr=1e-2, **QUIET)
    plain = tiny_model(task, dropout=0.1)
    fit(task, plain, cfg, log=lambda s: None)
    ckpt = tiny_model(task, dropout=0.1)
    fit(task, ckpt, TrainConfig(steps=3, batch_size=4, lr=1e-2, checkpoint_activations=True, **QUIET),
        log=lambda s: None)
    assert ckpt.backbone.checkpoint_blocks
    for (name, a), b in zip(ckpt.state_dict().items(), plain.state_dict().values()):
        assert_close_rel(a, b, 1e-6, name)


def test_checkpoint_activations_needs_a_residual_stack():
    with pytest.raises(ValueError, match="checkpoint_activations.*no residual stack"):
        checkpoint_blocks(torch.nn.Linear(2, 2), True)
