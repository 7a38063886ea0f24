"""The recall suite: selective copying and induction heads (Mamba, Gu & Dao 2023) and
multi-query associative recall (MQAR; Zoology, Arora et al. 2023). All are ``tag`` tasks scored
only at their answer positions (targets ``IGNORE`` elsewhere).

selective_copy: ``n_copy`` data tokens from {1..vocab_size-2} at random distinct, ordered
positions among ``n_noise + n_copy`` slots otherwise filled with the noise token 0, then
``n_copy`` copies of the marker vocab_size-1; the answers at those last ``n_copy`` positions are
the data tokens in order. Layout of the generator used for the Mamba paper's experiment
(``torch_copying_data(L, M, A, variable=True)`` of the S4/safari code): L = ``n_noise``,
M = ``n_copy``, A = ``vocab_size``; length L + 2M (Mamba: L = 4096, M = 16, A = 16).

induction_heads: ``length - 1`` random symbols from {0..vocab_size-1}, one of them at a random
position p <= length - 3 replaced by the trigger ``vocab_size``, and the trigger again at the
last position, where the answer is the symbol that followed the first trigger (Mamba: 16 symbols,
trained at length 256, tested at 2^6 .. 2^20: build the task again with another ``length``).
These two are generated per batch from (seed, epoch), like the Mamba paper's training.

mqar: Zoology's ``multiquery_ar`` with all its knobs. ``num_kv_pairs`` distinct keys from
{1..vocab_size/2-1} with distinct values from {vocab_size/2..vocab_size-1}, laid out k1 v1 k2 v2 ..,
then every key queried once in the rest of the sequence: query i sits at position
2*num_kv_pairs + 2*g_i, the gaps g_i drawn without replacement from {0..(input_seq_len -
2*num_kv_pairs)/2 - 1} with probability proportional to power_a * g**(power_a - 1) (g from 1):
small power_a puts queries right after the context. The answer at a query's position is its
key's value; other positions hold 0, or random tokens from {0..vocab_size-1} when
``random_non_queries``. As in Zoology the splits are fixed sets (100k train, 3k test) drawn once
from the task's ``seed``; the run's seed only shuffles them.
"""
from __future__ import annotations

import dataclasses
import hashlib
from typing import ClassVar, Iterator

import torch
from torch import Tensor

from ..config import build_config, check
from .base import IGNORE, Batch, Task, TaskInfo, register_task, split_generator
from .synthetic import GeneratedTask


