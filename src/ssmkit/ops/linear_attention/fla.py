"""The ``fla`` and ``fla_recurrent`` modes of gated linear attention: flash-linear-attention's
Triton kernels, a peer's code run through ssmkit's signature so that ssmkit's reference can referee it.

Imported on the first call of a mode, never by ``import ssmkit``. ``auto`` never picks them (a
peer's kernel is checked, not trusted): ``ssmkit check --peers`` compares them with the reference
(outputs, final state, every gradient, in float32) beside ssmkit's own ``triton`` mode.

- ``fla``: the chunked kernels a GPU user trains with, ``fla.ops.gla.chunk_gla`` for a decay per
  key channel and ``fla.ops.simple_gla.chunk_simple_gla`` for one per head (a fixed (H,) decay
  broadcast per step) or none. flash-linear-attention 0.6.0's chunk kernels do not run in the
  Triton interpreter (fla/ops/common/chunk_h.py calls ``.to`` on a loop index, a Python int there),
  so on a CPU this mode is unavailable with that reason; the GPU script checks it.
- ``fla_recurrent``: its fused recurrent kernels (``fused_recurrent_gla`` with ``gk``,
  ``fused_recurrent_simple_gla``), which the interpreter runs: the suite checks them on a CPU.

fla's kernels take float32, bfloat16 and float16; their state layout (B, H, K, V) is ssmkit's.
Interpreted, fla's autotuned kernels run their first config (``pin_first_config_when_interpreted``).
"""
from __future__ import annotations

from torch import Tensor

from .._triton import pin_first_config_when_interpreted


def _per_step(log_decay: Tensor | None, v: Tensor) -> Tensor | None:
    if log_decay is not None and log_decay.ndim == 1:  # fixed per head: one value per step
        return log_decay.expand(v.shape[0], v.shape[1], -1).contiguous()
    return log_decay


def linear_attention_fla(q: Tensor, k: Tensor, v: Tensor, log_decay: Tensor | None = None,
                         initial_state: Tensor | None = None, scale: float = 1.0) -> tuple[Tensor, Tensor]:
    """Same signature and result as ``linear_attention_reference``: fla's chunked kernels."""
    from fla.ops.gla import chunk_gla
    from fla.ops.simple_gla import chunk_simple_gla

    pin_first_config_when_interpreted()
    if log_decay is not None and log_decay.ndim == 4:
        return chunk_gla(q, k, v, log_decay, scale=scale, initial_state=initial_state, output_final_state=True)
    return chunk_simple_gla(q, k, v, g=_per_step(log_decay, v), scale=scale, initial_state=initial_state,
                            output_final_state=True)


def linear_attention_fla_recurrent(q: Tensor, k: Tensor, v: Tensor, log_decay: Tensor | None = None,
                                   initial_state: Tensor | None = None, scale: float = 1.0) -> tuple[Tensor, Tensor]:
    """Same signature and result as ``linear_attention_reference``: fla's fused recurrent kernels."""
    from fla.ops.gla import fused_recurrent_gla
    from fla.ops.simple_gla import fused_recurrent_simple_gla

    pin_first_config_when_interpreted()
    if log_decay is not None and log_decay.ndim == 4:
        return fused_recurrent_gla(q, k, v, gk=log_decay, scale=scale, initial_state=initial_state,
                                   output_final_state=True)
    return fused_recurrent_simple_gla(q, k, v, g=_per_step(log_decay, v), scale=scale, initial_state=initial_state,
                                      output_final_state=True)
