"""Training: config, optimizer groups from layer tags, the loop, checkpoints, torch.distributed.

``fit(task, model, TrainConfig(...))`` trains; ``evaluate`` scores a split; checkpoints resume
bit for bit; the same code runs under ``torchrun``. See docs/training.md.
"""
from .checkpoint import CheckpointError, latest_checkpoint, read_checkpoint
from .config import TrainConfig
from .loop import evaluate, fit
from .optim import param_groups
from .schedule import warmup_cosine
from .sharded_checkpoint import full_copy

__all__ = [
    "CheckpointError", "TrainConfig", "evaluate", "fit", "full_copy",
    "latest_checkpoint", "param_groups", "read_checkpoint", "warmup_cosine",
]
