"""Two CPU processes under torchrun (gloo) train to the weights of one process with the same global batch."""
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import assert_close_rel
from ssmkit.tasks.base import Batch
from ssmkit.training import fit, read_checkpoint
from ssmkit.training.distributed import Dist, shard

from .tiny import TinyTask, ddp_config, tiny_model

HERE = Path(__file__).resolve().parent
SRC = HERE.parents[1] / "src"


def test_shard_gives_each_rank_its_slice_of_the_global_batch():
    b = Batch(torch.arange(5)[:, None], torch.arange(5), torch.ones(5, 1, dtype=torch.bool))
    parts = [shard(b, Dist(rank=r, world=2)) for r in range(2)]
    assert [p.inputs[:, 0].tolist() for p in parts] == [[0, 1, 2], [3, 4]]
    assert torch.equal(torch.cat([p.targets for p in parts]), b.targets)
    b = Batch(b.inputs, b.targets, b.mask, dt=torch.arange(5.0)[:, None] + 1)
    assert [shard(b, Dist(rank=r, world=2)).dt[:, 0].tolist() for r in range(2)] == [[1, 2, 3], [4, 5]]


def test_two_processes_equal_one(tmp_path):
    safetensors = pytest.importorskip("safetensors.torch", reason="the DDP worker saves its weights with safetensors")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), str(HERE)]), "OMP_NUM_THREADS": "1",
           "MASTER_ADDR": "127.0.0.1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(HERE / "ddp_worker.py"), str(tmp_path)]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-3000:]
    ddp = safetensors.load_file(str(tmp_path / "weights.safetensors"))
    ddp_result = json.loads((tmp_path / "result.json").read_text())

    task = TinyTask("lm", n=10)
    model = tiny_model(task)
    single = fit(task, model, ddp_config(tmp_path / "single"), log=lambda s: None)
    for name, value in model.state_dict().items():
        assert_close_rel(ddp[name], value, 1e-6, name)
    for key in ("test_accuracy", "test_bits_per_token", "best_val_bits_per_token"):
        assert ddp_result[key] == pytest.approx(single[key], rel=1e-6), key
    # evaluation batches smaller than the number of processes: every rank reports every metric
    single1 = fit(task, tiny_model(task), dataclasses.replace(ddp_config(tmp_path / "s1"), eval_batch_size=1,
                                                              checkpoint_dir=""), log=lambda s: None)
    single1.pop("train_seconds")
    for rank in (0, 1):
        ranked = json.loads((tmp_path / f"batch1-rank{rank}.json").read_text())
        assert ranked.keys() == single1.keys(), rank
        for key, value in single1.items():
            assert ranked[key] == pytest.approx(value, rel=1e-6), (rank, key)
    assert ddp_result["steps"] == single["steps"] == 6
    meta, _ = read_checkpoint(tmp_path / "ck" / "step-00000006")  # written once, by rank 0
    assert meta["world_size"] == 2 and len(meta["rng"]["torch_cpu"]) == 2
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == [".lock", "step-00000006"]


def test_ssmkit_train_under_torchrun_prints_the_test_metrics_once(tmp_path):
    """`torchrun -m ssmkit train`: every process trains, one prints the result, the run folder holds one run."""
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "ssmkit",
           "train", "--task", "copy_memory", "--mixer", "s4d", "--set", "d_model=8", "--set", "n_layers=1",
           "--set", "steps=2", "--set", "batch_size=4", "--set", "progress=false", "--set", "task.delay=3",
           "--set", "task.n_copy=2", "--set", "task.n_eval=8", "--set", "eval_batch_size=1", "--out", str(tmp_path)]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("test accuracy") == 1, run.stdout
    assert (tmp_path / "run.json").is_file() and (tmp_path / "step-00000002").is_dir()
