"""What a run shows and records: a progress bar or log lines, JSONL metrics, optional TensorBoard.

Only rank 0 shows or writes anything. The bar is tqdm's when tqdm is installed (extra
``progress``) and the output is a terminal; otherwise a plain line every ``log_every`` steps.
``<log_dir>/metrics.jsonl`` gets one JSON object per line: ``{"split": "train", "step", "epoch",
"lr", "loss", <metrics>, "tokens_per_s", "seconds"}`` per log step, ``{"split": "val" | "test",
"step", <metrics>}`` per evaluation. A resumed run first drops the records written after its
checkpoint's step, so the file reads as one uninterrupted run.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

from torch import Tensor

from ..io import write_text
from .config import TrainConfig
from .distributed import Dist, all_sum

METRICS_FILE = "metrics.jsonl"


class TrainMeter:
    """Sums since the last log step: loss (weighted by its element count), tokens, task metrics."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.loss_sum: Tensor | float = 0.0  # a device tensor between log steps: no sync per step
        self.weight = 0
        self.tokens = 0
        self.metrics: dict[str, list[float]] = {}
        self.start = time.perf_counter()

    def add(self, loss_sum: Tensor, weight: int, tokens: int) -> None:
        self.loss_sum = self.loss_sum + loss_sum
        self.weight += weight
        self.tokens += tokens

    def add_metrics(self, metrics: dict[str, tuple[float, int]]) -> None:
        for name, (total, count) in metrics.items():
            acc = self.metrics.setdefault(name, [0.0, 0])
            acc[0] += total
            acc[1] += count

    def summary(self, d: Dist) -> dict[str, float]:
        """Mean loss, metrics and tokens/s over every rank (a collective: all ranks call it), then reset."""
        names = sorted(self.metrics)
        loss = float(self.loss_sum)
        flat = [loss, self.weight, self.tokens] + [v for n in names for v in self.metrics[n]]
        flat = all_sum(flat, d)
        seconds = time.perf_counter() - self.start
        out = {"loss": flat[0] / max(flat[1], 1)}
        out.update({n: flat[3 + 2 * i] / max(flat[4 + 2 * i], 1) for i, n in enumerate(names)})
        out["tokens_per_s"] = flat[2] / max(seconds, 1e-9)
        self.reset()
        return out


def _format(values: dict[str, Any]) -> str:
    return "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in values.items())


class Reporter:
    """Progress display and metric files of one run (everything is a no-op off rank 0)."""

    def __init__(self, cfg: TrainConfig, total_steps: int, start_step: int, d: Dist,
                 log: Callable[[str], None], resumed: bool) -> None:
        self.log, self.main, self.start = log, d.main, time.perf_counter()
        self.bar = self.jsonl = self.tb = None
        if not self.main:
            return
        if cfg.progress:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True, disable=None)
                self.bar = None if bar.disable else bar  # disable=None: off when the output is not a terminal
        if cfg.log_dir:
            path = Path(cfg.log_dir) / METRICS_FILE
            path.parent.mkdir(parents=True, exist_ok=True)
            if resumed:
                _truncate_after(path, start_step)
            elif path.exists():
                path.unlink()  # a fresh run starts a fresh record
            self.jsonl = open(path, "a", encoding="utf-8")
        if cfg.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                raise ImportError("tensorboard=true needs TensorBoard: pip install tensorboard") from e
            self.tb = SummaryWriter(cfg.log_dir, purge_step=start_step + 1 if resumed else None)

    def message(self, text: str) -> None:
        if not self.main:
            return
        if self.bar is not None:
            with self.bar.external_write_mode():
                self.log(text)
        else:
            self.log(text)

    def advance(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def record(self, split: str, step: int, values: dict[str, Any]) -> None:
        """One JSONL line (+ TensorBoard scalars); shown as the bar's postfix or as a log line."""
        if not self.main:
            return
        if self.jsonl is not None:
            line = {"split": split, "step": step, **values, "seconds": round(time.perf_counter() - self.start, 3)}
            self.jsonl.write(json.dumps(line) + "\n")
            self.jsonl.flush()
        if self.tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)):
                    self.tb.add_scalar(f"{split}/{k}", v, step)
        if split == "train" and self.bar is not None:
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in values.items() if k not in ("step", "epoch")},
                                 refresh=False)
        else:
            self.message(f"{split:5s} step {step:6d}  {_format(values)}")

    def close(self) -> None:
        for handle in (self.bar, self.jsonl, self.tb):
            if handle is not None:
                handle.close()


def _truncate_after(path: Path, step: int) -> None:
    """Keep the records up to ``step`` (a resumed run rewrites what came after its checkpoint)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:  # a line cut by the kill that interrupted the run
            continue
        # the test record at the checkpoint's own step is written again at the resumed run's end
        if rec.get("step", 0) < step or (rec.get("step", 0) == step and rec.get("split") != "test"):
            kept.append(line)
    write_text(path, "".join(k + "\n" for k in kept))
