"""Sharded checkpoints (parallel=fsdp) in one process: resume bitwise, atomic writes, no unpickling, named
errors. The two-process runs (shards split between processes, resume, world size, one-process
evaluation) are in test_parallel_training.py."""
import dataclasses
import json
import pickle
import shutil

import pytest
import torch

from ssmkit.training import CheckpointError, TrainConfig, fit, latest_checkpoint, read_checkpoint
from ssmkit.training import sharded_checkpoint
from ssmkit.training.checkpoint import BEST, MODEL, OPTIMIZER, SHARDED_FORMAT, read_state

from .test_checkpoint import Interrupted, InterruptedTask, _train
from .test_checkpoint import _assert_same_weights as _assert_same
from .tiny import TinyTask, resume_config, tiny_model

pytest.importorskip("safetensors", reason="checkpoints are safetensors files")


def sharded_config(folder, **extra) -> TrainConfig:
    """resume_config under parallel=fsdp: in one process its checkpoints are sharded (one shard file)."""
    return dataclasses.replace(resume_config(folder), parallel="fsdp", **extra)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """An uninterrupted 8-step sharded run (checkpoints at 2, 4, 6, 8); returns (folder, model, result)."""
    folder = tmp_path_factory.mktemp("sharded") / "full"
    model, result = _train(TinyTask("lm", n=8), sharded_config(folder))
    return folder, model, result


def test_sharded_resume_is_bitwise_the_uninterrupted_run(run, tmp_path):
    folder, full_model, full = run
    meta = read_state(folder / "step-00000008")
    assert meta["format"] == SHARDED_FORMAT and meta["parts"] == ["model", "optimizer", "best"]
    assert [p.suffix for p in (folder / "step-00000008").iterdir()].count(".safetensors") == 1
    with pytest.raises(Interrupted):
        _train(InterruptedTask(5, kind="lm", n=8), sharded_config(tmp_path / "cut"))
    assert latest_checkpoint(tmp_path / "cut").name == "step-00000004"
    torch.manual_seed(99)  # a different RNG state and initialization: all of it must come from the checkpoint
    model, result = _train(TinyTask("lm", n=8), sharded_config(tmp_path / "cut"), resume=True, init_seed=5)
    assert result == full
    _assert_same(model.state_dict(), full_model.state_dict())
    _, a = read_checkpoint(folder / "step-00000008")
    _, b = read_checkpoint(tmp_path / "cut" / "step-00000008")
    assert a.keys() == b.keys() == {MODEL, OPTIMIZER, BEST}
    for name in a:
        _assert_same(a[name], b[name])


def test_a_failed_or_killed_write_leaves_the_previous_checkpoint(run, tmp_path, monkeypatch):
    folder, _, _ = run
    ck = tmp_path / "ck"
    _train(TinyTask("lm", n=8), sharded_config(ck, steps=4, checkpoint_every=4))
    good = read_checkpoint(ck / "step-00000004")
    killed = ck / ".step-00000006.tmp-12345"  # what a writer killed mid-write leaves: a partial shard
    killed.mkdir()
    (killed / "shard-00001-model-00001-of-00001.safetensors").write_bytes(b"\0" * 10)

    def fail(path, aliases=None):  # the shards are on disk, state.json is not: the write dies here
        raise OSError(f"disk full while reading {path.name}")

    monkeypatch.setattr(sharded_checkpoint, "file_record", fail)
    with pytest.raises(CheckpointError, match="cannot read back a shard file.*disk full"):
        _train(TinyTask("lm", n=8), sharded_config(ck, steps=6, checkpoint_every=2), resume=True)
    # nothing half-written is visible: the killed writer's folder is gone, the failed one never appeared
    assert sorted(p.name for p in ck.iterdir()) == [".lock", "step-00000004"]
    meta, files = read_checkpoint(ck / "step-00000004")
    assert meta == good[0]
    for name in files:
        _assert_same(files[name], good[1][name])


def test_reading_a_sharded_checkpoint_never_unpickles(run, tmp_path, monkeypatch):
    folder, _, _ = run

    def refuse(*args, **kwargs):
        raise AssertionError("a checkpoint was unpickled")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    _, files = read_checkpoint(folder / "step-00000004")
    assert files[MODEL].keys() == tiny_model(TinyTask("lm", n=8)).state_dict().keys()
    result = fit(TinyTask("lm", n=8), tiny_model(TinyTask("lm", n=8)), sharded_config(folder, steps=8),
                 log=lambda s: None, resume=folder / "step-00000004")
    assert result["steps"] == 8


@pytest.fixture
def copy(run, tmp_path):
    folder, _, _ = run
    step = tmp_path / "step-00000008"
    shutil.copytree(folder / "step-00000008", step)
    return step


def test_a_corrupt_shard_is_named(copy):
    shard = next(copy.glob("*.safetensors"))
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=f"{shard.name}: SHA-256 differs"):
        read_checkpoint(copy)
    with pytest.raises(CheckpointError, match=f"{shard.name}: SHA-256 differs"):
        fit(TinyTask("lm", n=8), tiny_model(TinyTask("lm", n=8)), sharded_config(copy.parent / "again"),
            log=lambda s: None, resume=copy)


def test_a_shard_file_state_json_does_not_list_is_refused(copy):
    (copy / "shard-00009-model-00001-of-00001.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"\['shard-00009-model-00001-of-00001.safetensors'\] are not listed"):
        read_checkpoint(copy)


def test_a_sharded_checkpoint_of_another_model_is_refused(copy):
    task = TinyTask("lm", n=8)
    wider = tiny_model(task, d_model=16)
    with pytest.raises(CheckpointError, match=f"{copy} does not fit this model and optimizer"):
        fit(task, wider, sharded_config(copy.parent / "wider"), log=lambda s: None, resume=copy)


def test_malformed_parts_are_named(copy):
    meta = json.loads((copy / "state.json").read_text())
    meta["parts"] = ["best"]
    (copy / "state.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="field 'parts' must list 'model', 'optimizer'"):
        read_checkpoint(copy)
