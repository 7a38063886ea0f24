"""A run's description: the default-preset rule, hybrid stacks with per-name mixer settings from
key=value strings, task settings typed without building data, old run.json files, and `ssmkit eval`
rebuilding a checkpoint that a plain library `fit` call wrote."""
from __future__ import annotations

import dataclasses
import json
import re

import pytest

from ssmkit.cli.main import main
from ssmkit.models import BackboneConfig
from ssmkit.runs import (
    RunConfig, apply_overrides, build_model, build_task, check_carry_length, check_run, get_preset, read_run,
    resolve_run,
)
from ssmkit.tasks import images
from ssmkit.training import TrainConfig, fit

QUIET = ["progress=false", "log_every=1000"]


def test_default_preset_rule():
    assert resolve_run() == get_preset("copy_memory_demo")  # neither task nor preset: the command's default
    assert resolve_run(default_preset="selective_copy_small").task == "selective_copy"
    plain = resolve_run(task="mqar", mixer="lstm")  # a task alone: the plain defaults on it
    assert plain.model == BackboneConfig(mixer="lstm") and plain.train == TrainConfig() and plain.source == ""
    assert resolve_run(preset="zoology_mqar", mixer="mamba").model.n_layers == 4  # the preset follows the mixer
    assert resolve_run(preset="zoology_mqar", overrides=["mixer=mamba"]).model.n_layers == 4
    with pytest.raises(ValueError, match="preset 'zoology_mqar' runs task 'mqar', not 'adding'"):
        resolve_run(task="adding", preset="zoology_mqar")


def test_a_hybrid_mixer_sets_the_depth_of_a_preset():
    run = resolve_run(mixer="s4d,lru,s5")
    assert run.model.mixer == ("s4d", "lru", "s5") and run.model.n_layers == 3
    assert get_preset("s4_lra_listops", "s4d,attention").model.mixer_cfg == {"d_state": 64, "dt_min": 0.001,
                                                                             "dt_max": 0.1}


def test_hybrid_with_shared_and_per_name_settings_from_strings():
    base = get_preset("copy_memory_demo")
    for order in (["mixer=s4d,mamba,attention", "n_layers=3"], ["n_layers=3", "mixer=s4d,mamba,attention"]):
        run = apply_overrides(base, order + ["mixer.d_state=4", "mixer.mamba.d_state=2", "mixer.mamba.mode=reference",
                                             "mixer.mode=fft"])
        assert run.model.mixer == ("s4d", "mamba", "attention")
        assert run.model.mixer_cfg == {"d_state": 4, "mamba": {"d_state": 2, "mode": "reference"}, "mode": "fft"}
        assert run.model.mixer_settings("s4d") == {"d_state": 4, "mode": "fft"}
        assert run.model.mixer_settings("mamba") == {"d_state": 2, "mode": "reference"}
        assert run.model.mixer_settings("attention") == {}
        assert RunConfig.from_json(json.loads(json.dumps(run.to_json()))) == run


@pytest.mark.parametrize("override, error, message", [
    ("mixer.mamba.bogus=1", TypeError, r"'mixer.mamba.bogus': mixer 'mamba' has no field 'bogus'; valid mixer.mamba keys"),
    ("mixer.lru.d_state=2", TypeError, r"no layer of the stack runs mixer 'lru'"),
    ("mixer.mamba.d_state=big", ValueError, r"mixer.mamba.d_state: .*not an int"),
    ("mixer.mamba.mode=fft", ValueError, r"'mixer.mamba.mode': 'fft' is not a mode of 'mamba'"),
    ("mixer.bogus=1", TypeError, r"no mixer of the stack \['s4d', 'mamba'\] has a field 'bogus'"),
    ("mixer.d_state=0", ValueError, "d_state"),
], ids=lambda v: v if isinstance(v, str) and "=" in v else "")
def test_bad_mixer_settings_of_a_hybrid_are_named(override, error, message):
    base = apply_overrides(get_preset("copy_memory_demo"), ["mixer=s4d,mamba"])
    with pytest.raises(error, match=message):
        apply_overrides(base, [override])


def test_task_settings_are_typed_without_building_the_data(monkeypatch):
    def no_data():
        raise AssertionError("the MNIST data were loaded")

    monkeypatch.setattr(images, "load_mnist", no_data)
    run = resolve_run(task="smnist", overrides=["task.protocol=tokens", "arch=vision", "arch.patch=7"])
    assert run.task_cfg == {"protocol": "tokens"} and run.arch_cfg == {"patch": 7}
    with pytest.raises(TypeError, match=r"task 'smnist' has no field 'bogus'; valid task keys: \['protocol'\]"):
        apply_overrides(run, ["task.bogus=1"])
    with pytest.raises(TypeError, match=re.escape("task.<field> for smnist: ['protocol']")):
        apply_overrides(run, ["bogus=1"])
    with pytest.raises(ValueError, match="'protocol': must be one of"):
        check_run(RunConfig(task="smnist", model=BackboneConfig(), train=TrainConfig(), task_cfg={"protocol": "x"}))


