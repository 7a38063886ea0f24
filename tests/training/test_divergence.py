"""A non-finite loss, gradient or weight stops the run naming the step and the last good checkpoint
(or, with on_nonfinite=skip, drops the update and halves the lr); nothing non-finite is ever saved."""
from __future__ import annotations

import pytest
import torch

from ssmkit.training import TrainConfig, fit, latest_checkpoint, read_checkpoint
from ssmkit.training.checkpoint import MODEL
from ssmkit.training.loop import DivergenceError

from .tiny import QUIET, TinyTask, tiny_model


class PoisonedTask(TinyTask):
    """The loss is NaN at the training steps in ``bad`` (1-based); evaluation losses are never poisoned."""

    def __init__(self, bad: set[int], **kw) -> None:
        super().__init__(**kw)
        self.bad, self.calls = bad, 0

    def loss(self, outputs, batch):
        loss = super().loss(outputs, batch)
        if torch.is_grad_enabled():
            self.calls += 1
            if self.calls in self.bad:
                return loss * float("nan")
        return loss


def _cfg(tmp_path, **kw) -> TrainConfig:
    base = dict(steps=6, batch_size=12, lr=1e-2, checkpoint_dir=str(tmp_path), checkpoint_every=2, **QUIET)
    return TrainConfig(**{**base, **kw})


def test_nan_loss_stops_naming_step_loss_and_last_checkpoint(tmp_path):
    task = PoisonedTask({5})
    with pytest.raises(DivergenceError) as err:
        fit(task, tiny_model(task), _cfg(tmp_path), log=lambda s: None)
    msg = str(err.value)
    assert "diverged at step 5" in msg and "loss nan" in msg
    assert str(tmp_path / "step-00000004") in msg and "--resume" in msg
    assert latest_checkpoint(tmp_path).name == "step-00000004"  # nothing written after the bad step


def test_without_checkpoints_the_message_says_so(tmp_path):
    task = PoisonedTask({1})
    with pytest.raises(DivergenceError, match=r"step 1: .*last good checkpoint: none \(no checkpoint_dir\)"):
        fit(task, tiny_model(task), TrainConfig(steps=3, batch_size=12, **QUIET), log=lambda s: None)


def test_skip_drops_the_update_and_halves_the_lr(tmp_path):
    task = PoisonedTask({3})
    lines: list[str] = []
    model = tiny_model(task)
    result = fit(task, model, _cfg(tmp_path, on_nonfinite="skip"), log=lines.append)
    assert result["steps"] == 6
    assert any("step 3:" in line and "update skipped, lr scale now 0.5" in line for line in lines), lines
    meta, files = read_checkpoint(latest_checkpoint(tmp_path))
    assert meta["progress"]["lr_scale"] == 0.5 and meta["progress"]["skipped_steps"] == 1
    assert all(bool(torch.isfinite(t).all()) for t in files[MODEL].values())
    # the skipped step changed nothing: weights after steps 1-2 equal those after 1-3 of a skipping run
    a = PoisonedTask({3})
    ma = tiny_model(a)
    constant = dict(warmup_fraction=0.0, min_lr_ratio=1.0)  # the same lr at step 2 whatever the run length
    fit(a, ma, _cfg(tmp_path / "a", steps=3, on_nonfinite="skip", **constant), log=lambda s: None)
    b = PoisonedTask(set())
    mb = tiny_model(b)
    fit(b, mb, _cfg(tmp_path / "b", steps=2, **constant), log=lambda s: None)
    for (name, pa), pb in zip(ma.state_dict().items(), mb.state_dict().values()):
        assert torch.equal(pa, pb), name


def test_too_many_skips_in_a_row_stop(tmp_path):
    task = PoisonedTask({2, 3, 4})
    with pytest.raises(DivergenceError, match="step 4: .*after 2 skipped steps in a row"):
        fit(task, tiny_model(task), _cfg(tmp_path, on_nonfinite="skip", max_skips=2), log=lambda s: None)


def test_overflowing_update_is_never_saved(tmp_path):
    """Finite loss and gradients but an absurd lr: the weights overflow; the save refuses them."""
    task = TinyTask()
    model = tiny_model(task)
    with pytest.raises(DivergenceError) as err:
        fit(task, model, _cfg(tmp_path, lr=1e20, grad_clip=0.0, warmup_fraction=0.0, steps=40, checkpoint_every=1),
            log=lambda s: None)
    assert "diverged at step" in str(err.value)
    for path in sorted(tmp_path.glob("step-*")):
        _, files = read_checkpoint(path)
        assert all(bool(torch.isfinite(t).all()) for t in files[MODEL].values()), path


def test_resume_refuses_a_checkpoint_with_nan_weights(tmp_path):
    from ssmkit.training.checkpoint import CheckpointError, save_checkpoint

    task = TinyTask()
    fit(task, tiny_model(task), _cfg(tmp_path, steps=2), log=lambda s: None)
    path = latest_checkpoint(tmp_path)
    meta, files = read_checkpoint(path)
    weights = dict(files[MODEL])
    name = next(iter(weights))
    weights[name] = weights[name] * float("nan")
    state = {k: v for k, v in meta.items() if k not in ("format", "version", "step", "files")}
    save_checkpoint(tmp_path, 2, {**files, MODEL: weights}, state, keep=3)
    with pytest.raises(CheckpointError, match=f"weight {name!r} holds NaN or Inf"):
        fit(task, tiny_model(task), _cfg(tmp_path, steps=4), log=lambda s: None, resume=True)
