"""Mamba-1 selective scan (Gu & Dao 2023): an input-dependent diagonal SSM over time.

Modes: ``reference`` (a loop, the ground truth), ``chunked`` (pure PyTorch, whole-chunk tensor
ops), ``cpp`` (a C++ CPU kernel built at first use). ``auto`` takes ``cpp`` when it can run and
otherwise ``chunked``, logging why once. Math and stability tricks: README.md beside this file.

Masking: a step with dt = 0 is the identity on the state (exp(0) = 1 and its input dt B u = 0), in
every mode exactly. A layer masks padding by passing the post-softplus dt with zeros at padded
steps and ``delta_softplus=False``.
"""
from __future__ import annotations

import logging

from torch import Tensor

from ...core.precision import float32_core
from .chunked import selective_scan_chunked
from .cpp import DTYPES as CPP_DTYPES
from .cpp import cpp_unavailable_reason, selective_scan_cpp
from .reference import selective_scan_reference
from .validate import check_inputs

log = logging.getLogger(__name__)

MODES = {
    "reference": selective_scan_reference,
    "chunked": selective_scan_chunked,
    "cpp": selective_scan_cpp,
}
_logged: set[str] = set()


def mode_unavailable_reason(mode: str, u: Tensor | None = None) -> str | None:
    """None when ``mode`` can run (for inputs like ``u``, when given), else why not.

    Asking about ``cpp`` builds the kernel the first time (once per machine, seconds)."""
    if mode not in MODES:
        return f"unknown mode {mode!r}; modes: {['auto', *MODES]}"
    if mode != "cpp":
        return None
    if u is not None and (u.device.type != "cpu" or u.dtype not in CPP_DTYPES):
        return f"the C++ kernel runs float32/float64 CPU tensors, got {u.dtype} on {u.device}"
    return cpp_unavailable_reason()


def resolve_mode(mode: str, u: Tensor) -> str:
    """The mode that runs for input ``u``: ``auto`` falls back to ``chunked`` (logged once)."""
    if mode == "auto":
        reason = mode_unavailable_reason("cpp", u)
        if reason is None:
            return "cpp"
        message = f"selective_scan: auto mode runs 'chunked' because 'cpp' cannot run: {reason}"
        if message not in _logged:
            _logged.add(message)
            log.warning(message)
        return "chunked"
    if mode not in MODES:
        raise ValueError(f"selective_scan has no mode {mode!r}; modes: {['auto', *MODES]}")
    reason = mode_unavailable_reason(mode, u)
    if reason is not None:
        raise RuntimeError(f"selective_scan mode {mode!r} cannot run here: {reason}")
    return mode


@float32_core
def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    initial_state: Tensor | None = None,
    mode: str = "auto",
) -> tuple[Tensor, Tensor]:
    """u, delta, z: (B, L, D); A: (D, N) real; B, C: (B, L, N) or (B, L, G, N), channel d using
    group d // (D/G); D, delta_bias: (D,); initial_state: (B, D, N), None = zeros.

    dt = softplus(delta + delta_bias) if delta_softplus else delta + delta_bias, then per step
    h_t = exp(dt_t A) h_{t-1} + dt_t B_t u_t,  y_t = C_t h_t + D u_t,  y_t *= silu(z_t) if z.
    Returns (y (B, L, D), final_state (B, D, N))."""
    check_inputs(u, delta, A, B, C, D, z, delta_bias, initial_state)
    run = MODES[resolve_mode(mode, u)]
    return run(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state)


__all__ = [
    "selective_scan",
    "selective_scan_reference",
    "selective_scan_chunked",
    "selective_scan_cpp",
    "cpp_unavailable_reason",
    "mode_unavailable_reason",
    "resolve_mode",
    "MODES",
]