def test_run_json_of_the_older_format_loads(tmp_path):
    old = {"task": "copy_memory", "task_cfg": {"delay": 3}, "pool": "mean", "source": "", "arch": "sequence",
           "arch_cfg": {}, "model": {"d_model": 8, "n_layers": 2, "mixer": "s4d,lru", "mixer_cfg": {"d_state": 4}},
           "train": {"steps": 2, "betas": [0.9, 0.95]}}
    path = tmp_path / "run.json"
    path.write_text(json.dumps(old))
    run = read_run(path)
    assert run.model.mixer == ("s4d", "lru") and run.model.mixer_cfg == {"d_state": 4}
    assert run.train.betas == (0.9, 0.95)
    path.write_text("{")
    with pytest.raises(ValueError, match="run.json: not valid JSON"):
        read_run(path)
    path.write_text('{"task": "copy_memory"}')
    with pytest.raises(ValueError, match=r"run.json: run config is missing the entries \['model', 'train'\]"):
        read_run(path)


def test_eval_rebuilds_a_checkpoint_written_by_a_plain_fit_call(tmp_path, capsys):
    run = resolve_run(task="copy_memory", overrides=[
        "task.delay=3", "task.n_copy=2", "task.n_eval=16", "mixer=s4d,mamba", "mixer.d_state=4",
        "mixer.mamba.d_state=2", "d_model=8", "steps=3", "batch_size=4", "pool=last", *QUIET])
    task = build_task(run)
    model = build_model(task, run)
    result = fit(task, model, dataclasses.replace(run.train, checkpoint_dir=str(tmp_path)), log=lambda s: None)
    assert main(["eval", "--checkpoint", str(tmp_path), "--weights", "final"]) == 0
    out = capsys.readouterr().out
    assert "mixer s4d,mamba" in out
    assert f"test accuracy {result['test_accuracy']:.4f}" in out
    assert read_run(tmp_path / "step-00000003" / "run.json").model == run.model


def test_cli_trains_and_evaluates_a_hybrid_with_per_name_settings(tmp_path, capsys):
    args = ["--task", "copy_memory", "--mixer", "s4d,mamba,attention", "--set", "n_layers=3",
            "--set", "mixer.d_state=4", "--set", "mixer.mamba.d_state=2", "--set", "d_model=8", "--set", "steps=1",
            "--set", "batch_size=4", "--set", "task.delay=3", "--set", "task.n_copy=2", "--set", "task.n_eval=8",
            "--set", "progress=false"]
    assert main(["train", *args, "--out", str(tmp_path)]) == 0
    assert "mixer s4d,mamba,attention" in capsys.readouterr().out
    saved = json.loads((tmp_path / "step-00000001" / "run.json").read_text())
    assert saved["model"]["mixer"] == ["s4d", "mamba", "attention"]
    assert saved["model"]["mixer_cfg"] == {"d_state": 4, "mamba": {"d_state": 2}}
    assert main(["eval", "--checkpoint", str(tmp_path)]) == 0
    assert "test accuracy" in capsys.readouterr().out
    assert main(["train", "--mixer", "s4d,mamba", "--set", "mixer.mamba.bogus=1"]) == 2
    assert "'mixer.mamba.bogus': mixer 'mamba' has no field 'bogus'" in capsys.readouterr().err


def test_a_segment_must_be_shorter_than_the_training_sequences():
    """A segment or block as long as the training sequences leaves the carried state unread (never
    trained); a hybrid names the mixer; windows (swa, vpt) only cover less, and other architectures
    do not feed the task's tokens one for one, so neither is refused."""
    run = resolve_run(task="doc_lm", mixer="mamba,transformer_xl", overrides=["mixer.transformer_xl.segment_len=64"])
    check_carry_length(run, 65)
    with pytest.raises(ValueError, match=r"'mixer.transformer_xl.segment_len': 64 is not shorter .* \(64 tokens\)"):
        check_carry_length(run, 64)
    block = resolve_run(task="doc_lm", mixer="block_recurrent")  # the default block_len, 64
    with pytest.raises(ValueError, match=r"'mixer.block_recurrent.block_len': 64 .*no token would read the state .* block"):
        check_carry_length(block, 32)
    check_carry_length(resolve_run(task="doc_lm", mixer="swa", overrides=["mixer.window=512"]), 16)
    check_carry_length(dataclasses.replace(block, arch="vision"), 32)
