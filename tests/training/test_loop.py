"""The loop: it learns, evaluates exactly, stops early on val, logs JSONL, runs under bf16 autocast."""
import json
import sys

import pytest
import torch

from ssmkit.training import TrainConfig, evaluate, fit, param_groups

from .tiny import QUIET, TinyTask, tiny_model

quiet = dict(log=lambda s: None)


def test_overfits_a_tiny_task():
    task = TinyTask("classify", n=12)  # random labels: only memorizing fits them
    model = tiny_model(task, d_model=16)
    before = evaluate(task, model, "train")["accuracy"]
    result = fit(task, model, TrainConfig(steps=40, batch_size=12, lr=3e-2, weight_decay=0.0, **QUIET), **quiet)
    assert result["test_accuracy"] == 1.0 > before + 0.3
    assert result["steps"] == 40 and result["train_seconds"] > 0


def test_evaluate_is_an_exact_average_over_any_batch_size():
    task = TinyTask("lm", n=7)
    model = tiny_model(task)
    a, b = evaluate(task, model, "val", batch_size=7), evaluate(task, model, "val", batch_size=3)
    assert a.keys() == b.keys() == {"accuracy", "bits_per_token"}
    for k in a:
        assert a[k] == pytest.approx(b[k], rel=1e-6)


def test_epochs_set_the_run_length():
    task = TinyTask("classify", n=12)
    result = fit(task, tiny_model(task), TrainConfig(epochs=2, batch_size=5, **QUIET), **quiet)
    assert result["steps"] == 2 * 3  # 12 examples in batches of 5, 5, 2


def test_early_stopping_restores_the_best_val_weights():
    task = TinyTask("classify", n=12)
    model = tiny_model(task)
    # lr so small that val accuracy cannot change: no evaluation after the first improves on it
    cfg = TrainConfig(steps=50, batch_size=6, lr=1e-12, eval_every=1, patience=2, **QUIET)
    result = fit(task, model, cfg, **quiet)
    assert result["steps"] == 3 and result["best_step"] == 1
    assert evaluate(task, model, "val")["accuracy"] == result["best_val_accuracy"]


def test_metrics_jsonl_and_log_lines(tmp_path):
    task = TinyTask("lm", n=8)
    lines = []
    cfg = TrainConfig(steps=6, batch_size=4, log_every=2, eval_every=3, log_dir=str(tmp_path), progress=False)
    fit(task, tiny_model(task), cfg, log=lines.append)
    records = [json.loads(s) for s in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["split"], r["step"]) for r in records] == [
        ("train", 2), ("val", 3), ("train", 4), ("train", 6), ("val", 6), ("test", 6)]
    train = records[0]
    assert {"epoch", "lr", "loss", "accuracy", "bits_per_token", "tokens_per_s", "seconds"} <= train.keys()
    assert train["tokens_per_s"] > 0 and train["loss"] > 0
    assert sum(line.startswith("train step") for line in lines) == 3
    assert any(line.startswith("test ") for line in lines)


def test_bf16_autocast_path_runs():
    task = TinyTask("lm", n=8)
    # every mixer runs under bf16 autocast (tests/layers/test_autocast.py); lru is a cheap one
    model = tiny_model(task, mixer="lru")
    dtypes = set()
    model.head.register_forward_hook(lambda m, i, out: dtypes.add(out.dtype))
    result = fit(task, model, TrainConfig(steps=3, batch_size=4, bf16=True, **QUIET), **quiet)
    assert dtypes == {torch.bfloat16}
    assert torch.isfinite(torch.tensor(result["test_bits_per_token"]))
    assert all(p.dtype == torch.float32 for p in model.parameters())  # weights stay float32


def test_param_groups_follow_tags_and_ssm_lr():
    model = tiny_model(TinyTask("classify"))
    tagged = {n for n, p in model.named_parameters() if "lr" in getattr(p, "_optim", {})}
    assert tagged, "s4d tags its SSM parameters with an lr"
    for group in param_groups(model, lr=1e-2, weight_decay=0.1, ssm_lr=5e-4):
        for name, p in zip(group["names"], group["params"]):
            assert group["lr"] == (5e-4 if name in tagged else 1e-2), name
            if name in tagged or p.dim() < 2:
                assert group["weight_decay"] == 0.0, name


def test_without_tqdm_progress_falls_back_to_lines_and_tensorboard_names_its_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)  # import fails as if tqdm were not installed
    task = TinyTask("classify")
    lines = []
    fit(task, tiny_model(task), TrainConfig(steps=2, log_every=1, progress=True), log=lines.append)
    assert sum(line.startswith("train step") for line in lines) == 2
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(ImportError, match="pip install tensorboard"):
        fit(task, tiny_model(task), TrainConfig(steps=1, log_dir=str(tmp_path), tensorboard=True, **QUIET), **quiet)


def test_batches_with_dt_reach_the_model_in_fit_and_evaluate():
    """A task whose batches carry time deltas: evaluate scores model(x, mask, dt=dt), which differs
    from ignoring dt; fit trains through it; a model that cannot take dt fails with a clear error."""
    task = TinyTask("classify", n=12, with_dt=True)
    model = tiny_model(task, d_model=16).double()
    got = evaluate(task, model, "val", batch_size=5)
    with torch.no_grad():
        out = model(task.x, dt=task.dt.double())
        plain = model(task.x)
    assert got["accuracy"] == pytest.approx(float((out.argmax(-1) == task.y).double().mean()))
    assert (out - plain).abs().max() > 1e-3
    result = fit(task, model, TrainConfig(steps=30, batch_size=12, lr=3e-2, weight_decay=0.0, **QUIET), **quiet)
    assert result["test_accuracy"] > got["accuracy"]
    with pytest.raises(ValueError, match=r"layer 0 \(retnet\) cannot take it"):
        evaluate(task, tiny_model(task, mixer="retnet"), "val")
