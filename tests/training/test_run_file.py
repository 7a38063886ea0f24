"""fit writes run.json, the run's description, beside its checkpoints and in each one: given by the
caller, or put together from the recipes of a task built by create_task and its model."""
from __future__ import annotations

import json

from ssmkit.models import BackboneConfig
from ssmkit.tasks import create_task
from ssmkit.training import TrainConfig, fit
from ssmkit.training.checkpoint import RUN
from ssmkit.training.description import describe_run

from .tiny import QUIET, TinyTask, tiny_model


def _cfg(tmp_path, **kw) -> TrainConfig:
    return TrainConfig(steps=2, batch_size=4, eval_batch_size=8, checkpoint_dir=str(tmp_path),
                       checkpoint_every=1, **QUIET, **kw)


def test_plain_fit_describes_a_registered_task_and_its_model(tmp_path):
    task = create_task("copy_memory", delay=3, n_copy=2, n_eval=8)
    model = task.build_model(BackboneConfig(d_model=8, n_layers=2, mixer="s4d,lru", mixer_cfg={"d_state": 4}),
                             pool="last")
    fit(task, model, _cfg(tmp_path), log=lambda s: None)
    run = json.loads((tmp_path / RUN).read_text())
    assert run["task"] == "copy_memory" and run["task_cfg"] == {"delay": 3, "n_copy": 2, "n_eval": 8}
    assert run["model"]["mixer"] == ["s4d", "lru"] and run["model"]["mixer_cfg"] == {"d_state": 4}
    assert (run["pool"], run["arch"], run["arch_cfg"]) == ("last", "sequence", {})
    assert run["train"]["steps"] == 2 and run["train"]["checkpoint_dir"] == str(tmp_path)
    for step in ("step-00000001", "step-00000002"):  # every checkpoint describes itself
        assert json.loads((tmp_path / step / RUN).read_text()) == run


def test_a_given_description_is_stored_as_is(tmp_path):
    task = create_task("copy_memory", delay=3, n_copy=2, n_eval=8)
    model = task.build_model(BackboneConfig(d_model=8, n_layers=1))
    given = {**describe_run(task, model, _cfg(tmp_path)), "source": "a note"}
    fit(task, model, _cfg(tmp_path), log=lambda s: None, run=given)
    assert json.loads((tmp_path / "step-00000002" / RUN).read_text()) == given


def test_no_run_file_for_a_task_built_without_the_registry(tmp_path):
    task = TinyTask()
    model = tiny_model(task)
    assert describe_run(task, model, _cfg(tmp_path)) is None
    fit(task, model, _cfg(tmp_path), log=lambda s: None)
    assert not (tmp_path / RUN).exists() and not (tmp_path / "step-00000002" / RUN).exists()
    assert (tmp_path / "step-00000002" / "model.safetensors").is_file()
