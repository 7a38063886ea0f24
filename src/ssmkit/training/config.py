"""The typed training configuration.

``TrainConfig`` validates itself: every field's type (an int field refuses ``2.5`` and ``True``)
and every range and cross-field rule, with a message that names the field. Command-line strings
become a config through ``ssmkit.config.config_from_overrides(TrainConfig, ["lr=1e-3"])``.
"""
from __future__ import annotations

import dataclasses
import math
import re

from ..config import check, check_types


@dataclasses.dataclass
class TrainConfig:
    # run length: one optimizer step per global batch
    steps: int = 300  # optimizer steps (used when epochs = 0)
    epochs: int = 0  # > 0: train this many passes over the training split instead of `steps`
    batch_size: int = 32  # global batch; under torchrun each process takes its slice of it
    # optimizer (AdamW; groups from the layers' tags, see optim.param_groups)
    lr: float = 3e-3  # peak lr of parameters without a tagged lr
    ssm_lr: float | None = None  # peak lr of every SSM parameter whose tag sets an lr; None: keep the tag's
    weight_decay: float = 0.01  # SSM-tagged parameters, biases, norms and embeddings get none
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 1.0  # max global gradient norm; 0 = no clipping
    # schedule: linear warmup, then cosine decay to min_lr_ratio * peak (same factor for every group)
    warmup_fraction: float = 0.1  # fraction of the run's steps spent warming up
    min_lr_ratio: float = 0.0  # final lr as a fraction of the peak; 1 = constant after warmup
    # numerics
    bf16: bool = False  # torch.autocast to bfloat16 around forward and loss (CPU and CUDA)
    checkpoint_activations: bool = False  # recompute each block in backward: less activation memory, ~1/3 more compute
    tbptt: int = 0  # truncated BPTT chunk length C for tag/lm tasks (state carried, detached); 0 = off
    # several processes (torchrun; docs/distributed.md)
    parallel: str = "ddp"  # ddp: a replica per process | fsdp: parameters, gradients, optimizer state sharded per block
    context_parallel: int = 1  # R > 1: every sequence split over the R processes (R = the world), exact state passing
    device: str = "auto"  # auto | cpu | cuda | cuda:N; auto: cuda:LOCAL_RANK when CUDA is available
    seed: int = 0  # seeds torch (dropout) and the training data order
    deterministic: bool = False  # bitwise-reproducible on CPU: ssmkit.runtime.deterministic (docs/training.md)
    # evaluation and early stopping
    eval_every: int = 0  # steps between val evaluations; 0 = none (test on the final weights)
    eval_batch_size: int = 256
    val_metric: str = "auto"  # auto: the task kind's primary metric (ssmkit.tasks.metrics.PRIMARY_METRIC)
    patience: int = 0  # stop after this many evaluations without val improvement; 0 = never
    # logs and checkpoints (written by rank 0 only)
    log_every: int = 50  # steps between train log records
    log_dir: str = ""  # metrics.jsonl (and TensorBoard events) go here; "" = no files
    tensorboard: bool = False  # also write TensorBoard events to log_dir (needs `pip install tensorboard`)
    progress: bool = True  # tqdm bar on a terminal when installed (`pip install ssmkit[progress]`)
    checkpoint_dir: str = ""  # step-XXXXXXXX/ checkpoint folders go here; "" = no checkpoints
    checkpoint_every: int = 0  # steps between checkpoints; 0 = only at the end of the run
    keep_checkpoints: int = 3  # newest checkpoints kept; older ones are deleted
    # auto: sharded under parallel=fsdp (each process writes its shards, torch.distributed.checkpoint),
    # full otherwise (one set of files written by process 0); full under fsdp gathers to process 0
    checkpoint_format: str = "auto"  # auto | sharded | full (docs/distributed.md)
    # divergence: a non-finite loss or gradient norm (checked every step: one host sync)
    on_nonfinite: str = "stop"  # stop: raise naming the step, loss and last good checkpoint; skip: see below
    max_skips: int = 5  # on_nonfinite=skip: drop the step's update and halve the lr, stop after this many in a row

    def __post_init__(self) -> None:
        check_types(self)
        for name in ("lr", "ssm_lr", "weight_decay", "grad_clip"):
            value = getattr(self, name)
            check(value is None or math.isfinite(value), name, f"must be a finite number, got {value}")
        check(self.steps > 0 or self.epochs > 0, "steps", f"must be > 0 (or set epochs > 0), got {self.steps}")
        for name in ("steps", "epochs", "eval_every", "patience", "tbptt", "checkpoint_every"):
            check(getattr(self, name) >= 0, name, f"must be >= 0, got {getattr(self, name)}")
        for name in ("batch_size", "eval_batch_size", "log_every", "keep_checkpoints"):
            check(getattr(self, name) > 0, name, f"must be > 0, got {getattr(self, name)}")
        check(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        check(self.ssm_lr is None or self.ssm_lr > 0, "ssm_lr", f"must be > 0 or None, got {self.ssm_lr}")
        check(self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}")
        check(all(0 <= b < 1 for b in self.betas), "betas", f"must be two values in [0, 1), got {self.betas}")
        check(self.grad_clip >= 0, "grad_clip", f"must be >= 0 (0 = off), got {self.grad_clip}")
        check(0 <= self.warmup_fraction < 1, "warmup_fraction", f"must be in [0, 1), got {self.warmup_fraction}")
        check(0 <= self.min_lr_ratio <= 1, "min_lr_ratio", f"must be in [0, 1], got {self.min_lr_ratio}")
        check(re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device) is not None, "device",
              f"must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        check(self.patience == 0 or self.eval_every > 0, "patience",
              f"early stopping needs evaluations: set eval_every > 0 (patience={self.patience})")
        check(not self.tensorboard or bool(self.log_dir), "tensorboard", "needs log_dir to write events to")
        check(self.parallel in ("ddp", "fsdp"), "parallel", f"must be ddp or fsdp, got {self.parallel!r}")
        check(self.context_parallel >= 1, "context_parallel", f"must be >= 1 (1 = off), got {self.context_parallel}")
        check(self.context_parallel == 1 or self.parallel == "ddp", "context_parallel",
              "is not combined with parallel=fsdp yet (its ranks hold whole replicas); use parallel=ddp")
        check(self.context_parallel == 1 or self.tbptt == 0, "context_parallel",
              f"splits each sequence over ranks already; it does not combine with tbptt={self.tbptt} (set tbptt=0)")
        check(self.on_nonfinite in ("stop", "skip"), "on_nonfinite", f"must be stop or skip, got {self.on_nonfinite!r}")
        check(self.max_skips >= 1, "max_skips", f"must be >= 1, got {self.max_skips}")
        check(self.checkpoint_every == 0 or bool(self.checkpoint_dir), "checkpoint_every",
              "needs checkpoint_dir to write checkpoints to")
        check(self.checkpoint_format in ("auto", "sharded", "full"), "checkpoint_format",
              f"must be auto, sharded or full, got {self.checkpoint_format!r}")
        check(self.checkpoint_format != "sharded" or self.parallel == "fsdp", "checkpoint_format",
              f"sharded needs parallel=fsdp (under parallel={self.parallel} every process holds the whole model: "
              "use full or auto)")

    @property
    def sharded_checkpoints(self) -> bool:
        """Whether checkpoints are written in the sharded layout (``checkpoint_format``, auto: under FSDP)."""
        return self.checkpoint_format == "sharded" or (self.checkpoint_format == "auto" and self.parallel == "fsdp")
