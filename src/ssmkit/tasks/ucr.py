"""UCR / UEA time-series classification on the archives bundled with sktime, by archive name.

The ``.ts`` files under ``sktime/datasets/data/<Name>/<Name>_{TRAIN,TEST}.ts`` are read here
directly (importing sktime costs seconds and pulls pandas): ``#`` / ``%`` comment lines,
``@key value`` header lines, then after ``@data`` one case per line, its dimensions separated by
``:``, the values of a dimension by ``,``, the class label last. Cases may differ in length
(JapaneseVowels, PLAID); the dimensions of one case must agree. Batches are right-padded to
their longest row with ``mask`` (B, L).

Splits: train and test as shipped; val is carved from train, stratified by class, from
``split_seed``. Every channel is z-normalized with the mean and standard deviation of the real
(unpadded) values of the shipped TRAIN file (train and val together, so the test inputs do not
depend on how val was carved). Classes are numbered in the order of the file's
``@classLabel`` header. Regression archives (``@targetLabel``: Covid3Month, Tecator) and files with
timestamps or missing values (``?``) are rejected with a message saying so.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar
from pathlib import Path

import numpy as np
import torch

from ..config import build_config, check
from . import sources
from .arrays import ExampleTask, Examples, stratified_split
from .base import TaskInfo, register_task

WHAT = "UCR/UEA classification"


@dataclasses.dataclass
class TsData:
    values: np.ndarray  # (n, L_max, C) float64, zero after each case's length
    lengths: np.ndarray  # (n,) int64
    labels: np.ndarray  # (n,) int64 index into class_names
    class_names: list[str]
    header: dict[str, str]  # lower-cased @keys -> the rest of the line


def _bad(path: Path, line_no: int, message: str) -> ValueError:
    return ValueError(f"{path}, line {line_no}: {message}")


def read_ts(path: Path) -> TsData:
    """Read a classification ``.ts`` file (see the module docstring for the format)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read the .ts file {path} ({type(e).__name__}: {e})") from e
    header: dict[str, str] = {}
    cases: list[list[np.ndarray]] = []
    names: list[str] = []
    class_names: list[str] = []
    in_data = False
    for line_no, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line[0] in "#%":
            continue
        if not in_data:
            if line[0] != "@":
                raise _bad(path, line_no, f"expected a comment, an @header or @data before the data, got {line[:40]!r}")
            key, _, rest = line[1:].partition(" ")
            key, rest = key.lower(), rest.strip()
            if key == "data":
                in_data = True
                class_names = _check_header(path, line_no, header)
            else:
                header[key] = rest
            continue
        *dims, label = line.split(":")
        if label not in class_names:
            raise _bad(path, line_no, f"class label {label!r} is not one of the declared {class_names}")
        if "?" in line:
            raise _bad(path, line_no, "missing values ('?') are not supported")
        try:
            series = [np.array(d.split(","), dtype=np.float64) for d in dims]
        except ValueError as e:
            raise _bad(path, line_no, f"a value is not a number ({e})") from e
        if len({len(s) for s in series}) != 1 or len(series[0]) == 0:
            raise _bad(path, line_no, "dimensions of one case must have one nonzero length, got "
                       f"{[len(s) for s in series]}")
        if cases and len(series) != len(cases[0]):
            raise _bad(path, line_no, f"{len(series)} dimensions, but the first case has {len(cases[0])}")
        cases.append(series)
        names.append(label)
    if not cases:
        raise ValueError(f"{path}: no cases after @data (the file is empty or truncated)")
    _check_declared(path, header, cases)
    lengths = np.array([len(c[0]) for c in cases], dtype=np.int64)
    values = np.zeros((len(cases), int(lengths.max()), len(cases[0])))
    for i, c in enumerate(cases):
        values[i, : lengths[i]] = np.stack(c, axis=1)
    labels = np.array([class_names.index(n) for n in names], dtype=np.int64)
    return TsData(values, lengths, labels, class_names, header)


def _check_header(path: Path, line_no: int, header: dict[str, str]) -> list[str]:
    """The declared class names; rejects what this reader does not support."""
    if header.get("timestamps", "false").lower() != "false":
        raise _bad(path, line_no, "@timeStamps true is not supported")
    if header.get("targetlabel", "false").lower() != "false":
        raise _bad(path, line_no, "a regression archive (@targetLabel) is not a classification task")
    flag, *names = header.get("classlabel", "false").split()
    if flag.lower() != "true" or not names:
        raise _bad(path, line_no, "expected '@classLabel true <labels...>' before @data")
    return names


