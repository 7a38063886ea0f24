"""What ``ssmkit compare`` runs: the spec of one command and the cells it breaks into.

A comparison is a grid: tasks x training lengths x mixers x seeds. One **training cell** trains
one mixer with one seed on one task at one length, scores it on the test split at that length and
at every longer evaluation length, and measures its speed and memory; one **speed cell** times one
bare mixer at a paper width over a range of lengths. Each cell becomes one file (``compare.py``),
so a grid can be interrupted, resumed, and spread over machines (``--shard K/N``: the cells whose
index i has i % N == K, counted from 0).

``CompareSpec.plan()`` checks everything (tasks, mixers, lengths, overrides, each task's length
knob) before anything trains, and returns the validated ``RunConfig`` of every (task, length,
mixer). ``spec.identity()`` is what two runs of the same command share (everything but the shard):
merging shards of different commands is refused by comparing it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from ..config import split_override
from ..runs import RunConfig, check_carry_length, resolve_run
from ..tasks import list_tasks, task_config_class
from ..tasks.length import at_length

DEFAULT_PRESET = "induction_heads_sweep"
# lengths a preset's comparison sweeps when the command names none (other presets: the task's own length)
# (and the threads: the default's models are small, where one intra-op thread is as fast as two on an idle
# machine and does not stall when another process takes a core: measured 13 s vs 178 s for 300 mamba steps)
SWEEPS: dict[str, dict[str, Any]] = {
    "induction_heads_sweep": {"train_lengths": [32, 64], "eval_lengths": ["x2", "x4", "x8", "x16"], "threads": 1},
    "doc_lm_sweep": {"train_lengths": [128], "eval_lengths": ["x2", "x4", "x8"], "threads": 1},
    "rigid_body_rollout": {"threads": 1},
}
DEFAULT_MIXERS = ["mamba", "s4d", "attention", "lstm"]
DEFAULT_SPEED_LENGTHS = [1024, 4096, 16384, 32768]
SPEED_BASELINE = "attention"  # the crossover of every mixer is measured against it
BUDGETS = ("steps", "tokens")


@dataclasses.dataclass(frozen=True)
class Cell:
    """One unit of a comparison. Training cells have a task, a length and a seed; speed cells
    (``task`` None) time the bare ``mixer`` at every speed length."""

    mixer: str
    task: str | None = None
    length: int | None = None  # the training length L
    seed: int | None = None

    @property
    def kind(self) -> str:
        return "train" if self.task is not None else "speed"

    @property
    def key(self) -> str:
        """The cell's file and run-folder name."""
        if self.task is None:
            return f"speed-{self.mixer}"
        return f"{self.task}-L{self.length}-{self.mixer}-seed{self.seed}"


