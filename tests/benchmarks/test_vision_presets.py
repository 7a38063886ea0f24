"""The vision presets run arch=vision on image tasks, and compare's table names the architecture."""
from __future__ import annotations

import pytest

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
