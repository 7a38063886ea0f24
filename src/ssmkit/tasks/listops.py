"""LRA ListOps (Tay et al. 2021, "Long Range Arena"; after Nangia & Bowman 2018).

A prefix expression over digits 0-9 with the operators ``[MIN``, ``[MAX``, ``[MED`` (median) and
``[SM`` (sum modulo 10), each closed by ``]``; the label is the expression's value (10 classes),
e.g. ``[MAX 2 9 [MIN 4 7 ] 0 ]`` -> 9. The tree distribution is LRA's generator
(``lra_benchmarks/data/listops.py``): a node at depth < ``max_depth`` is an operator with
probability ``operator_p`` = 0.25 (else a digit; depth ``max_depth`` is always a digit; the root has
depth 1), an operator has uniform 2..``max_args`` arguments, operator and digits are uniform.
``[MED`` is ``int(np.median(args))``: the lower-rounded mean of the two middle values for an even
count. Trees are kept when ``min_length < tokens < max_length`` and unique. The closing brackets are
tokens (an early LRA pipeline stripped them; the released data and the S4 papers keep them).

Trees are drawn level by level for many trees at once in numpy (sizes, values and token positions
are segment reductions over the children of each level), then cached on disk keyed by the
settings. The stream of accepted trees fills test, then val, then train, so the evaluation sets
do not change when only ``n_train`` changes.

Tokens: 0 pad, 1..10 digits 0..9, 11 ``[MIN``, 12 ``[MAX``, 13 ``[MED``, 14 ``[SM``, 15 ``]``.
Batches are right-padded to their longest row with ``mask`` (B, L) marking real tokens.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import ClassVar, Iterator

import numpy as np
import torch

from ..config import build_config, check
from .base import Batch, Task, TaskInfo, register_task, split_generator
from .cache import cached_arrays

log = logging.getLogger(__name__)

PAD, DIGIT0, OP0, CLOSE = 0, 1, 11, 15
OPERATORS = ("[MIN", "[MAX", "[MED", "[SM")
VOCAB = ("<pad>", *(str(d) for d in range(10)), *OPERATORS, "]")
_CHUNK = 20_000  # trees drawn per vectorized round (part of the random stream: fixed)
_MAX_BARREN_ROUNDS = 50  # rounds in a row without a new unique tree before giving up
_GENERATOR_VERSION = 1  # part of the cache key: bump when the drawing changes


@dataclasses.dataclass
class ListOpsConfig:
    min_length: int = 500  # keep trees with min_length < tokens < max_length (LRA: 500, 2000)
    max_length: int = 2000
    max_depth: int = 10  # depth of the root is 1; nodes at max_depth are digits
    max_args: int = 10
    operator_p: float = 0.25  # LRA's VALUE_P: probability that a node above max_depth is an operator
    n_train: int = 96_000
    n_val: int = 2_000
    n_test: int = 2_000
    seed: int = 0  # the data set's seed (the run's seed only shuffles training batches)

    LENGTH_KNOB: ClassVar[str] = ("max_length = L, min_length scaled with it (LRA: 500 of 2000); expressions are "
                                  "drawn until they fit")

    def at_length(self, length: int) -> "ListOpsConfig":
        return dataclasses.replace(self, max_length=length,
                                   min_length=max(1, round(length * self.min_length / self.max_length)))

    def __post_init__(self) -> None:
        check(self.min_length >= 0, "min_length", f"must be >= 0, got {self.min_length}")
        check(self.max_length > self.min_length + 1, "max_length",
              f"must exceed min_length + 1 = {self.min_length + 1} (strict bounds), got {self.max_length}")
        check(self.max_length <= 1_000_000, "max_length", f"must be <= 1e6, got {self.max_length}")
        check(self.max_depth >= 1, "max_depth", f"must be >= 1, got {self.max_depth}")
        check(self.max_args >= 2, "max_args", f"must be >= 2, got {self.max_args}")
        check(0.0 < self.operator_p < 1.0, "operator_p", f"must be in (0, 1), got {self.operator_p}")
        for name in ("n_train", "n_val", "n_test"):
            check(getattr(self, name) >= 1, name, f"must be >= 1, got {getattr(self, name)}")


def _segment_offsets(counts: np.ndarray) -> np.ndarray:
    """(n,) segment sizes -> (n + 1,) start offsets, the last one the total."""
    out = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=out[1:])
    return out


def _draw_trees(
    cfg: ListOpsConfig, rng: np.random.Generator, n_trees: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw ``n_trees`` trees; -> (tokens uint8 flat, lengths, labels) of the kept ones, in order.

    Level d holds the nodes of depth d of every tree, the children of one operator contiguous and
    in order, so every per-operator quantity is a reduction over a segment of the next level.
    """
    tree = [np.arange(n_trees)]  # per level: tree id of each node
    kind = []  # per level: -1 digit, else operator index 0..3
    digit = []
    child_start = []  # per level: offsets of each node's children in the next level
    alive = np.ones(n_trees, dtype=bool)  # trees not yet known to exceed max_length
    tokens_so_far = np.zeros(n_trees, dtype=np.int64)
    for depth in range(1, cfg.max_depth + 1):
        t = tree[-1]
        n = len(t)
        is_op = rng.random(n) < cfg.operator_p if depth < cfg.max_depth else np.zeros(n, dtype=bool)
        n_args = np.where(is_op, rng.integers(2, cfg.max_args + 1, n), 0)
        kind.append(np.where(is_op, rng.integers(0, 4, n), -1))
        digit.append(rng.integers(0, 10, n))
        children = np.repeat(t, n_args)
        # a lower bound on the final length: tokens placed so far + one per pending child
        tokens_so_far += np.bincount(t, minlength=n_trees) + np.bincount(t[is_op], minlength=n_trees)
        alive &= tokens_so_far + np.bincount(children, minlength=n_trees) < cfg.max_length
        grow = alive[t]  # stop growing trees already too long
        n_args[~grow] = 0
        child_start.append(_segment_offsets(n_args))
        children = children[alive[children]]
        if not len(children):
            break
        tree.append(children)
    n_levels = len(kind)

    # bottom-up: token count and value of every node
    size: list[np.ndarray] = [np.empty(0)] * n_levels
    value: list[np.ndarray] = [np.empty(0)] * n_levels
    for d in range(n_levels - 1, -1, -1):
        s = np.ones(len(kind[d]), dtype=np.int64)
        v = digit[d].copy()
        if d + 1 < n_levels and len(tree[d + 1]):
            off = child_start[d]
            count = np.diff(off)
            s += np.where(count > 0, 1 + np.diff(_segment_offsets(size[d + 1])[off]), 0)
            ops = np.nonzero(count > 0)[0]
            cn = count[ops]
            # the next level is exactly the children of these operators, in order: per-operator
            # cumulative histograms (n_ops, 10) of the children's values give every order statistic
            seg = np.repeat(np.arange(len(ops)), cn)
            cum = np.bincount(seg * 10 + value[d + 1], minlength=len(ops) * 10).reshape(-1, 10).cumsum(1)
            rank = lambda r: (cum <= r[:, None]).sum(1)  # the digit at 0-based rank r of the sorted args
            total = np.diff(_segment_offsets(value[d + 1])[off])[ops]
            k = kind[d][ops]
            v[ops] = np.select([k == 0, k == 1, k == 2],
                               [rank(np.zeros_like(cn)), rank(cn - 1), (rank((cn - 1) // 2) + rank(cn // 2)) // 2],
                               total % 10)
        size[d], value[d] = s, v

    length = size[0]
    keep = alive & (length > cfg.min_length) & (length < cfg.max_length)
    # top-down: position of every node's first token inside its tree
    offsets = _segment_offsets(np.where(keep, length, 0))
    flat = np.zeros(offsets[-1], dtype=np.uint8)
    pos = np.zeros(n_trees, dtype=np.int64)
    for d in range(n_levels):
        t = tree[d]
        k = keep[t]
        base = offsets[t[k]] + pos[k]
        flat[base] = np.where(kind[d][k] >= 0, OP0 + kind[d][k], DIGIT0 + digit[d][k])
        op = k & (kind[d] >= 0)
        flat[offsets[t[op]] + pos[op] + size[d][op] - 1] = CLOSE
        if d + 1 < n_levels and len(tree[d + 1]):
            off = child_start[d]
            child_size = size[d + 1]
            before = _segment_offsets(child_size)[:-1]  # exclusive cumsum over the whole level
            parent = np.repeat(np.arange(len(t)), np.diff(off))
            pos = pos[parent] + 1 + before - before[off[parent]]
    return flat, length[keep], value[0][keep].astype(np.uint8)


def generate_listops(cfg: ListOpsConfig) -> dict[str, np.ndarray]:
    """All unique trees of the data set: tokens (uint8, flat), offsets (n + 1,), labels (n,);
    rows [0, n_test) are test, then n_val val rows, then n_train train rows."""
    need = cfg.n_test + cfg.n_val + cfg.n_train
    rng = np.random.default_rng(cfg.seed)
    seen: set[bytes] = set()
    parts, lengths, labels = [], [], []
    barren = 0
    while len(seen) < need:
        flat, length, label = _draw_trees(cfg, rng, _CHUNK)
        ends = np.cumsum(length)
        found = 0
        for i, (a, b) in enumerate(zip(ends - length, ends)):
            row = flat[a:b].tobytes()
            if row in seen:
                continue
            seen.add(row)
            parts.append(flat[a:b])
            lengths.append(b - a)
            labels.append(label[i])
            found += 1
            if len(seen) == need:
                break
        barren = 0 if found else barren + 1
        if barren >= _MAX_BARREN_ROUNDS:
            raise ValueError(
                f"ListOps: only {len(seen)} unique trees with {cfg.min_length} < length < "
                f"{cfg.max_length} after {_MAX_BARREN_ROUNDS} rounds of {_CHUNK} draws, but "
                f"n_test + n_val + n_train = {need}; widen the length range or lower the sizes"
            )
        log.info("listops: %d / %d unique trees", len(seen), need)
    return {
        "tokens": np.concatenate(parts),
        "offsets": _segment_offsets(np.asarray(lengths, dtype=np.int64)),
        "labels": np.asarray(labels, dtype=np.uint8),
    }


def to_string(tokens: np.ndarray | torch.Tensor) -> str:
    """Token ids (padding dropped) -> the LRA text form, e.g. ``[MAX 2 9 ]``."""
    return " ".join(VOCAB[int(t)] for t in tokens if int(t) != PAD)


@register_task("listops", ListOpsConfig)
class ListOps(Task):
    """The data set is built (or read from the cache) on first use, so ``info`` is free."""

    def __init__(self, **cfg) -> None:
        self.cfg = c = build_config(ListOpsConfig, cfg)
        self._data: dict[str, np.ndarray] | None = None
        n = (c.n_test, c.n_val, c.n_train)
        starts = np.cumsum((0,) + n)
        self._rows = {"test": (starts[0], starts[1]), "val": (starts[1], starts[2]), "train": (starts[2], starts[3])}
        self.info = TaskInfo(
            name="listops", kind="classify", length=c.max_length - 1,
            source="generated (LRA ListOps generator spec, Tay et al. 2021)",
            sizes={s: int(b - a) for s, (a, b) in self._rows.items()}, n_classes=10, vocab_size=len(VOCAB),
            notes=f"{c.min_length} < tokens < {c.max_length}, depth <= {c.max_depth}, <= {c.max_args} args",
        )

    def _arrays(self) -> dict[str, np.ndarray]:
        if self._data is None:
            c, need = self.cfg, sum(self.info.sizes.values())
            data = cached_arrays("listops", {**dataclasses.asdict(c), "version": _GENERATOR_VERSION},
                                 lambda: generate_listops(c))
            if len(data["labels"]) != need or len(data["offsets"]) != need + 1:
                raise ValueError(f"listops cache holds {len(data['labels'])} rows, expected {need}")
            self._data = data
        return self._data

    @property
    def tokens(self) -> np.ndarray:
        """All rows' tokens, concatenated (uint8)."""
        return self._arrays()["tokens"]

    @property
    def offsets(self) -> np.ndarray:
        """(rows + 1,) start of each row in ``tokens``."""
        return self._arrays()["offsets"]

    @property
    def labels(self) -> np.ndarray:
        return self._arrays()["labels"]

    def rows(self, split: str) -> range:
        """Global row indices of a split (test, val, train are consecutive blocks)."""
        self._check_split(split)
        a, b = self._rows[split]
        return range(int(a), int(b))

    def example(self, row: int) -> tuple[np.ndarray, int]:
        """(tokens, label) of one global row."""
        return self.tokens[self.offsets[row] : self.offsets[row + 1]], int(self.labels[row])

    def batches(self, split: str, batch_size: int, seed: int = 0, epoch: int = 0) -> Iterator[Batch]:
        rows = np.asarray(self.rows(split))
        if split == "train":
            order = torch.randperm(len(rows), generator=split_generator(split, seed, epoch, 0)).numpy()
            rows = rows[order]
        for start in range(0, len(rows), batch_size):
            yield self._batch(rows[start : start + batch_size])

    def _batch(self, rows: np.ndarray) -> Batch:
        lengths = self.offsets[rows + 1] - self.offsets[rows]
        L = int(lengths.max())
        cols = np.arange(L)
        mask = cols[None, :] < lengths[:, None]
        idx = np.where(mask, self.offsets[rows][:, None] + cols[None, :], 0)
        x = np.where(mask, self.tokens[idx], PAD)
        return Batch(torch.from_numpy(x.astype(np.int64)), torch.from_numpy(self.labels[rows].astype(np.int64)),
                     torch.from_numpy(mask))