def parse_eval_lengths(items: list[str]) -> list[str]:
    """``--eval-lengths 2048,x8``: absolute lengths or multiples ``xK`` of each training length."""
    out = []
    for item in items:
        text = item.strip()
        ok = text[1:].isdigit() and int(text[1:]) >= 1 if text.startswith("x") else text.isdigit() and int(text) >= 1
        if not ok:
            raise ValueError(f"invalid eval length {item!r}: expected a length >= 1 (2048) or a multiple of the "
                             "training length (x8)")
        out.append(text)
    return out


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` -> (K, N) with 0 <= K < N."""
    k, sep, n = text.partition("/")
    if not sep or not k.strip().isdigit() or not n.strip().isdigit() or not 0 <= int(k) < int(n):
        raise ValueError(f"invalid --shard {text!r}: expected K/N with 0 <= K < N (e.g. 0/4 ... 3/4)")
    return int(k), int(n)


@dataclasses.dataclass
class CompareSpec:
    """The command: which tasks, mixers, seeds, lengths, budget and settings."""

    mixers: list[str]
    tasks: list[str] | None = None  # None: the preset's task
    preset: str | None = None  # None with no tasks: DEFAULT_PRESET
    seeds: list[int] = dataclasses.field(default_factory=lambda: [0])
    budget: int | None = None  # optimizer steps per run; None: the preset's
    budget_rule: str = "steps"  # steps: the same steps and batch at every length; tokens: batch x L held
    overrides: list[str] = dataclasses.field(default_factory=list)
    train_lengths: list[int] | None = None  # None: the preset's (or the task's own length)
    eval_lengths: list[str] | None = None  # None: the preset's; absolute "2048" or multiples "x8"
    speed_lengths: list[int] = dataclasses.field(default_factory=lambda: list(DEFAULT_SPEED_LENGTHS))
    speed_d_model: int = 512  # the width of the bare mixers timed for the speed curves
    eval_seconds: float = 120.0  # predicted time above which an evaluation length is skipped
    threads: int | None = None  # torch intra-op threads for every cell (None: the preset's sweep, else torch's)
    shard: tuple[int, int] = (0, 1)

    @property
    def preset_name(self) -> str | None:
        return self.preset or (DEFAULT_PRESET if not self.tasks else None)

    def identity(self) -> dict[str, Any]:
        """Everything that makes two runs the same command (all but the shard)."""
        data = dataclasses.asdict(self)
        data.pop("shard")
        data["preset"] = self.preset_name
        data["threads"] = self.thread_count()
        return data

    def identity_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:16]

    # ---------------------------------------------------------------- validation and cells

    def _check(self) -> None:
        if not self.mixers:
            raise ValueError("compare needs at least one mixer (--mixers a,b,c)")
        if len(set(self.mixers)) != len(self.mixers):
            raise ValueError(f"--mixers names a mixer twice: {self.mixers}")
        if not self.seeds:
            raise ValueError("compare needs at least one seed (--seeds 0,1)")
        if self.budget is not None and self.budget <= 0:
            raise ValueError(f"invalid value for --budget: {self.budget} steps (expected > 0)")
        if self.budget_rule not in BUDGETS:
            raise ValueError(f"invalid --budget-rule {self.budget_rule!r}: expected one of {BUDGETS}")
        if self.tasks is not None:
            if not self.tasks or len(set(self.tasks)) != len(self.tasks):
                raise ValueError(f"--tasks must name each task once, got {self.tasks}")
            unknown = [t for t in self.tasks if t not in list_tasks()]
            if unknown:
                raise KeyError(f"unknown task(s) {unknown}; registered tasks: {list_tasks()}")
            if self.preset is not None and len(self.tasks) > 1:
                raise ValueError("--preset sets up one task; a grid of --tasks runs each task with its defaults "
                                 "and the --set overrides")
        for name, values in (("--train-lengths", self.train_lengths or []), ("--lengths", self.speed_lengths)):
            if any(not isinstance(L, int) or L < 1 for L in values):
                raise ValueError(f"invalid {name} {values}: expected integers >= 1")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"--seeds names a seed twice: {self.seeds}")
        parse_eval_lengths(self.eval_lengths or [])
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"invalid --threads {self.threads}: expected an integer >= 1")
        if not 0 <= self.shard[0] < self.shard[1]:
            raise ValueError(f"invalid shard {self.shard}: expected 0 <= K < N")
        for item in self.overrides:
            if split_override(item)[0] in ("mixer", "seed"):
                raise ValueError(f"override {item!r}: compare sets the mixer and seed of each run; "
                                 "use --mixers and --seeds")

    def _base_runs(self) -> dict[str, dict[str, RunConfig]]:
        """task -> mixer -> the run before the length is applied."""
        out: dict[str, dict[str, RunConfig]] = {}
        budget = [f"steps={self.budget}", "epochs=0"] if self.budget is not None else []
        tasks = self.tasks or [None]
        for task in tasks:
            overrides = budget + _task_overrides(self.overrides, task, self.tasks or [])
            for mixer in self.mixers:
                run = resolve_run(task, mixer, self.preset, overrides, DEFAULT_PRESET)
                out.setdefault(run.task, {})[mixer] = run
        return out

    def plan(self) -> dict[tuple[str, int], dict[str, RunConfig]]:
        """(task, training length) -> mixer -> its validated RunConfig, with every evaluation length
        resolved; raises (naming what is wrong) before anything trains."""
        self._check()
        plan: dict[tuple[str, int], dict[str, RunConfig]] = {}
        for task, runs in self._base_runs().items():
            lengths = self.train_lengths or self._sweep("train_lengths") or [_task_length(next(iter(runs.values())))]
            for L in lengths:
                for mixer, run in runs.items():
                    plan.setdefault((task, L), {})[mixer] = cell_run = self._at_length(run, task, L, lengths[0])
                    check_carry_length(cell_run, L)
                for E in self.eval_lengths_for(L, task):
                    at_length(task, next(iter(runs.values())).task_cfg, E)  # the knob takes E too
        return plan

    def _at_length(self, run: RunConfig, task: str, L: int, L0: int) -> RunConfig:
        train = run.train
        if self.budget_rule == "tokens":  # the same tokens per step at every length: batch x L held
            train = dataclasses.replace(train, batch_size=max(1, round(train.batch_size * L0 / L)))
        swept = self.train_lengths or self._sweep("train_lengths")
        task_cfg = at_length(task, run.task_cfg, L) if swept else run.task_cfg  # no sweep: the task as it is
        return dataclasses.replace(run, task_cfg=task_cfg, train=train)

    def thread_count(self) -> int | None:
        return self.threads if self.threads is not None else self._sweep("threads")

    def _sweep(self, name: str) -> Any:
        return SWEEPS.get(self.preset_name or "", {}).get(name) if not self.tasks else None

    def eval_lengths_for(self, L: int, task: str) -> list[int]:
        """The evaluation lengths of a model trained at ``L`` (sorted, each > L)."""
        given = self.eval_lengths if self.eval_lengths is not None else self._sweep("eval_lengths")
        items = parse_eval_lengths(given or [])
        out = set()
        for item in items:
            E = L * int(item[1:]) if item.startswith("x") else int(item)
            if E < L:
                raise ValueError(f"eval length {E} is shorter than the training length {L} of task {task!r}; "
                                 "evaluation lengths extrapolate beyond training")
            if E > L:
                out.add(E)
        return sorted(out)

    def cells(self, plan: dict[tuple[str, int], dict[str, RunConfig]]) -> list[Cell]:
        """Every cell of the grid, in a fixed order (this shard's are every N-th)."""
        cells = [Cell(mixer, task, L, seed) for (task, L), runs in plan.items()
                 for mixer in runs for seed in self.seeds]
        speed = list(dict.fromkeys([*self.mixers, SPEED_BASELINE])) if self.speed_lengths else []
        return cells + [Cell(m) for m in speed]

    def shard_cells(self, cells: list[Cell]) -> list[Cell]:
        k, n = self.shard
        return [c for i, c in enumerate(cells) if i % n == k]


def _task_length(run: RunConfig) -> int:
    """The length the run's task has as configured (no sweep)."""
    from ..tasks import create_task

    return create_task(run.task, **run.task_cfg).info.length


def _task_overrides(overrides: list[str], task: str | None, grid: list[str]) -> list[str]:
    """With ``--tasks``, a ``task.<field>`` override goes to the tasks whose config has the field (an
    error when none has it); other overrides go to every run."""
    if not grid:
        return list(overrides)
    out = []
    for item in overrides:
        key = split_override(item)[0]
        if not key.startswith("task."):
            out.append(item)
            continue
        field = key.removeprefix("task.")
        having = [t for t in grid if field in {f.name for f in dataclasses.fields(task_config_class(t) or object)}
                  ] if all(task_config_class(t) for t in grid) else []
        if not having:
            raise ValueError(f"override {item!r}: no task of {grid} has a field {field!r}")
        if task in having:
            out.append(item)
    return out