def _check_declared(path: Path, header: dict[str, str], cases: list[list[np.ndarray]]) -> None:
    dims = header.get("dimensions")
    if dims is not None and int(dims) != len(cases[0]):
        raise ValueError(f"{path}: @dimensions {dims} but the cases have {len(cases[0])}")
    length = header.get("serieslength")
    if header.get("equallength", "").lower() == "true" and length is not None:
        wrong = sorted({len(c[0]) for c in cases} - {int(length)})
        if wrong:
            raise ValueError(f"{path}: @seriesLength {length} but cases of length {wrong}; "
                             "the file is truncated or corrupt")


def data_dir() -> Path:
    return sources.package_dir("sktime", "sktime", WHAT) / "datasets" / "data"


def bundled_names(root: Path | None = None) -> list[str]:
    """Archive names with a TRAIN/TEST pair of classification .ts files in sktime's data folder."""
    root = data_dir() if root is None else root
    found = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        train, test = folder / f"{folder.name}_TRAIN.ts", folder / f"{folder.name}_TEST.ts"
        if train.is_file() and test.is_file() and _is_classification(train):
            found.append(folder.name)
    return found


def _is_classification(path: Path) -> bool:
    with path.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            low = line.strip().lower()
            if low.startswith("@classlabel"):
                return low.split()[1:2] == ["true"]
            if low.startswith("@data"):
                return False
    return False


@dataclasses.dataclass
class UCRConfig:
    dataset: str = "GunPoint"  # an archive name bundled with sktime (see ucr.bundled_names())
    val_fraction: float = 0.2  # of each class of the shipped train set
    split_seed: int = 0

    FIXED_LENGTH: ClassVar[str] = "the series length of the chosen UCR/UEA data set"

    def __post_init__(self) -> None:
        check(0 < self.val_fraction < 1, "val_fraction", f"must be in (0, 1), got {self.val_fraction}")


@register_task("ucr", UCRConfig)
class UCR(ExampleTask):
    def __init__(self, **cfg) -> None:
        self.cfg = c = build_config(UCRConfig, cfg)
        root = data_dir()
        names = bundled_names(root)
        if c.dataset not in names:
            raise ValueError(f"invalid config value for 'dataset': {c.dataset!r} is not a classification "
                             f"archive bundled with sktime in {root}; bundled: {names}")
        train, test = (read_ts(root / c.dataset / f"{c.dataset}_{s}.ts") for s in ("TRAIN", "TEST"))
        if train.class_names != test.class_names or train.values.shape[2] != test.values.shape[2]:
            raise ValueError(f"{c.dataset}: TRAIN and TEST disagree on classes ({train.class_names} vs "
                             f"{test.class_names}) or channels ({train.values.shape[2]} vs {test.values.shape[2]})")
        keep, val = stratified_split(train.labels, [c.val_fraction], c.split_seed)
        parts = {"train": (train, keep), "val": (train, val), "test": (test, np.arange(len(test.labels)))}
        real = np.arange(train.values.shape[1])[None, :] < train.lengths[:, None]  # (n, L)
        fit = train.values[real]  # (real values, C) of the shipped TRAIN file
        self.mean, self.std = fit.mean(0), fit.std(0)
        self.std[self.std == 0] = 1.0  # a constant channel is only centred
        variable = len(set(train.lengths) | set(test.lengths)) > 1
        self.splits = {}
        for split, (d, rows) in parts.items():
            x = (d.values[rows] - self.mean) / self.std
            x[np.arange(x.shape[1])[None, :] >= d.lengths[rows, None]] = 0.0
            self.splits[split] = Examples(torch.from_numpy(x.astype(np.float32)), torch.from_numpy(d.labels[rows]),
                                          torch.from_numpy(d.lengths[rows]) if variable else None)
        self.class_names = train.class_names
        lo, hi = int(min(train.lengths.min(), test.lengths.min())), int(max(train.lengths.max(), test.lengths.max()))
        self.info = TaskInfo(
            name="ucr", kind="classify", length=hi, source=f"sktime bundled UCR/UEA archive {c.dataset}",
            sizes={s: len(e) for s, e in self.splits.items()}, n_classes=len(self.class_names),
            d_input=train.values.shape[2],
            notes=f"{c.dataset}: {train.values.shape[2]} channel(s), length {lo if lo == hi else f'{lo}..{hi}'}, "
                  f"classes {self.class_names}; val {c.val_fraction:g} of train (split_seed {c.split_seed})",
        )
