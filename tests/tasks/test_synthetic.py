import pytest
import torch

from ssmkit.models import BackboneConfig
from ssmkit.tasks import IGNORE, create_task, list_tasks
from ssmkit.tasks.synthetic import AddingConfig, CopyMemoryConfig, adding_batch, copy_memory_batch
from ssmkit.training import TrainConfig, evaluate, fit

from .data_helpers import one_training_step


def test_copy_memory_layout_and_determinism():
    cfg = CopyMemoryConfig(n_symbols=5, n_copy=3, delay=4)
    x, y = copy_memory_batch(cfg, 6, torch.Generator().manual_seed(1))
    x2, _ = copy_memory_batch(cfg, 6, torch.Generator().manual_seed(1))
    assert torch.equal(x, x2)
    assert x.shape == y.shape == (6, cfg.length) == (6, 10)
    assert ((x[:, :3] >= 1) & (x[:, :3] <= 5)).all()
    assert (x[:, 3 + 4 - 1] == 6).all()  # the marker
    assert (x[:, 3:6] == 0).all() and (x[:, 7:] == 0).all()
    assert torch.equal(y[:, -3:], x[:, :3])
    assert (y[:, :-3] == IGNORE).all()


def test_splits_are_deterministic_and_distinct():
    task = create_task("copy_memory", delay=3, n_train=40, n_eval=20)
    a = [b.inputs for b in task.batches("train", 16, seed=1)]
    b = [b.inputs for b in task.batches("train", 16, seed=1)]
    assert [t.shape[0] for t in a] == [16, 16, 8]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], next(task.batches("train", 16, seed=2)).inputs)
    assert not torch.equal(a[0], next(task.batches("train", 16, seed=1, epoch=1)).inputs)
    # evaluation sets do not depend on the run's seed
    assert torch.equal(next(task.batches("test", 8, seed=1)).inputs, next(task.batches("test", 8, seed=9)).inputs)
    assert not torch.equal(next(task.batches("test", 8)).inputs, next(task.batches("val", 8)).inputs)
    with pytest.raises(ValueError, match="unknown split"):
        next(task.batches("dev", 8))


def test_learns_copy_memory_with_s4d():
    task = create_task("copy_memory", n_copy=3, delay=4, n_eval=256)
    torch.manual_seed(0)
    model = task.build_model(BackboneConfig(d_model=32, n_layers=1, mixer="s4d"))
    before = evaluate(task, model, "test")["accuracy"]
    result = fit(task, model, TrainConfig(steps=60, batch_size=32, lr=1e-2, log_every=1000), log=lambda s: None)
    assert result["test_accuracy"] > 0.9 > before + 0.3


def test_registry_and_config_errors():
    assert "copy_memory" in list_tasks()
    with pytest.raises(KeyError, match="registered tasks"):
        create_task("nope")
    with pytest.raises(TypeError, match="valid keys"):
        create_task("copy_memory", colour=1)
    with pytest.raises(ValueError, match="'delay'"):
        create_task("copy_memory", delay=0)


# ---------------------------------------------------------------- adding problem


def test_adding_layout_and_target():
    cfg = AddingConfig(length=11)
    x, y = adding_batch(cfg, 500, torch.Generator().manual_seed(0))
    assert x.shape == (500, 11, 2) and y.shape == (500, 1)
    values, markers = x[..., 0], x[..., 1]
    assert ((values >= 0) & (values < 1)).all()
    assert (markers.sum(1) == 2).all() and set(markers.unique().tolist()) == {0.0, 1.0}
    assert (markers[:, :5].sum(1) == 1).all() and (markers[:, 5:].sum(1) == 1).all(), "one marker per half"
    torch.testing.assert_close(y[:, 0], (values * markers).sum(1))
    x2, _ = adding_batch(cfg, 500, torch.Generator().manual_seed(0))
    assert torch.equal(x, x2)


def test_adding_baseline_mse_is_one_sixth():
    _, y = adding_batch(AddingConfig(length=50), 20_000, torch.Generator().manual_seed(1))
    assert abs(((y - 1) ** 2).mean().item() - 1 / 6) < 0.01


def test_regress_head_reads_the_last_real_token():
    task = create_task("adding", length=9, n_eval=4)
    assert task.info.kind == "regress" and task.info.d_input == 2 and task.info.n_classes == 1
    torch.manual_seed(0)
    model = task.build_model(BackboneConfig(d_model=8, n_layers=1, mixer="s4d"))
    b = next(task.batches("test", 4))
    out = model(b.inputs)
    assert out.shape == (4, 1)
    padded = torch.cat([b.inputs, torch.randn(4, 3, 2)], 1)
    mask = torch.arange(12)[None, :] < 9
    torch.testing.assert_close(model(padded, mask.expand(4, 12)), out)
    m = task.metrics(out, b)
    assert set(m) == {"mse", "mae"} and m["mse"][1] == 4


def test_learns_adding_with_s4d():
    task = create_task("adding", length=10, n_eval=256)
    torch.manual_seed(0)
    model = task.build_model(BackboneConfig(d_model=16, n_layers=2, mixer="s4d"))
    result = fit(task, model, TrainConfig(steps=200, batch_size=32, lr=2e-2, log_every=1000), log=lambda s: None)
    assert result["test_mse"] < 0.03 < 1 / 6  # the mean predictor scores 1/6


def test_adding_one_training_step():
    metrics = one_training_step(create_task("adding", length=16, n_train=8))
    assert metrics["mse"] >= 0
