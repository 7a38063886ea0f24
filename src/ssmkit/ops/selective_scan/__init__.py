"""Mamba-1 selective scan (Gu & Dao 2023): an input-dependent diagonal SSM over time.

Modes: ``reference`` (a loop, the ground truth), ``chunked`` (pure PyTorch, whole-chunk tensor
ops), ``cpp`` (a C++ CPU kernel built at first use), ``triton`` (a chunked scan as Triton kernels,
states recomputed in the backward; triton.py, imported on first use). ``auto`` takes ``triton`` for
CUDA tensors, ``cpp`` for CPU tensors when it can run, and otherwise ``chunked``, logging why once. Math and stability tricks: README.md beside this file.
``selective_scan_step`` advances one token (streaming; the reference loop is made of it).

Masking: a step with dt = 0 is the identity on the state (exp(0) = 1 and its input dt B u = 0), in
every mode exactly. A layer masks padding by passing the post-softplus dt with zeros at padded
steps and ``delta_softplus=False``.
"""
from __future__ import annotations

from torch import Tensor

from ...core.precision import float32_core
from .._documents import by_documents, check_starts
from .._triton import lazy, triton_auto_skip, triton_unavailable
from ..dispatch import Modes
from .chunked import selective_scan_chunked
from .cpp import DTYPES as CPP_DTYPES
from .cpp import cpp_unavailable_reason, selective_scan_cpp
from .reference import selective_scan_reference
from .step import selective_scan_step
from .validate import check_inputs


def _cpp_unavailable(u: Tensor | None) -> str | None:
    """Why the C++ kernel cannot run for inputs like ``u`` (its first query builds it, seconds)."""
    if u is not None and (u.device.type != "cpu" or u.dtype not in CPP_DTYPES):
        return f"the C++ kernel runs float32/float64 CPU tensors, got {u.dtype} on {u.device}"
    return cpp_unavailable_reason()


MODES = Modes(
    "selective_scan",
    {"triton": lazy(f"{__name__}.triton", "selective_scan_triton"), "cpp": selective_scan_cpp,
     "chunked": selective_scan_chunked, "reference": selective_scan_reference},
    unavailable={"triton": triton_unavailable, "cpp": _cpp_unavailable}, auto_skip={"triton": triton_auto_skip},
)


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
    starts: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """u, delta, z: (B, L, D); A: (D, N) real; B, C: (B, L, N) or (B, L, G, N), channel d using
    group d // (D/G); D, delta_bias: (D,); initial_state: (B, D, N), None = zeros.

    dt = softplus(delta + delta_bias) if delta_softplus else delta + delta_bias, then per step
    h_t = exp(dt_t A) h_{t-1} + dt_t B_t u_t,  y_t = C_t h_t + D u_t,  y_t *= silu(z_t) if z.
    Returns (y (B, L, D), final_state (B, D, N)).
    ``starts`` (B, L) bool: tokens that begin a new document of a packed row, before which the
    state is zero; every mode runs each document as its own slice (ops/_documents.py)."""
    check_inputs(u, delta, A, B, C, D, z, delta_bias, initial_state)
    if starts is None:
        return MODES.run(mode, u, u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state)
    check_starts("selective_scan", starts, u)
    mode = MODES.resolve(mode, u, owner="selective_scan")

    def run(p: list[Tensor | None], h0: Tensor | None) -> tuple[Tensor, Tensor]:
        return MODES.run(mode, u, p[0], p[1], A, p[2], p[3], D, p[4], delta_bias, delta_softplus, h0)

    return by_documents(run, starts, initial_state, [u, delta, B, C, z])


__all__ = [
    "selective_scan",
    "selective_scan_reference",
    "selective_scan_chunked",
    "selective_scan_cpp",
    "selective_scan_step",
    "cpp_unavailable_reason",
    "MODES",
]