@dataclasses.dataclass
class SelectiveCopyConfig:
    n_noise: int = 4096  # L: noise slots among which the data tokens are scattered
    n_copy: int = 16  # M: data tokens to copy
    vocab_size: int = 16  # A: noise 0, data 1..A-2, marker A-1
    n_train: int = 10_000  # examples per training epoch (generated afresh per epoch and seed)
    n_eval: int = 1_000  # examples in each of val and test (fixed)

    LENGTH_KNOB: ClassVar[str] = ("n_noise = L - 2 n_copy with n_copy = min(n_copy, L // 4) (the same data tokens "
                                  "scatter among more noise; never more to copy than a quarter of L)")

    def at_length(self, length: int) -> "SelectiveCopyConfig":
        check(length >= 4, "length", f"must be >= 4 (one data token, its copy and noise), got {length}")
        n_copy = min(self.n_copy, length // 4)
        return dataclasses.replace(self, n_copy=n_copy, n_noise=length - 2 * n_copy)

    def __post_init__(self) -> None:
        check(self.n_noise >= 0, "n_noise", f"must be >= 0, got {self.n_noise}")
        check(self.n_copy >= 1, "n_copy", f"must be >= 1, got {self.n_copy}")
        check(self.vocab_size >= 3, "vocab_size", f"must be >= 3 (noise, data, marker), got {self.vocab_size}")
        check(self.n_train >= 1 and self.n_eval >= 1, "n_train", "n_train and n_eval must be >= 1")

    @property
    def length(self) -> int:
        return self.n_noise + 2 * self.n_copy


def selective_copy_batch(
    cfg: SelectiveCopyConfig, batch_size: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """-> (inputs (B, L) long, targets (B, L) long, IGNORE outside the last n_copy positions)."""
    B, M, A = batch_size, cfg.n_copy, cfg.vocab_size
    slots = cfg.n_noise + M
    tokens = torch.randint(1, A - 1, (B, M), generator=generator)
    where = torch.rand(B, slots, generator=generator).topk(M, dim=1).indices.sort(dim=1).values
    inputs = torch.zeros(B, cfg.length, dtype=torch.long)
    inputs.scatter_(1, where, tokens)
    inputs[:, slots:] = A - 1
    targets = torch.full((B, cfg.length), IGNORE, dtype=torch.long)
    targets[:, slots:] = tokens
    return inputs, targets


@register_task("selective_copy", SelectiveCopyConfig)
class SelectiveCopy(GeneratedTask):
    def __init__(self, **cfg) -> None:
        self.cfg = c = build_config(SelectiveCopyConfig, cfg)
        self.info = TaskInfo(
            name="selective_copy", kind="tag", length=c.length, source="generated (Mamba, Gu & Dao 2023)",
            sizes=self._sizes(c.n_train, c.n_eval), n_classes=c.vocab_size, vocab_size=c.vocab_size,
            notes=f"copy {c.n_copy} tokens scattered among {c.n_noise} noise tokens",
        )

    def make_batch(self, batch_size: int, generator: torch.Generator) -> Batch:
        return Batch(*selective_copy_batch(self.cfg, batch_size, generator))


@dataclasses.dataclass
class InductionHeadsConfig:
    length: int = 256  # L (Mamba: trained at 256)
    vocab_size: int = 16  # ordinary symbols; the trigger is one more token
    n_train: int = 10_000
    n_eval: int = 1_000

    LENGTH_KNOB: ClassVar[str] = "length = L (the trigger anywhere in the first L - 2 tokens)"

    def at_length(self, length: int) -> "InductionHeadsConfig":
        return dataclasses.replace(self, length=length)

    def __post_init__(self) -> None:
        check(self.length >= 3, "length", f"must be >= 3, got {self.length}")
        check(self.vocab_size >= 2, "vocab_size", f"must be >= 2, got {self.vocab_size}")
        check(self.n_train >= 1 and self.n_eval >= 1, "n_train", "n_train and n_eval must be >= 1")


def induction_heads_batch(
    cfg: InductionHeadsConfig, batch_size: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """-> (inputs (B, L) long with the trigger ``vocab_size``, targets (B, L) long, IGNORE but at L-1)."""
    B, L, V = batch_size, cfg.length, cfg.vocab_size
    inputs = torch.randint(0, V, (B, L), generator=generator)
    first = torch.randint(0, L - 2, (B,), generator=generator)  # p <= L-3: p+1 is a symbol
    rows = torch.arange(B)
    inputs[rows, first] = V
    inputs[:, L - 1] = V
    targets = torch.full((B, L), IGNORE, dtype=torch.long)
    targets[:, L - 1] = inputs[rows, first + 1]
    return inputs, targets


@register_task("induction_heads", InductionHeadsConfig)
class InductionHeads(GeneratedTask):
    def __init__(self, **cfg) -> None:
        self.cfg = c = build_config(InductionHeadsConfig, cfg)
        self.info = TaskInfo(
            name="induction_heads", kind="tag", length=c.length, source="generated (Mamba, Gu & Dao 2023)",
            sizes=self._sizes(c.n_train, c.n_eval), n_classes=c.vocab_size, vocab_size=c.vocab_size + 1,
            notes=f"recall the symbol after the trigger; {c.vocab_size} symbols + trigger",
        )

    def make_batch(self, batch_size: int, generator: torch.Generator) -> Batch:
        return Batch(*induction_heads_batch(self.cfg, batch_size, generator))


@dataclasses.dataclass
class MQARConfig:
    vocab_size: int = 8192
    input_seq_len: int = 64
    num_kv_pairs: int = 4
    power_a: float = 0.01
    random_non_queries: bool = True
    n_train: int = 100_000
    n_val: int = 3_000
    n_test: int = 3_000
    seed: int = 0  # the data set's seed (the run's seed only shuffles training batches)

    LENGTH_KNOB: ClassVar[str] = ("input_seq_len = L with the same key-value pairs and vocabulary (queries spread "
                                  "over the longer tail); needs L even, L >= 4 pairs, L <= vocab_size")

    def at_length(self, length: int) -> "MQARConfig":
        return dataclasses.replace(self, input_seq_len=length)

    def __post_init__(self) -> None:
        L, kv, V = self.input_seq_len, self.num_kv_pairs, self.vocab_size
        check(L >= 4 and L % 2 == 0, "input_seq_len", f"must be even and >= 4, got {L}")
        check(V >= L, "vocab_size", f"must be >= input_seq_len = {L} (as in Zoology), got {V}")
        check(V < 2**31, "vocab_size", f"must be < 2**31, got {V}")
        check(kv >= 1 and 4 * kv <= L, "num_kv_pairs", f"must be in [1, input_seq_len/4 = {L // 4}], got {kv}")
        check(kv <= V // 2 - 1, "num_kv_pairs", f"needs {kv} distinct keys in 1..{V // 2 - 1}")
        check(self.power_a > 0, "power_a", f"must be > 0, got {self.power_a}")
        for name in ("n_train", "n_val", "n_test"):
            check(getattr(self, name) >= 1, name, f"must be >= 1, got {getattr(self, name)}")


def mqar_batch(cfg: MQARConfig, batch_size: int, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """-> (inputs (B, L) long, query positions (B, kv) long, values (B, kv) long): the answer at
    ``inputs[b, query[b, i]]`` (a key) is ``values[b, i]``."""
    B, L, kv, V = batch_size, cfg.input_seq_len, cfg.num_kv_pairs, cfg.vocab_size
    half = V // 2
    # a uniform random k-subset in random order: the top k of iid uniforms
    keys = torch.rand(B, half - 1, generator=generator).topk(kv, dim=1).indices + 1
    values = torch.rand(B, V - half, generator=generator).topk(kv, dim=1).indices + half
    space = (L - 2 * kv) // 2
    g = torch.arange(1, space + 1, dtype=torch.float64)
    logp = torch.log(cfg.power_a * g ** (cfg.power_a - 1))
    # Gumbel-top-k = successive sampling without replacement with probabilities p (numpy's choice)
    u = torch.rand(B, space, generator=generator, dtype=torch.float64).clamp_min(1e-300)
    gaps = (logp - torch.log(-torch.log(u))).topk(kv, dim=1).indices
    inputs = torch.zeros(B, L, dtype=torch.long)
    inputs[:, 0 : 2 * kv : 2] = keys
    inputs[:, 1 : 2 * kv : 2] = values
    query = 2 * kv + 2 * gaps
    inputs.scatter_(1, query, keys)
    if cfg.random_non_queries:
        noise = torch.randint(0, V, (B, L), generator=generator)
        inputs = torch.where(inputs == 0, noise, inputs)
    return inputs, query, values


_BLOCK = 1000  # examples drawn per generator when a fixed split is built


@register_task("mqar", MQARConfig)
class MQAR(Task):
    def __init__(self, **cfg) -> None:
        self.cfg = c = build_config(MQARConfig, cfg)
        self.sizes = {"train": c.n_train, "val": c.n_val, "test": c.n_test}
        self._data: dict[str, tuple[Tensor, Tensor, Tensor]] = {}
        self.info = TaskInfo(
            name="mqar", kind="tag", length=c.input_seq_len, source="generated (Zoology MQAR, Arora et al. 2023)",
            sizes=dict(self.sizes), n_classes=c.vocab_size, vocab_size=c.vocab_size,
            notes=f"{c.num_kv_pairs} key-value pairs, power_a {c.power_a}, random_non_queries {c.random_non_queries}",
        )

    def split_data(self, split: str) -> tuple[Tensor, Tensor, Tensor]:
        """The fixed split (inputs, query positions, values), drawn once from the task's seed in
        blocks of ``_BLOCK`` examples and kept compact (int16 tokens when they fit)."""
        self._check_split(split)
        if split not in self._data:
            n, parts = self.sizes[split], []
            small = torch.int16 if self.cfg.vocab_size <= 2**15 else torch.int32
            for i, start in enumerate(range(0, n, _BLOCK)):
                key = hashlib.sha256(f"mqar/{self.cfg.seed}/{split}/{i}".encode()).digest()
                gen = torch.Generator().manual_seed(int.from_bytes(key[:8], "little") >> 1)
                x, q, v = mqar_batch(self.cfg, min(_BLOCK, n - start), gen)
                parts.append((x.to(small), q.to(torch.int16), v.to(small)))
            self._data[split] = tuple(torch.cat(p) for p in zip(*parts))
        return self._data[split]

    def batches(self, split: str, batch_size: int, seed: int = 0, epoch: int = 0) -> Iterator[Batch]:
        inputs, query, values = self.split_data(split)
        n = len(inputs)
        order = torch.randperm(n, generator=split_generator(split, seed, epoch, 0)) if split == "train" else None
        for start in range(0, n, batch_size):
            rows = slice(start, start + batch_size) if order is None else order[start : start + batch_size]
            x, q = inputs[rows].long(), query[rows].long()
            targets = torch.full(x.shape, IGNORE, dtype=torch.long)
            targets.scatter_(1, q, values[rows].long())
            yield Batch(x, targets)
