"""digit_captions: caption a canvas of 1-4 MNIST digits (image to text).

A canvas (``height`` x ``width``) holds ``min_digits``..``max_digits`` digits (side ``digit_size``) at
non-overlapping uniform positions (``mnist_digits.place_digits``). Its caption (``caption``):

- ``digits``: the digit string read left to right (by the digits' centres; ties top first), e.g. "307";
- ``words``: their count and positions in words, left to right, e.g.
  "three digits: 3 top left, 0 bottom center, 7 top right" (top / bottom: the centre's half of the
  height; left / center / right: its third of the width).

Characters are tokens: ids 0 PAD, 1 BOS, 2 EOS, then ``ALPHABET``. Inputs pack the image and the
caption (``models.layouts.ImageCaption``): (B, H*W + T, 1) float, the pixels in [0, 1] row-major then
the T = ``max_tokens`` caption tokens BOS, characters, EOS, PAD... as floats; targets (B, T) long,
the next token at each caption position (the characters then EOS), IGNORE after. Kind ``lm``.

Metrics: ``char_accuracy`` (the predicted token equals the target, over the characters and EOS)
and ``exact_match`` (all of a caption's tokens right), which ranks models. The ``captioner``
architecture scores evaluation splits on its greedy generation from the image (``eval_decode``),
so these are the generated captions' scores; on training batches they are teacher-forced.
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
from torch import Tensor

from ..config import build_config, check
from ..models.layouts import ImageCaption
from .base import IGNORE, Batch, TaskInfo, register_task
from .mnist_digits import SOURCE, DigitPool, DigitTask, fits_on_grid, paste, place_digits

PAD, BOS, EOS = 0, 1, 2
ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz ,:"
CAPTIONS = ("digits", "words")
NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def encode_text(text: str) -> list[int]:
    return [3 + ALPHABET.index(ch) for ch in text]


def decode_tokens(tokens: list[int]) -> str:
    """Token ids -> text, up to the first EOS (BOS and PAD dropped)."""
    out = []
    for t in tokens:
        if t == EOS:
            break
        if t >= 3:
            out.append(ALPHABET[t - 3])
    return "".join(out)


def caption_text(labels: list[int], centres: list[tuple[float, float]], height: int, width: int, style: str) -> str:
    """The caption of digits ``labels`` with centres (row, col), read left to right."""
    order = sorted(range(len(labels)), key=lambda k: (centres[k][1], centres[k][0]))
    if style == "digits":
        return "".join(str(labels[k]) for k in order)
    parts = []
    for k in order:
        r, c = centres[k]
        vert = "top" if r < height / 2 else "bottom"
        horiz = ("left", "center", "right")[min(2, int(3 * c / width))]
        parts.append(f"{labels[k]} {vert} {horiz}")
    n = len(labels)
    return f"{NUMBERS[n]} digit{'s' if n > 1 else ''}: " + ", ".join(parts)


def longest_caption(max_digits: int, style: str) -> int:
    """Characters in the longest caption of up to ``max_digits`` digits."""
    if style == "digits":
        return max_digits
    # "bottom center" is the longest position; parts are joined by ", "
    return max(len(f"{NUMBERS[n]} digit{'s' if n > 1 else ''}: ") + n * len("0 bottom center") + 2 * (n - 1)
               for n in range(1, max_digits + 1))


@dataclasses.dataclass
class CaptionsConfig:
    height: int = 32
    width: int = 64
    digit_size: int = 14  # 28 (as shipped) or 14 (2 x 2 averaged)
    min_digits: int = 1
    max_digits: int = 4
    caption: str = "digits"  # digits | words (see the module docstring)
    max_tokens: int = 0  # T caption positions (BOS, characters, EOS); 0: the longest caption + 2
    n_train: int = 20_000  # canvases per training epoch (generated afresh per epoch and seed)
    n_eval: int = 1_000  # canvases in each of val and test (fixed)

    FIXED_LENGTH: ClassVar[str] = "the canvas's pixels then the caption's max_tokens positions"

    def __post_init__(self) -> None:
        check(self.digit_size in (14, 28), "digit_size", f"must be 14 or 28, got {self.digit_size}")
        check(1 <= self.min_digits <= self.max_digits <= 9, "min_digits",
              f"need 1 <= min_digits <= max_digits <= 9, got {self.min_digits}, {self.max_digits}")
        check(fits_on_grid(self.height, self.width, self.digit_size, self.max_digits), "max_digits",
              f"{self.max_digits} digits of side {self.digit_size} do not fit on a {self.height} x {self.width} canvas")
        check(self.caption in CAPTIONS, "caption", f"must be one of {CAPTIONS}, got {self.caption!r}")
        need = longest_caption(self.max_digits, self.caption) + 2
        check(self.max_tokens == 0 or self.max_tokens >= need, "max_tokens",
              f"{self.max_tokens} positions cannot hold the longest {self.caption!r} caption of {self.max_digits} "
              f"digits ({need - 2} characters + BOS + EOS = {need}); raise max_tokens or set it to 0")
        check(self.n_train >= 1 and self.n_eval >= 1, "n_train", "n_train and n_eval must be >= 1")

    @property
    def tokens(self) -> int:
        return self.max_tokens or longest_caption(self.max_digits, self.caption) + 2


@register_task("digit_captions", CaptionsConfig)
class DigitCaptions(DigitTask):
    def __init__(self, **cfg: Any) -> None:
        self.cfg = c = build_config(CaptionsConfig, cfg)
        self.pool = DigitPool(c.digit_size)
        vocab = 3 + len(ALPHABET)
        self.info = TaskInfo(
            name="digit_captions", kind="lm", length=c.height * c.width + c.tokens, source=SOURCE,
            sizes={"train": c.n_train, "val": c.n_eval, "test": c.n_eval}, n_classes=vocab, d_input=1,
            layout=ImageCaption((c.height, c.width, 1), c.tokens, vocab, BOS, EOS, PAD), metric="exact_match",
            notes=(f"{c.min_digits}-{c.max_digits} digits of {c.digit_size}x{c.digit_size} on {c.height}x{c.width}; "
                   f"caption '{c.caption}' in at most {c.tokens} tokens"),
        )

    def sample(self, split: str, batch_size: int, generator: torch.Generator) -> tuple[Tensor, list[str]]:
        """Canvases (B, H, W) and their captions."""
        c = self.cfg
        counts = torch.randint(c.min_digits, c.max_digits + 1, (batch_size,), generator=generator)
        corners = place_digits(counts, c.digit_size, c.height, c.width, generator)
        K = corners.shape[1]
        images, labels = self.pool.draw(split, batch_size * K, generator)
        images, labels = images.view(batch_size, K, c.digit_size, c.digit_size), labels.view(batch_size, K)
        canvas = paste(torch.zeros(batch_size, c.height, c.width), images, corners)
        half = (c.digit_size - 1) / 2
        texts = []
        for b in range(batch_size):
            n = int(counts[b])
            centres = [(corners[b, k, 0].item() + half, corners[b, k, 1].item() + half) for k in range(n)]
            texts.append(caption_text(labels[b, :n].tolist(), centres, c.height, c.width, c.caption))
        return canvas, texts

    def make_batch(self, split: str, batch_size: int, generator: torch.Generator) -> Batch:
        canvas, texts = self.sample(split, batch_size, generator)
        T = self.cfg.tokens
        tokens = torch.full((batch_size, T + 1), PAD, dtype=torch.long)
        targets = torch.full((batch_size, T), IGNORE, dtype=torch.long)
        for b, text in enumerate(texts):
            seq = [BOS] + encode_text(text) + [EOS]
            tokens[b, : len(seq)] = torch.tensor(seq)
            targets[b, : len(seq) - 1] = torch.tensor(seq[1:])
        inputs = torch.cat([canvas.flatten(1), tokens[:, :T].float()], 1)[..., None]
        return Batch(inputs, targets)

    def metrics(self, outputs: Tensor, batch: Batch) -> dict[str, tuple[float, int]]:
        keep = batch.targets != IGNORE
        right = (outputs.detach().argmax(-1) == batch.targets) | ~keep
        B = batch.targets.shape[0]
        return {"char_accuracy": (float((right & keep).sum()), int(keep.sum())),
                "exact_match": (float(right.all(1).sum()), B)}
