"""The vision presets run arch=vision on image tasks, and compare's table names the architecture."""
from __future__ import annotations

import pytest

from ssmkit.benchmarks.report import markdown_table
from ssmkit.runs import build_model, get_preset
from ssmkit.tasks import create_task


@pytest.mark.parametrize("name, task, scan", [("smnist_patches", "smnist", "vim"), ("fashion_vision", "sfashion", "cross")])
def test_vision_presets(name, task, scan):
    run = get_preset(name)
    assert (run.task, run.arch, run.arch_cfg) == (task, "vision", {"scan": scan, "patch": 4})
    assert get_preset(name, "s4nd").arch_cfg["scan"] == "s4nd"  # S4ND reads the grid with its 2-D kernel
    assert get_preset(name, "attention").arch_cfg["scan"] == scan


def test_preset_model_builds_on_an_image_task():
    run = get_preset("smnist_patches", "s4d")
    task = create_task("digits")  # the 8 x 8 image: 2 x 2 patches of 4 x 4 (smnist: 7 x 7)
    model = build_model(task, run)
    assert model.n_patches == 4 and model.cls_index == 2
    assert model.embed.grid == (2, 2)


def test_compare_table_names_the_architecture():
    results = {
        "task_info": {"name": "smnist", "kind": "classify", "length": 784, "notes": "n"}, "metric": "test_accuracy",
        "seeds": [0], "chance": 0.1, "published": [], "mixers": ["s4d"],
        "configs": {"s4d": {"arch": "vision", "arch_cfg": {"scan": "vim", "patch": 4}}},
        "runs": [{"mixer": "s4d", "steps": 5, "metrics": {"test_accuracy": 0.5}, "parameters": 1, "state_size": 1,
                  "train_tokens_per_s": 1.0, "inference_tokens_per_s": 1.0, "activation_mb": 1.0,
                  "peak_memory_mb": 1.0, "wall_seconds": 1.0, "measured_batch": [2, 784], "peak_memory_kind": "cpu"}],
        "machine": {"cuda": None, "torch_threads": 2}, "ssmkit_version": "0", "torch_version": "0",
    }
    assert 'arch `vision` {"patch": 4, "scan": "vim"}' in markdown_table(results)
