"""fit under parallel=fsdp and under context_parallel: two gloo processes train to one process's weights."""
import json
import os
import re
import sys
from pathlib import Path

import pytest
import torch

from conftest import assert_close_rel
from ssmkit.training import CheckpointError, TrainConfig, fit, full_copy, read_checkpoint
from ssmkit.training.checkpoint import BEST, FORMAT, MODEL, OPTIMIZER, SHARDED_FORMAT, read_state

from .launch import run_group
from .tiny import PARALLEL_MIXER as MIXER
from .tiny import TinyTask, parallel_config, tiny_model

HERE = Path(__file__).resolve().parent
SRC = HERE.parents[1] / "src"


def _assert_equal(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys(), what
    for name in a:
        assert torch.equal(a[name], b[name]), f"{what}: {name} differs"


def test_fsdp_and_context_parallel_train_like_one_process(tmp_path):
    safetensors = pytest.importorskip("safetensors.torch", reason="the worker saves its weights with safetensors")
    from safetensors import safe_open

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
    formats = {"fsdp": SHARDED_FORMAT, "fsdp-full": FORMAT, "cp": FORMAT}
    for mode, form in formats.items():
        meta = read_state(tmp_path / mode / "ck" / "step-00000004")
        assert meta["world_size"] == 2 and meta["format"] == form, mode
        assert meta["config"]["parallel"] == ("ddp" if mode == "cp" else "fsdp"), mode

    # the sharded and the gathered (checkpoint_format=full) FSDP runs are one run: equal weights, and the
    # sharded checkpoint, assembled in one process, holds exactly the full checkpoint's tensors and state
    fsdp = safetensors.load_file(str(tmp_path / "fsdp.safetensors"))
    _assert_equal(safetensors.load_file(str(tmp_path / "fsdp-full.safetensors")), fsdp, "checkpoint_format=full")
    for step in ("step-00000002", "step-00000004"):
        meta, files = read_checkpoint(tmp_path / "fsdp" / "ck" / step)
        full_meta, full_files = read_checkpoint(tmp_path / "fsdp-full" / "ck" / step)
        assert files.keys() == full_files.keys() == {MODEL, OPTIMIZER, BEST}
        for name in files:
            _assert_equal(files[name], full_files[name], f"{step} {name}")
        assert meta["optimizer"] == full_meta["optimizer"] and meta["rng"] == full_meta["rng"]
        assert meta["progress"] == full_meta["progress"]

    # resumed with the other checkpoint_format, the best-val weights change layout and stay the same numbers
    for mode in ("to-sharded", "to-full"):
        _assert_equal(safetensors.load_file(str(tmp_path / f"{mode}.safetensors")), fsdp, mode)
        result = json.loads((tmp_path / f"{mode}.json").read_text())
        assert result == json.loads((tmp_path / "fsdp.json").read_text()), mode

    # each process wrote its own shards; s4d's complex C, stored as a real (D, N, 2) view, and its AdamW
    # moments are split along D between the two files
    step4 = tmp_path / "fsdp" / "ck" / "step-00000004"
    shards = sorted(step4.glob("*.safetensors"))
    assert len(shards) == 2
    c = "backbone.blocks.0.mixer.C"
    d_model = fsdp[c].shape[0]
    for i, shard in enumerate(shards):
        with safe_open(str(shard), "pt") as f:
            offsets = json.loads(f.metadata()["DCP_SHARDING_INFO"])
            for key in (f"model.{c}", f"optimizer.{c}.exp_avg", f"best.{c}"):
                assert f.get_slice(key).get_shape() == [d_model // 2, *fsdp[c].shape[1:]], (shard.name, key)
                assert offsets[key]["saved_offsets"] == [i * d_model // 2, 0, 0], (shard.name, key)

    # stopped after its step-2 checkpoint and resumed in its run folder: bitwise the uninterrupted run
    _assert_equal(safetensors.load_file(str(tmp_path / "fsdp-resumed.safetensors")), fsdp, "stopped and resumed")
    assert json.loads((tmp_path / "fsdp-resumed.json").read_text()) == json.loads((tmp_path / "fsdp.json").read_text())
    _, cut = read_checkpoint(tmp_path / "fsdp-cut" / "ck" / "step-00000004")
    _, whole = read_checkpoint(step4)
    for name in whole:
        _assert_equal(cut[name], whole[name], f"resumed checkpoint {name}")

    # one process, no process group, reads the sharded checkpoint: its model's outputs are the 2-process
    # FSDP model's (the best-val weights, which fit leaves in the model), bitwise at one thread each
    alone = tiny_model(task, mixer=MIXER["fsdp"], seed=3)
    alone.load_state_dict(whole[BEST])
    alone.eval()
    with torch.no_grad():
        logits = alone(task.x[:4])
    assert torch.equal(logits, safetensors.load_file(str(tmp_path / "fsdp-outputs.safetensors"))["logits"])

    # a sharded resume needs the world size that wrote it: one process is refused, nothing is written
    before = sorted(p.name for p in (tmp_path / "fsdp" / "ck").iterdir())
    with pytest.raises(CheckpointError, match=r"written by 2 process\(es\), resumed on 1.*--nproc_per_node 2.*"
                                              r"full_copy"):
        fit(task, tiny_model(task, mixer=MIXER["fsdp"]), parallel_config(tmp_path / "fsdp", steps=6, parallel="fsdp"),
            log=lambda s: None, resume=True)
    assert sorted(p.name for p in (tmp_path / "fsdp" / "ck").iterdir()) == before
    # ... and its full copy, like the gathered checkpoints, resumes in one process like a one-process run
    copy = full_copy(step4, tmp_path / "fsdp-copy" / "ck")
    assert read_state(copy)["format"] == FORMAT
    longer, one = {"steps": 6}, {}
    for mode in ("fsdp", "cp"):  # the one-process runs, resumed from their own step 4
        one[mode] = tiny_model(task, mixer=MIXER[mode])
        fit(task, one[mode], parallel_config(tmp_path / f"single-{mode}", **longer), log=lambda s: None, resume=True)
    for mode, folder in (("fsdp", "fsdp-copy"), ("fsdp", "fsdp-full"), ("cp", "cp")):
        resumed = tiny_model(task, mixer=MIXER[mode], seed=1)
        fit(task, resumed, parallel_config(tmp_path / folder, **longer), log=lambda s: None, resume=True)
        for (name, a), b in zip(resumed.state_dict().items(), one[mode].state_dict().values()):
            assert_close_rel(a, b, 1e-5, f"resumed {folder} {name}")


@pytest.mark.parametrize("fields,message", [
    ({"parallel": "zero3"}, "parallel.*ddp or fsdp"),
    ({"context_parallel": 0}, "context_parallel.*>= 1"),
    ({"context_parallel": 2, "parallel": "fsdp"}, "context_parallel.*not combined with parallel=fsdp"),
    ({"context_parallel": 2, "tbptt": 4}, "context_parallel.*tbptt=4"),
    ({"checkpoint_format": "zip"}, "checkpoint_format.*auto, sharded or full, got 'zip'"),
    ({"checkpoint_format": "sharded"}, "checkpoint_format.*sharded needs parallel=fsdp"),
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


def test_ssmkit_eval_scores_a_sharded_fsdp_run_in_one_process(tmp_path):
    """`torchrun -m ssmkit train --set parallel=fsdp` writes sharded checkpoints; `ssmkit eval` on its run
    folder, one process without torchrun, scores the test split as the 2-process run did at its end."""
    pytest.importorskip("safetensors", reason="checkpoints are safetensors files")
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    args = ["--task", "adding", "--mixer", "s4d", "--set", "d_model=8", "--set", "n_layers=1", "--set", "steps=2",
            "--set", "batch_size=4", "--set", "progress=false", "--set", "task.length=12", "--set", "task.n_eval=8",
            "--set", "eval_batch_size=3"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "ssmkit",
           "train", *args, "--set", "parallel=fsdp", "--out", str(tmp_path)]
    run = run_group(cmd, env)
    assert run.returncode == 0, run.stderr[-3000:]
    step = tmp_path / "step-00000002"
    assert read_state(step)["format"] == SHARDED_FORMAT and len(list(step.glob("shard-*.safetensors"))) == 2
    # a generated task draws its test examples batch by batch: eval scores in the run's eval_batch_size
    alone = run_group([sys.executable, "-m", "ssmkit", "eval", "--checkpoint", str(tmp_path), "--split", "test"], env)
    assert alone.returncode == 0, alone.stderr[-3000:]

    def scores(out: str) -> dict[str, str]:
        return dict(re.findall(r"^test (\w+) (\S+)", out, re.M))

    trained, evaluated = scores(run.stdout), scores(alone.stdout)
    assert trained.keys() == {"mae", "mse"} and trained == evaluated, (run.stdout, alone.stdout)
