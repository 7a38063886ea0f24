"""TrainConfig.deterministic / ssmkit.runtime.deterministic: two CPU trainings with the same seed
give bitwise-identical weights and metrics, in this process and in a fresh one; the switch turns
torch's deterministic algorithms on only for the run."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from .tiny import QUIET, TinyTask, tiny_model

from ssmkit import runtime
from ssmkit.training import TrainConfig, fit

SCRIPT = """
import json, sys, torch
sys.path.insert(0, {tests!r})
torch.set_num_threads(1)
from tiny import QUIET, TinyTask, tiny_model
from ssmkit.training import TrainConfig, fit
task = TinyTask("lm")
model = tiny_model(task, mixer="mamba", dropout=0.1)
out = fit(task, model, TrainConfig(steps=6, batch_size=4, deterministic=True, **QUIET), log=lambda s: None)
print(json.dumps([[float(v) for v in p.detach().flatten()] for p in model.parameters()]))
"""


def _train():
    task = TinyTask("lm")
    model = tiny_model(task, mixer="mamba", dropout=0.1)  # dropout: the seeded random stream matters
    fit(task, model, TrainConfig(steps=6, batch_size=4, deterministic=True, **QUIET), log=lambda s: None)
    return [p.detach().clone() for p in model.parameters()]


def test_two_trainings_are_bitwise_equal_and_the_switch_is_scoped():
    assert not torch.are_deterministic_algorithms_enabled()
    a, b = _train(), _train()
    assert not torch.are_deterministic_algorithms_enabled()  # restored after the run
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, tiny_model(TinyTask("lm"), mixer="mamba").parameters()))
    # a fresh process (same thread count) gives the same bits
    tests = str(Path(__file__).parent)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(runtime.__file__).parents[1]), tests]))
    out = subprocess.run([sys.executable, "-c", SCRIPT.format(tests=tests)], capture_output=True, text=True,
                         env=env, check=True, timeout=300)
    fresh = json.loads(out.stdout.strip().splitlines()[-1])
    assert all(x.flatten().tolist() == y for x, y in zip(a, fresh, strict=True))


def test_seeding_and_deterministic_algorithms_inside_the_block():
    with runtime.deterministic(seed=7):
        assert torch.are_deterministic_algorithms_enabled()
        first = torch.rand(3)
    with runtime.deterministic(seed=7):
        assert torch.equal(torch.rand(3), first)
    assert not torch.are_deterministic_algorithms_enabled()
