"""Context parallelism (training/context_parallel.py): 2 and 3 gloo processes == one process, float64.

One torchrun per world size runs every family that declares ``cp_state`` (read from the registry,
so a family that declares it is tested here) plus a hybrid causal LM through ``cp.enable``.
"""
import json
import os
import sys
from pathlib import Path

import pytest
import torch

from ssmkit import create_mixer, list_mixers
from ssmkit.layers import get_mixer_class
from ssmkit.models import BackboneConfig
from ssmkit.models.lm import CausalLM
from ssmkit.training import context_parallel as cp

from .launch import run_group

HERE = Path(__file__).resolve().parent
SRC = HERE.parents[1] / "src"
SUPPORTED = [n for n in list_mixers() if get_mixer_class(n).cp_state is not None]
TOL = 1e-12  # measured: at most 1.6e-14 (s4's parameter gradients through its dense summary); round-off only


def test_context_parallel_over_2_and_3_ranks_equals_one_process(tmp_path):
    """Outputs, final state and gradients of x, parameters and the initial state, every family; one
    torchrun of 3 processes: L = 19 over all 3 (unequal chunks 7, 6, 6), then L = 14 over 2 of them."""
    assert {"mamba", "mamba2", "s4", "s4d", "gla", "deltanet", "rwkv6", "rglru", "retnet", "vpt", "mlstm", "attention",
            "swa"} <= set(SUPPORTED)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), str(HERE)]), "OMP_NUM_THREADS": "1",
           "MASTER_ADDR": "127.0.0.1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "3",
           str(HERE / "cp_worker.py"), str(tmp_path), *SUPPORTED, "model", "lstm"]
    run = run_group(cmd, env)
    assert run.returncode == 0, run.stderr[-3000:]
    by_world = json.loads((tmp_path / "cp.json").read_text())
    assert sorted(by_world) == ["2", "3"]
    for world, results in by_world.items():
        for name in [*SUPPORTED, "model"]:
            errors = results[name]
            assert "refused" not in errors, (world, name, errors)
            expected = {"y", "grad_params"} | ({"disabled"} if name == "model" else {"grad_x", "grad_state", "state"})
            assert set(errors) == expected, (world, name)
            for what, err in errors.items():
                assert err <= TOL, (world, name, what, err)
        assert "nonlinear recurrence" in results["lstm"]["refused"]  # refused on every rank together, no hang


@pytest.mark.parametrize("name,why", [("lstm", "nonlinear"), ("gru", "nonlinear"), ("hyena", "whole input history"),
                                      ("infini_attention", "delta update"), ("rmt", "Transformer"),
                                      ("block_recurrent", "nonlinear"), ("s4nd", "2-D")])
def test_families_that_cannot_split_are_refused_with_the_reason(name, why):
    with pytest.raises(ValueError, match=why):
        cp.check_supported(create_mixer(name, 8))


def test_enable_refuses_a_model_naming_the_layer_and_changes_nothing():
    model = CausalLM(BackboneConfig(d_model=8, n_layers=2, mixer=("mamba", "lstm")), 5)
    comm = cp.Comm(rank=0, world=2)
    with pytest.raises(ValueError, match=r"backbone\.blocks\.1\.mixer \('lstm'\)"):
        cp.enable(model, comm)
    assert all("forward" not in m.__dict__ for _, m in cp.mixers_of(model))


def test_split_sequence_gives_contiguous_chunks_and_refuses_short_sequences():
    t = torch.arange(7)[None]
    assert [cp.split_sequence(t, cp.Comm(r, 3))[0].tolist() for r in range(3)] == [[0, 1, 2], [3, 4], [5, 6]]
    with pytest.raises(ValueError, match="at least 3 tokens, got length 2"):
        cp.split_sequence(t[:, :2], cp.Comm(0, 3))


def test_a_masked_chunk_is_refused():
    mixer = create_mixer("mamba", 8)
    x = torch.randn(1, 4, 8)
    with pytest.raises(ValueError, match="unmasked"):
        cp.mixer_forward(mixer, cp.Comm(0, 2), x, mask=torch.ones(1, 4, dtype=torch.bool))


def test_the_docs_family_table_matches_the_layers():
    """docs/distributed.md names every registered mixer once, refused exactly when it declares no cp_state."""
    text = (HERE.parents[1] / "docs" / "distributed.md").read_text()
    table = text[text.index("### What each family supports"):text.index("## FSDP")]
    named: dict[str, bool] = {}
    for line in table.splitlines():
        cells = line.split("|")
        if len(cells) < 4 or "`" not in cells[1]:
            continue
        for name in cells[1].replace("`", "").split(","):
            assert name.strip() not in named, name
            named[name.strip()] = cells[2].strip() != "refused"
    assert sorted(named) == sorted(list_mixers())
    for name, splits in named.items():
        assert splits == (get_mixer_class(name).cp_state is not None), name
