"""mnist_segmentation: per-pixel classes of MNIST digits composed on a larger canvas (M2NIST-style).

M2NIST (Farhan Kabir, 2018) places up to three MNIST digits on a 64 x 84 canvas and labels every
pixel with its digit's class or background. Here, built from the bundled MNIST (``mnist_digits``):
``min_digits``..``max_digits`` digits of side ``digit_size`` (28, or 14 by 2 x 2 area averaging) at
non-overlapping uniform positions on a ``height`` x ``width`` canvas. A pixel's class is 1 + the digit
(0..9) when the digit's intensity there is >= ``threshold``, else 0 (background): 11 classes.

Inputs (B, H*W, 1) float in [0, 1], row-major (``image_shape`` (H, W, 1)); targets (B, H*W) long;
kind ``tag``. Metrics: ``accuracy`` (pixel accuracy), ``iou_<c>`` per class (``iou_bg``, ``iou_0`` ..
``iou_9``: intersection / union over the whole split, for the classes present in the targets or the
predictions) and ``miou``, their mean, which ranks models.
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
from torch import Tensor

from ..config import build_config, check
from .base import Batch, TaskInfo, register_task
from .mnist_digits import SOURCE, DigitPool, DigitTask, fits_on_grid, paste, place_digits

N_CLASSES = 11  # background + 10 digits
CLASS_NAMES = ("bg",) + tuple(str(d) for d in range(10))


@dataclasses.dataclass
class SegmentationConfig:
    height: int = 32  # H of the canvas
    width: int = 32  # W
    digit_size: int = 14  # side of each digit: 28 (as shipped) or 14 (2 x 2 averaged)
    min_digits: int = 1
    max_digits: int = 3
    threshold: float = 0.5  # intensity from which a pixel belongs to its digit
    n_train: int = 20_000  # canvases per training epoch (generated afresh per epoch and seed)
    n_eval: int = 1_000  # canvases in each of val and test (fixed)

    FIXED_LENGTH: ClassVar[str] = "the pixels of one canvas, row by row (height x width)"

    def __post_init__(self) -> None:
        check(self.digit_size in (14, 28), "digit_size", f"must be 14 or 28, got {self.digit_size}")
        check(self.height >= self.digit_size and self.width >= self.digit_size, "height",
              f"the canvas {self.height} x {self.width} must hold a digit of side {self.digit_size}")
        check(1 <= self.min_digits <= self.max_digits, "min_digits",
              f"need 1 <= min_digits <= max_digits, got {self.min_digits}, {self.max_digits}")
        check(fits_on_grid(self.height, self.width, self.digit_size, self.max_digits), "max_digits",
              f"{self.max_digits} digits of side {self.digit_size} do not fit side by side on a "
              f"{self.height} x {self.width} canvas")
        check(0 < self.threshold < 1, "threshold", f"must be in (0, 1), got {self.threshold}")
        check(self.n_train >= 1 and self.n_eval >= 1, "n_train", "n_train and n_eval must be >= 1")


def compose_canvases(pool: DigitPool, split: str, cfg: SegmentationConfig, batch_size: int,
                     generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """-> canvas (B, H, W) float, mask (B, H, W) long classes, labels (B, K) (-1 unused), corners (B, K, 2)."""
    counts = torch.randint(cfg.min_digits, cfg.max_digits + 1, (batch_size,), generator=generator)
    corners = place_digits(counts, pool.size, cfg.height, cfg.width, generator)
    K = corners.shape[1]
    images, labels = pool.draw(split, batch_size * K, generator)
    images, labels = images.view(batch_size, K, pool.size, pool.size), labels.view(batch_size, K)
    used = corners[..., 0] >= 0
    labels = torch.where(used, labels, -1)
    canvas = paste(torch.zeros(batch_size, cfg.height, cfg.width), images, corners)
    mask = torch.zeros(batch_size, cfg.height, cfg.width, dtype=torch.long)
    for b, k in used.nonzero().tolist():  # boxes do not overlap: each pixel has at most one digit
        r, c = corners[b, k].tolist()
        s = pool.size
        on = images[b, k] >= cfg.threshold
        mask[b, r : r + s, c : c + s][on] = 1 + labels[b, k]
    return canvas, mask, labels, corners


def iou_counts(pred: Tensor, target: Tensor, n_classes: int) -> tuple[Tensor, Tensor]:
    """Per-class intersection and union pixel counts (n_classes,) of predicted vs target class maps."""
    inter = torch.bincount(target[pred == target], minlength=n_classes)
    area_p = torch.bincount(pred.flatten(), minlength=n_classes)
    area_t = torch.bincount(target.flatten(), minlength=n_classes)
    return inter, area_p + area_t - inter


@register_task("mnist_segmentation", SegmentationConfig)
class MnistSegmentation(DigitTask):
    def __init__(self, **cfg: Any) -> None:
        self.cfg = c = build_config(SegmentationConfig, cfg)
        self.pool = DigitPool(c.digit_size)
        self.info = TaskInfo(
            name="mnist_segmentation", kind="tag", length=c.height * c.width, source=SOURCE,
            sizes={"train": c.n_train, "val": c.n_eval, "test": c.n_eval}, n_classes=N_CLASSES, d_input=1,
            image_shape=(c.height, c.width, 1), metric="miou",
            notes=(f"{c.min_digits}-{c.max_digits} digits of {c.digit_size}x{c.digit_size} on a {c.height}x{c.width} "
                   f"canvas; per-pixel class: background or digit (intensity >= {c.threshold})"),
        )

    def make_batch(self, split: str, batch_size: int, generator: torch.Generator) -> Batch:
        canvas, mask, _, _ = compose_canvases(self.pool, split, self.cfg, batch_size, generator)
        return Batch(canvas.flatten(1)[..., None], mask.flatten(1))

    def metrics(self, outputs: Tensor, batch: Batch) -> dict[str, tuple[float, int]]:
        out = super().metrics(outputs, batch)  # accuracy: pixel accuracy
        inter, union = iou_counts(outputs.detach().argmax(-1), batch.targets, N_CLASSES)
        for name, i, u in zip(CLASS_NAMES, inter.tolist(), union.tolist()):
            if u:  # summed over batches: intersection / union of the split; a class absent from it has none
                out[f"iou_{name}"] = (float(i), u)
        return out

    def derived_metrics(self, averages: dict[str, float]) -> dict[str, float]:
        ious = [averages[f"iou_{n}"] for n in CLASS_NAMES if f"iou_{n}" in averages]
        return {"miou": sum(ious) / len(ious)} if ious else {}
