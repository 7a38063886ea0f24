"""The RWKV-6 ("Eagle and Finch", Peng et al. 2024) WKV operator with data-dependent decay:

    o_t = r_tᵀ (S_{t-1} + diag(u) k_t v_tᵀ)        S_t = diag(w_t) S_{t-1} + k_t v_tᵀ

per head, S (K, V), w_t = exp(log_w_t) per key channel, u the bonus of the current token.
Modes (one signature, one result): ``reference`` (loop over t) and ``chunked`` (matmul form with
cumulative log-decays, every exponent <= 0). ``auto`` is always ``chunked``, whatever the length
or device. See README.md and docs/math/rwkv6.md.
``rwkv6_step`` advances one token.
"""
from __future__ import annotations

from torch import Tensor

from ...core.precision import float32_core
from .._validate import check_chunk_size, check_sequence, check_tensors, check_values, expect_shape
from .._documents import by_documents, check_starts
from ..dispatch import Modes
from .chunked import exclusive_dyadic_scores, rwkv6_chunked
from .reference import rwkv6_reference
from .step import rwkv6_step

MODES = Modes("rwkv6", {"chunked": rwkv6_chunked, "reference": rwkv6_reference}, options={"chunked": ("chunk_size",)})


@float32_core
def rwkv6(
    r: Tensor,
    k: Tensor,
    v: Tensor,
    log_w: Tensor,
    u: Tensor,
    initial_state: Tensor | None = None,
    mode: str = "auto",
    chunk_size: int = 32,
    starts: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The WKV-6 sequence operator.

    r, k (B, L, H, K) receptance and key; v (B, L, H, V); log_w (B, L, H, K) <= 0 the log of the
    per-channel decay (the layer's -exp(w)); u (H, K) the bonus; initial_state (B, H, K, V) or
    None for zeros; chunk_size: chunk length T of the ``chunked`` mode (the reference ignores it).
    A step with log_w = 0 and k = 0 is the identity on the state (how the layer masks padding).

    Returns (o (B, L, H, V), final_state (B, H, K, V)). The sign of log_w is not checked (that
    would synchronize a GPU); with log_w <= 0 no mode exponentiates a positive number.
    ``starts`` (B, L) bool: tokens that begin a new document of a packed row, before which the
    state is zero; every mode runs each document as its own slice (ops/_documents.py).
    """
    _validate(r, k, v, log_w, u, initial_state, chunk_size)
    if starts is None:
        return MODES.run(mode, k, r, k, v, log_w, u, initial_state, chunk_size=chunk_size)
    check_starts("rwkv6", starts, k)
    mode = MODES.resolve(mode, k, owner="rwkv6")

    def run(p: list[Tensor | None], h0: Tensor | None) -> tuple[Tensor, Tensor]:
        return MODES.run(mode, k, *p, u, h0, chunk_size=chunk_size)

    return by_documents(run, starts, initial_state, [r, k, v, log_w])


def _validate(
    r: Tensor, k: Tensor, v: Tensor, log_w: Tensor, u: Tensor, initial_state: Tensor | None,
    chunk_size: int,
) -> None:
    op = "rwkv6"
    named = {"r": r, "k": k, "v": v, "log_w": log_w, "u": u, "initial_state": initial_state}
    check_tensors(op, named, "k", optional=("initial_state",))
    batch, L, H, K = check_sequence(op, "k", k, "(B, L, H, K)")
    expect_shape(op, "r", r, (batch, L, H, K), "(B, L, H, K) like k")
    expect_shape(op, "log_w", log_w, (batch, L, H, K), "(B, L, H, K) like k")
    V = check_values(op, v, batch, L, H)
    expect_shape(op, "u", u, (H, K), "(H, K)")
    if initial_state is not None:
        expect_shape(op, "initial_state", initial_state, (batch, H, K, V), "(B, H, K, V)")
    check_chunk_size(op, chunk_size)


__all__ = ["rwkv6", "rwkv6_reference", "rwkv6_step", "rwkv6_chunked", "exclusive_dyadic_scores", "MODES"]
