"""A tiny fixed task and model for training tests: small enough to train in well under a second."""
from __future__ import annotations

from typing import Iterator

import torch

from ssmkit.models import BackboneConfig
from ssmkit.tasks.base import IGNORE, SPLITS, Batch, Task, TaskInfo, split_generator
from ssmkit.training import TrainConfig


class TinyTask(Task):
    """``n`` fixed random examples (the same for every split), train order shuffled per (seed, epoch).

    classify: random labels (learnable only by memorizing); lm: a random token stream cut into
    windows with next-token targets, some targets IGNOREd so rows carry unequal loss weights.
    """

    def __init__(self, kind: str = "classify", n: int = 12, length: int = 8, vocab: int = 6, n_classes: int = 3,
                 seed: int = 0, with_dt: bool = False) -> None:
        g = torch.Generator().manual_seed(seed)
        self.n = n
        # irregular sampling: fixed random time gaps per example, carried in Batch.dt
        self.dt = torch.exp(torch.randn(n, length, generator=g)) if with_dt else None
        if kind == "classify":
            self.x = torch.randint(1, vocab, (n, length), generator=g)
            self.y = torch.randint(0, n_classes, (n,), generator=g)
        else:
            stream = torch.randint(1, vocab, (n, length + 1), generator=g)
            self.x, self.y = stream[:, :-1], stream[:, 1:].clone()
            self.y[torch.rand(n, length, generator=g) < 0.3] = IGNORE
            n_classes = vocab
        self.info = TaskInfo(name=f"tiny_{kind}", kind=kind, length=length, source="test data",
                             sizes={s: n for s in SPLITS}, n_classes=n_classes, vocab_size=vocab)

    def batches(self, split: str, batch_size: int, seed: int = 0, epoch: int = 0) -> Iterator[Batch]:
        self._check_split(split)
        order = (torch.randperm(self.n, generator=split_generator(split, seed, epoch, 0)) if split == "train"
                 else torch.arange(self.n))
        for i in range(0, self.n, batch_size):
            idx = order[i : i + batch_size]
            yield Batch(self.x[idx], self.y[idx], dt=None if self.dt is None else self.dt[idx])


def tiny_model(task: Task, d_model: int = 8, seed: int = 0, mixer: str = "s4d", dropout: float = 0.0):
    torch.manual_seed(seed)
    return task.build_model(BackboneConfig(d_model=d_model, n_layers=1, mixer=mixer, dropout=dropout))


QUIET = dict(progress=False, log_every=1000)  # TrainConfig fields that keep a test's output clean


def resume_config(checkpoint_dir) -> TrainConfig:
    """8 steps with checkpoints every 2, val every 2 (the resume tests and their subprocess)."""
    return TrainConfig(steps=8, batch_size=4, lr=1e-2, eval_every=2, checkpoint_dir=str(checkpoint_dir),
                       checkpoint_every=2, keep_checkpoints=10, **QUIET)


def ddp_config(out_dir) -> TrainConfig:
    """Global batches of 5 rows: 3 + 2 rows on two processes, with unequal scored-target counts."""
    return TrainConfig(steps=6, batch_size=5, lr=1e-2, eval_every=3, eval_batch_size=4, tbptt=3,
                       checkpoint_dir=f"{out_dir}/ck", **QUIET)


# The FSDP and context-parallel runs' mixers: s4d keeps complex parameters as real (..., 2) views, which
# FSDP must shard like any other; mamba has a conv halo and a selective state to pass between chunks.
PARALLEL_MIXER = {"fsdp": "s4d", "cp": "mamba"}


def parallel_config(out_dir, **extra) -> TrainConfig:
    """The FSDP / context-parallel runs: 4 steps of 4 rows, val (best weights) and checkpoints every 2."""
    fields = dict(steps=4, batch_size=4, lr=1e-2, eval_every=2, eval_batch_size=3, checkpoint_dir=f"{out_dir}/ck",
                  checkpoint_every=2, keep_checkpoints=10)
    return TrainConfig(**{**fields, **QUIET, **extra})
