"""Synthetic memory tasks generated per batch from a seed (no data files).

copy_memory (Arjovsky et al. 2016, "Unitary Evolution RNNs"): ``n_copy`` symbols from
{1..n_symbols}, then ``delay`` blanks (0) with a marker (n_symbols+1) at the last one, then
``n_copy`` blanks; the target at the final ``n_copy`` positions is the symbols in order. Length
L = 2*n_copy + delay. Only the answer positions are scored (target IGNORE elsewhere).

adding (Hochreiter & Schmidhuber 1997; the variant of Arjovsky et al. 2016): two input channels
(value, marker) of length L; values uniform in [0, 1), exactly two markers, one uniform in the
first half [0, L//2) and one in the second half [L//2, L); the target is the sum of the two marked
values, read at the last token (kind ``regress``, MSE). Predicting the mean 1 scores MSE 1/6.

The recall suite of the Mamba and Zoology papers (selective copying, induction heads, MQAR) is in
``recall.py``.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar, Iterator

import torch
from torch import Tensor

from ..config import build_config, check
from .base import IGNORE, Batch, Task, TaskInfo, register_task, split_generator


@dataclasses.dataclass
class CopyMemoryConfig:
    n_symbols: int = 8
    n_copy: int = 10
    delay: int = 20
    n_train: int = 10_000  # examples per training epoch (generated afresh per epoch and seed)
    n_eval: int = 1_000  # examples in each of val and test (fixed)

    LENGTH_KNOB: ClassVar[str] = ("delay = L - 2 n_copy with n_copy = min(n_copy, L // 4) (the same symbols across "
                                  "a longer delay)")

    def at_length(self, length: int) -> "CopyMemoryConfig":
        check(length >= 4, "length", f"must be >= 4 (a symbol, its delay and its answer), got {length}")
        n_copy = min(self.n_copy, length // 4)
        return dataclasses.replace(self, n_copy=n_copy, delay=length - 2 * n_copy)

    def __post_init__(self) -> None:
        check(self.n_symbols >= 2, "n_symbols", f"must be >= 2, got {self.n_symbols}")
        check(self.n_copy >= 1, "n_copy", f"must be >= 1, got {self.n_copy}")
        check(self.delay >= 1, "delay", f"must be >= 1, got {self.delay}")
        check(self.n_train >= 1 and self.n_eval >= 1, "n_train", "n_train and n_eval must be >= 1")

    @property
    def vocab_size(self) -> int:
        return self.n_symbols + 2  # blank 0, symbols 1..n, marker n+1

    @property
    def length(self) -> int:
        return 2 * self.n_copy + self.delay


def copy_memory_batch(cfg: CopyMemoryConfig, batch_size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """-> (inputs (B, L) long, targets (B, L) long with IGNORE outside the answer positions)."""
    n, L = cfg.n_copy, cfg.length
    symbols = torch.randint(1, cfg.n_symbols + 1, (batch_size, n), generator=generator)
    inputs = torch.zeros(batch_size, L, dtype=torch.long)
    inputs[:, :n] = symbols
    inputs[:, n + cfg.delay - 1] = cfg.n_symbols + 1
    targets = torch.full((batch_size, L), IGNORE, dtype=torch.long)
    targets[:, L - n :] = symbols
    return inputs, targets


class GeneratedTask(Task):
    """A task whose examples come from ``make_batch(batch_size, generator)``, one generator per batch."""

    def _sizes(self, n_train: int, n_eval: int) -> dict[str, int]:
        return {"train": n_train, "val": n_eval, "test": n_eval}

    def make_batch(self, batch_size: int, generator: torch.Generator) -> Batch:
        raise NotImplementedError

    def batches(self, split: str, batch_size: int, seed: int = 0, epoch: int = 0) -> Iterator[Batch]:
        self._check_split(split)
        n = self.info.sizes[split]
        for index, start in enumerate(range(0, n, batch_size)):
            yield self.make_batch(min(batch_size, n - start), split_generator(split, seed, epoch, index))


@register_task("copy_memory", CopyMemoryConfig)
class CopyMemory(GeneratedTask):
    def __init__(self, **cfg) -> None:
        self.cfg = c = build_config(CopyMemoryConfig, cfg)
        self.info = TaskInfo(
            name="copy_memory", kind="tag", length=c.length, source="generated (Arjovsky et al. 2016)",
            sizes=self._sizes(c.n_train, c.n_eval), n_classes=c.vocab_size, vocab_size=c.vocab_size,
            notes=f"copy {c.n_copy} of {c.n_symbols} symbols across a delay of {c.delay}",
        )

    def make_batch(self, batch_size: int, generator: torch.Generator) -> Batch:
        x, y = copy_memory_batch(self.cfg, batch_size, generator)
        return Batch(x, y)


@dataclasses.dataclass
class AddingConfig:
    length: int = 200  # L (Arjovsky et al. used 100, 200, 400, 750)
    n_train: int = 100_000  # examples per training epoch (generated afresh per epoch and seed)
    n_eval: int = 10_000  # examples in each of val and test (fixed)

    LENGTH_KNOB: ClassVar[str] = "length = L (one marker in each half)"

    def at_length(self, length: int) -> "AddingConfig":
        return dataclasses.replace(self, length=length)

    def __post_init__(self) -> None:
        check(self.length >= 2, "length", f"must be >= 2, got {self.length}")
        check(self.n_train >= 1 and self.n_eval >= 1, "n_train", "n_train and n_eval must be >= 1")


def adding_batch(cfg: AddingConfig, batch_size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """-> (inputs (B, L, 2) float: value, marker; targets (B, 1) float: the sum of the marked values)."""
    B, L = batch_size, cfg.length
    values = torch.rand(B, L, generator=generator)
    first = torch.randint(0, L // 2, (B,), generator=generator)
    second = torch.randint(L // 2, L, (B,), generator=generator)
    rows = torch.arange(B)
    markers = torch.zeros(B, L)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    target = (values[rows, first] + values[rows, second])[:, None]
    return torch.stack([values, markers], -1), target


@register_task("adding", AddingConfig)
class Adding(GeneratedTask):
    def __init__(self, **cfg) -> None:
        self.cfg = c = build_config(AddingConfig, cfg)
        self.info = TaskInfo(
            name="adding", kind="regress", length=c.length,
            source="generated (Hochreiter & Schmidhuber 1997; Arjovsky et al. 2016)",
            sizes=self._sizes(c.n_train, c.n_eval), n_classes=1, d_input=2,
            notes="sum of the two marked values; predicting 1 scores MSE 1/6",
        )

    def make_batch(self, batch_size: int, generator: torch.Generator) -> Batch:
        x, y = adding_batch(self.cfg, batch_size, generator)
        return Batch(x, y)
