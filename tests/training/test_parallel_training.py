"""fit under parallel=fsdp and under context_parallel: two gloo processes train to one process's weights."""
import json
import os
import sys
from pathlib import Path

import pytest
import torch

from conftest import assert_close_rel
from ssmkit.training import TrainConfig, fit, read_checkpoint
from ssmkit.training.checkpoint import MODEL

from .launch import run_group
from .tiny import PARALLEL_MIXER as MIXER
from .tiny import TinyTask, parallel_config, tiny_model

HERE = Path(__file__).resolve().parent
SRC = HERE.parents[1] / "src"


def test_fsdp_and_context_parallel_train_like_one_process(tmp_path):
    safetensors = pytest.importorskip("safetensors.torch", reason="the worker saves its weights with safetensors")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), str(HERE)]), "OMP_NUM_THREADS": "1",
           "MASTER_ADDR": "127.0.0.1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(HERE / "parallel_worker.py"), str(tmp_path)]
    run = run_group(cmd, env)
    assert run.returncode == 0, run.stderr[-3000:]

    task = TinyTask("lm", n=10)
    for mode in ("fsdp", "cp"):
        model = tiny_model(task, mixer=MIXER[mode])
        single = fit(task, model, parallel_config(tmp_path / f"single-{mode}"), log=lambda s: None)
        single.pop("train_seconds")
        weights = safetensors.load_file(str(tmp_path / f"{mode}.safetensors"))
        assert weights.keys() == model.state_dict().keys(), mode
        for name, value in model.state_dict().items():
            assert_close_rel(weights[name], value, 1e-5, f"{mode} {name}")  # float32 sums in another order
        result = json.loads((tmp_path / f"{mode}.json").read_text())
        assert result.keys() == single.keys(), mode
        for key, value in single.items():
            assert result[key] == pytest.approx(value, rel=1e-5), (mode, key)
        meta, _ = read_checkpoint(tmp_path / mode / "ck" / "step-00000004")
        assert meta["world_size"] == 2 and meta["config"]["parallel"] == ("fsdp" if mode == "fsdp" else "ddp")
    # FSDP resumed from its step-2 checkpoint (weights and optimizer state resharded) ends where it did
    fsdp = safetensors.load_file(str(tmp_path / "fsdp.safetensors"))
    for name, value in safetensors.load_file(str(tmp_path / "fsdp-resumed.safetensors")).items():
        assert_close_rel(value, fsdp[name], 1e-6, f"fsdp resumed {name}")

    # the checkpoints hold the full weights and optimizer state: one process resumes them exactly
    longer = {"steps": 6}
    for mode in ("fsdp", "cp"):
        resumed_single = tiny_model(task, mixer=MIXER[mode])
        fit(task, resumed_single, parallel_config(tmp_path / f"single-{mode}", **longer), log=lambda s: None,
            resume=True)
        resumed = tiny_model(task, mixer=MIXER[mode], seed=1)
        fit(task, resumed, parallel_config(tmp_path / mode, **longer), log=lambda s: None, resume=True)
        for (name, a), b in zip(resumed.state_dict().items(), resumed_single.state_dict().values()):
            assert_close_rel(a, b, 1e-5, f"resumed {mode} {name}")


@pytest.mark.parametrize("fields,message", [
    ({"parallel": "zero3"}, "parallel.*ddp or fsdp"),
    ({"context_parallel": 0}, "context_parallel.*>= 1"),
    ({"context_parallel": 2, "parallel": "fsdp"}, "context_parallel.*not combined with parallel=fsdp"),
    ({"context_parallel": 2, "tbptt": 4}, "context_parallel.*tbptt=4"),
])
def test_parallel_options_that_do_not_fit_are_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**fields)


def test_context_parallel_needs_one_rank_per_chunk_and_a_per_position_task(tmp_path):
    task = TinyTask("lm", n=4)
    with pytest.raises(ValueError, match=r"context_parallel.*2 must equal the number of processes \(1\)"):
        fit(task, tiny_model(task), TrainConfig(steps=1, context_parallel=2, progress=False), log=lambda s: None)


def test_ssmkit_train_context_parallel_with_checkpointed_blocks_under_torchrun(tmp_path):
    """`torchrun -m ssmkit train --set context_parallel=2 --set checkpoint_activations=true` (the recomputed
    blocks run their all-gathers again inside the backward pass) ends with one process's weights."""
    safetensors = pytest.importorskip("safetensors.torch", reason="checkpoints are safetensors files")
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    args = ["train", "--task", "copy_memory", "--mixer", "mamba", "--set", "d_model=8", "--set", "n_layers=2",
            "--set", "steps=2", "--set", "batch_size=4", "--set", "progress=false", "--set", "task.delay=3",
            "--set", "task.n_copy=2", "--set", "task.n_eval=8", "--set", "eval_batch_size=3"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "ssmkit",
           *args, "--set", "context_parallel=2", "--set", "checkpoint_activations=true", "--out", str(tmp_path / "cp")]
    run = run_group(cmd, env)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("test accuracy") == 1 and "each sequence split over 2 ranks" in run.stdout, run.stdout
    one = run_group([sys.executable, "-m", "ssmkit", *args, "--out", str(tmp_path / "one")], env)
    assert one.returncode == 0, one.stderr[-3000:]
    split = safetensors.load_file(str(tmp_path / "cp" / "step-00000002" / MODEL))
    whole = safetensors.load_file(str(tmp_path / "one" / "step-00000002" / MODEL))
    assert split.keys() == whole.keys()
    for name, value in whole.items():
        assert_close_rel(split[name], value, 1e-5, name)
