"""Gated linear attention: one outer-product recurrence per head, with or without decay.

    S_t = diag(α_t) S_{t-1} + k_t v_tᵀ          o_t = scale · S_tᵀ q_t          S_t: (K, V)

α_t = exp(log_decay_t) is 1 (linear Transformer), a scalar per head (RetNet; fixed or data
dependent) or a vector along K (GLA, HGRN2). Modes (one signature, one result): ``reference``
(loop over t), ``parallel`` (masked quadratic form, O(L²)), ``chunked`` (quadratic inside chunks,
a recurrence over chunk states), ``triton`` (the chunked form as Triton kernels, forward and
backward; triton.py, imported on first use), ``fla`` and ``fla_recurrent`` (flash-linear-attention's chunked
and fused recurrent kernels, a peer's, run only when named: ``ssmkit check --peers`` referees them). ``auto`` takes ``triton`` for CUDA
tensors when triton is installed, and ``chunked`` otherwise, whatever the length.
``linear_attention_step`` advances one token.
See README.md and docs/math/linear_attention.md.
"""
from __future__ import annotations

from torch import Tensor

from ...core.precision import float32_core
from .._validate import check_chunk_size, check_sequence, check_tensors, check_values, expect_shape
from .._documents import by_documents, check_starts
from .._triton import (fla_chunk_unavailable, fla_recurrent_unavailable, lazy, peer_auto_skip, triton_auto_skip,
                       triton_unavailable)
from ..dispatch import Modes
from .chunked import dyadic_scores, linear_attention_chunked
from .parallel import linear_attention_parallel
from .reference import linear_attention_reference
from .step import linear_attention_step

MODES = Modes(
    "linear_attention",
    {"triton": lazy(f"{__name__}.triton", "linear_attention_triton"), "chunked": linear_attention_chunked,
     "parallel": linear_attention_parallel, "reference": linear_attention_reference,
     "fla": lazy(f"{__name__}.fla", "linear_attention_fla"),
     "fla_recurrent": lazy(f"{__name__}.fla", "linear_attention_fla_recurrent")},
    unavailable={"triton": triton_unavailable, "fla": fla_chunk_unavailable, "fla_recurrent": fla_recurrent_unavailable},
    auto_skip={"triton": triton_auto_skip, "fla": peer_auto_skip, "fla_recurrent": peer_auto_skip},
    options={"chunked": ("chunk_size",), "triton": ("chunk_size",)},
)


@float32_core
def linear_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    log_decay: Tensor | None = None,
    initial_state: Tensor | None = None,
    scale: float = 1.0,
    mode: str = "auto",
    chunk_size: int = 64,
    starts: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The gated linear attention operator.

    q, k (B, L, H, K) queries and keys; v (B, L, H, V) values; log_decay, the log of the decay
    α_t (≤ 0): None (no decay), (H,) (fixed per head), (B, L, H) (per head and step) or
    (B, L, H, K) (per key channel and step); a step with log_decay = 0 and k = 0 is the identity
    on the state (how layers mask padded steps); initial_state (B, H, K, V) or None for zeros;
    scale multiplies every output (e.g. K^-1/2); chunk_size: the chunk length of ``chunked``, a
    power of two (``triton`` clamps it to 16..64 and uses 16 with a decay per key channel; the
    other modes ignore it).

    Returns (o (B, L, H, V), final_state (B, H, K, V)). The sign of log_decay is not checked
    (that would synchronize a GPU); with log_decay ≤ 0 no mode exponentiates a positive number.
    ``starts`` (B, L) bool: tokens that begin a new document of a packed row, before which the
    state is zero; every mode runs each document as its own slice (ops/_documents.py).
    """
    _validate(q, k, v, log_decay, initial_state, scale, chunk_size)
    if starts is None:
        return MODES.run(mode, q, q, k, v, log_decay, initial_state, scale, chunk_size=chunk_size)
    check_starts("linear_attention", starts, q)
    mode = MODES.resolve(mode, q, owner="linear_attention")
    per_step = log_decay is not None and log_decay.dim() >= 3  # (B, L, H[, K]); else None or (H,)

    def run(p: list[Tensor | None], h0: Tensor | None) -> tuple[Tensor, Tensor]:
        return MODES.run(mode, q, p[0], p[1], p[2], p[3] if per_step else log_decay, h0, scale, chunk_size=chunk_size)

    return by_documents(run, starts, initial_state, [q, k, v, log_decay if per_step else None])


def _validate(
    q: Tensor, k: Tensor, v: Tensor, log_decay: Tensor | None, initial_state: Tensor | None,
    scale: float, chunk_size: int,
) -> None:
    op = "linear_attention"
    named = {"q": q, "k": k, "v": v, "log_decay": log_decay, "initial_state": initial_state}
    check_tensors(op, named, "q", optional=("log_decay", "initial_state"))
    batch, L, H, K = check_sequence(op, "q", q, "(B, L, H, K)")
    expect_shape(op, "k", k, (batch, L, H, K), "(B, L, H, K) like q")
    V = check_values(op, v, batch, L, H)
    allowed = {(H,), (batch, L, H), (batch, L, H, K)}
    if log_decay is not None and tuple(log_decay.shape) not in allowed:
        raise ValueError(
            f"{op}: log_decay must be None or have shape (H,) = {(H,)}, (B, L, H) = "
            f"{(batch, L, H)} or (B, L, H, K) = {(batch, L, H, K)}, got {tuple(log_decay.shape)}"
        )
    if initial_state is not None:
        expect_shape(op, "initial_state", initial_state, (batch, H, K, V), "(B, H, K, V)")
    if not isinstance(scale, (int, float)) or isinstance(scale, bool):
        raise TypeError(f"{op}: scale must be a float, got {type(scale).__name__}")
    check_chunk_size(op, chunk_size, power_of_two=True)


__all__ = [
    "linear_attention", "linear_attention_reference", "linear_attention_parallel",
    "linear_attention_chunked", "linear_attention_step", "dyadic_scores", "MODES",
]
