"""What a task asks of a model's output: ``TaskKind`` (``TaskInfo.kind``, ``DataSpec.kind``).

It lives in ``models`` because heads are shaped by it; ``ssmkit.tasks`` re-exports it. A ``str``
enum: a member equals its value (``TaskKind.TAG == "tag"``), is written to JSON as it and prints as
it, so results files and messages read the same as with plain strings.
"""
from __future__ import annotations

import enum


class TaskKind(str, enum.Enum):
    CLASSIFY = "classify"  # one label per sequence: targets (B,) long
    TAG = "tag"  # one label per position: targets (B, L) long
    LM = "lm"  # next-token prediction: targets (B, L) long
    FORECAST = "forecast"  # a horizon of future values: targets (B, horizon, C) float
    REGRESS = "regress"  # real values read at the last real token: targets (B, n_out) float
    PREDICT = "predict"  # the next position's values at every position: targets (B, L, n_out) float (video frames)
    TRAJECTORY = "trajectory"  # the next state of a dynamical system at every position: targets (B, L, C) float

    __hash__ = str.__hash__  # hash as the value, as equality does: a member finds its str key in a dict

    def __str__(self) -> str:
        return self.value

    @property
    def per_position(self) -> bool:
        """Outputs per position (B, L, n_out): a chunk of the sequence is scored on its own."""
        return self in (TaskKind.TAG, TaskKind.LM, TaskKind.PREDICT, TaskKind.TRAJECTORY)

    @property
    def real_valued(self) -> bool:
        """Real-valued targets scored by squared error, instead of labels scored by cross-entropy."""
        return self in (TaskKind.FORECAST, TaskKind.REGRESS, TaskKind.PREDICT, TaskKind.TRAJECTORY)

    @classmethod
    def parse(cls, value: str, field: str = "kind") -> "TaskKind":
        """The member named by ``value``; a ``ValueError`` naming ``field`` and the valid kinds otherwise."""
        try:
            return cls(value)
        except ValueError:
            raise ValueError(f"invalid config value for '{field}': must be one of "
                             f"{tuple(k.value for k in cls)}, got {value!r}") from None
