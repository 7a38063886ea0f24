"""Published results as data, each with its source, to print beside ssmkit's own numbers.

A row applies when the comparison's task has the same name and its config has every value in
``setting`` (the setting the paper ran); the paper's model is mapped to the closest registered
mixer and named in ``model``. These are the papers' numbers (from the shared reference
``published-numbers.md``), never ssmkit measurements; tables mark them "published".
"""
from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class Published:
    task: str
    setting: tuple[tuple[str, Any], ...]  # task config values the paper used
    mixer: str  # the registered mixer closest to the paper's model
    model: str  # the paper's model name
    accuracy: float | None  # percent; None when the paper reports a failure
    source: str
    note: str = ""  # e.g. "fail", "about", protocol differences


def _rows(task: str, setting: dict[str, Any], source: str, entries: list[tuple], note: str = "") -> list[Published]:
    return [Published(task, tuple(setting.items()), mixer, model, acc, source, note) for mixer, model, acc in entries]


_LISTOPS = {"min_length": 500, "max_length": 2000, "max_depth": 10, "max_args": 10}
_PATHFINDER = {"size": 32, "contour_length": 14}
_PATHX = {"size": 128, "contour_length": 14}
_LRA_NOTE = "LRA's Transformers read 256 grey-level tokens; S4-family models read pixel values"

PUBLISHED: list[Published] = [
    *_rows("listops", _LISTOPS, "LRA paper, Table 1", [
        ("attention", "Transformer", 36.37), ("linear_attention", "Linear Transformer", 16.13)]),
    *_rows("listops", _LISTOPS, "S4 paper v3, Table 4", [("s4", "S4 (updated)", 59.60)]),
    *_rows("listops", _LISTOPS, "S4D paper", [("s4d", "S4D-LegS", 60.47)]),
    *_rows("listops", _LISTOPS, "DSS (NeurIPS'22)", [("dss", "DSS", 60.6)]),
    *_rows("listops", _LISTOPS, "S5, Table 1", [("s5", "S5", 62.15)]),
    *_rows("listops", _LISTOPS, "LRU paper", [("lru", "LRU", 60.2)]),
    *_rows("listops", _LISTOPS, "Liquid-S4", [("liquid_s4", "Liquid-S4", 62.75)]),
    *_rows("pathfinder", _PATHFINDER, "LRA paper, Table 1", [
        ("attention", "Transformer", 71.40), ("linear_attention", "Linear Transformer", 75.30)], _LRA_NOTE),
    *_rows("pathfinder", _PATHFINDER, "S4 paper v3, Table 4", [("s4", "S4 (updated)", 94.20)]),
    *_rows("pathfinder", _PATHFINDER, "S4D paper", [("s4d", "S4D-LegS", 93.06)]),
    *_rows("pathfinder", _PATHFINDER, "DSS (NeurIPS'22)", [("dss", "DSS", 84.6)]),
    *_rows("pathfinder", _PATHFINDER, "S5, Table 1", [("s5", "S5", 95.33)]),
    *_rows("pathfinder", _PATHFINDER, "LRU paper", [("lru", "LRU", 95.1)]),
    *_rows("pathfinder", _PATHFINDER, "Liquid-S4", [("liquid_s4", "Liquid-S4", 94.80)]),
    *_rows("pathx", _PATHX, "LRA paper, Table 1", [
        ("attention", "Transformer", None), ("linear_attention", "Linear Transformer", None)], "fail"),
    *_rows("pathx", _PATHX, "S4 paper v3, Table 4", [("s4", "S4 (updated)", 96.35)]),
    *_rows("pathx", _PATHX, "S4D paper", [("s4d", "S4D-LegS", 91.95)]),
    *_rows("pathx", _PATHX, "DSS (NeurIPS'22)", [("dss", "DSS", 87.8)]),
    *_rows("pathx", _PATHX, "S5, Table 1", [("s5", "S5", 98.58)]),
    *_rows("pathx", _PATHX, "LRU paper", [("lru", "LRU", 94.2)]),
    *_rows("pathx", _PATHX, "Liquid-S4", [("liquid_s4", "Liquid-S4", 96.66)]),
    *_rows("smnist", {}, "S4 paper", [("s4", "S4", 99.63), ("attention", "Transformer", 98.9),
                                       ("lstm", "LSTM", 98.9)]),
    *_rows("psmnist", {}, "S4 paper", [("s4", "S4", 98.70), ("attention", "Transformer", 97.9),
                                        ("lstm", "LSTM", 95.11)]),
    *_rows("selective_copy", {"n_noise": 4096, "n_copy": 16, "vocab_size": 16},
           "Mamba (Gu & Dao 2023), Table 1 (2 layers, D=64)",
           [("s4", "S4", 18.3), ("h3", "H3", 57.0), ("hyena", "Hyena", 30.1), ("mamba", "Mamba", 99.8)]),
    *_rows("induction_heads", {"vocab_size": 16}, "Mamba (Gu & Dao 2023), Table 11",
           [("mamba", "Mamba", 100.0)], "trained at L = 256; perfect at every test length 2^6..2^20"),
    *_rows("induction_heads", {"vocab_size": 16}, "Mamba (Gu & Dao 2023), Table 11",
           [("attention", "MHA-RoPE", None)], "trained at L = 256; fails beyond about 2x the training length"),
    *[row for L, kv in ((64, 4), (128, 8), (256, 16), (512, 64))
      for row in _rows("mqar", {"vocab_size": 8192, "input_seq_len": L, "num_kv_pairs": kv},
                       "Zoology (Arora et al. 2023), Figure 2", [("attention", "Attention", 98.0)],
                       "about 98 at every width")],
]


def published_for(task: str, task_cfg: dict[str, Any], mixers: list[str]) -> list[Published]:
    """The published rows for ``task`` run with the full config ``task_cfg``, for these mixers."""
    return [p for p in PUBLISHED if p.task == task and p.mixer in mixers
            and all(task_cfg.get(k) == v for k, v in p.setting)]
