"""Tasks are one generic registry with their config classes beside them; kinds are an enum; one
table names the metric that ranks models on each kind."""
from __future__ import annotations

import dataclasses
import json

import pytest

from ssmkit.models import DataSpec, TaskKind
from ssmkit.tasks import (
    TASKS, TaskInfo, create_task, higher_is_better, images, list_tasks, primary_metric, register_task,
    task_config_class,
)
from ssmkit.tasks.metrics import PRIMARY_METRIC, improves
from ssmkit.tasks.synthetic import CopyMemoryConfig


def test_every_task_registers_its_config_class():
    for name in list_tasks():
        cls = task_config_class(name)
        assert cls is not None and dataclasses.is_dataclass(cls), name
    assert task_config_class("copy_memory") is CopyMemoryConfig
    assert issubclass(task_config_class("pathx"), task_config_class("pathfinder"))  # Path-X's defaults
    assert task_config_class("pathx")().size == 128


def test_reading_a_config_class_loads_no_data(monkeypatch):
    def no_data():
        raise AssertionError("the MNIST data were loaded")

    monkeypatch.setattr(images, "load_mnist", no_data)
    assert task_config_class("smnist") is images.PixelConfig
    with pytest.raises(AssertionError, match="MNIST data were loaded"):
        create_task("smnist")  # the patch is the loader create_task uses


def test_unknown_task_lists_the_registered_ones():
    with pytest.raises(KeyError, match="unknown task 'nope'; registered tasks: .*'copy_memory'"):
        task_config_class("nope")
    with pytest.raises(KeyError, match="registered tasks"):
        create_task("nope")


def test_a_task_registered_with_its_config_is_built_and_records_its_recipe():
    @dataclasses.dataclass
    class EchoConfig:
        length: int = 4

    @register_task("_test_echo", EchoConfig)
    def echo(**cfg):
        return create_task("copy_memory", delay=cfg.get("length", 4))

    try:
        assert task_config_class("_test_echo") is EchoConfig and "_test_echo" in TASKS
        task = create_task("_test_echo", length=3)
        assert task.recipe == {"task": "_test_echo", "task_cfg": {"length": 3}}
    finally:
        TASKS.unregister("_test_echo")
    assert "_test_echo" not in list_tasks()


def test_task_kind_is_a_str_enum():
    info = TaskInfo(name="t", kind="tag", length=3, source="s", sizes={})
    assert info.kind is TaskKind.TAG and info.kind == "tag" and f"{info.kind}" == "tag"
    assert json.loads(json.dumps(dataclasses.asdict(info)))["kind"] == "tag"
    assert DataSpec("forecast", 1).kind is TaskKind.FORECAST
    assert TaskKind.LM.per_position and not TaskKind.CLASSIFY.per_position
    assert TaskKind.REGRESS.real_valued and not TaskKind.TAG.real_valued
    assert TaskKind.TRAJECTORY.per_position and TaskKind.TRAJECTORY.real_valued
    with pytest.raises(ValueError, match=r"'kind': must be one of \('classify', 'tag', 'lm', 'forecast', 'regress', "
                                         r"'predict', 'trajectory'\)"):
        TaskInfo(name="t", kind="rank", length=3, source="s", sizes={})


def test_one_primary_metric_table():
    assert set(PRIMARY_METRIC) == set(TaskKind)
    assert [primary_metric(k) for k in ("classify", "tag", "lm", "forecast", "regress", "trajectory")] == [
        "accuracy", "accuracy", "bits_per_token", "mse", "mse", "mse"]
    assert higher_is_better("accuracy") and higher_is_better("test_accuracy") and higher_is_better("best_val_accuracy")
    assert not higher_is_better("mse") and not higher_is_better("test_bits_per_token")
    assert improves(0.6, 0.5, "accuracy") and not improves(0.6, 0.5, "mse") and improves(0.6, None, "mse")
