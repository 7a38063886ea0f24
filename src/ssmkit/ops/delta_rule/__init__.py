"""The (gated) delta rule of DeltaNet (Schlag et al. 2021; Yang et al. 2024) and Gated DeltaNet
(Yang et al. 2025), with the state kept transposed, M = Sᵀ (K, V) per head:

    M_t = α_t (I - β_t k_t k_tᵀ) M_{t-1} + β_t k_t v_tᵀ        o_t = M_tᵀ (scale q_t)

Modes (one signature, one result): ``reference`` (loop over t) and ``chunked`` (WY / UT
transform inside chunks, matmul state passing across). ``auto`` is always ``chunked``, whatever
the length or device. See README.md and docs/math/deltanet.md.
``delta_rule_step`` advances one token.
"""
from __future__ import annotations

from torch import Tensor

from ...core.precision import float32_core
from .._validate import check_chunk_size, check_sequence, check_tensors, check_values, expect_shape
from .._documents import by_documents, check_starts
from ..dispatch import Modes
from .chunked import delta_rule_chunked
from .reference import delta_rule_reference
from .step import delta_rule_step

MODES = Modes("delta_rule", {"chunked": delta_rule_chunked, "reference": delta_rule_reference},
              options={"chunked": ("chunk_size",)})


@float32_core
def delta_rule(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    beta: Tensor,
    log_alpha: Tensor | None = None,
    initial_state: Tensor | None = None,
    scale: float = 1.0,
    mode: str = "auto",
    chunk_size: int = 64,
    starts: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The delta-rule sequence operator.

    q, k (B, L, H, K) queries and keys (the DeltaNet layers L2-normalize both); v (B, L, H, V);
    beta (B, L, H) write strengths, in [0, 1] for a contraction; log_alpha (B, L, H) <= 0 the log
    of the gated decay α_t, or None (no decay); initial_state (B, H, K, V) — the transpose of the
    papers' S (V, K) — or None for zeros; scale multiplies q; chunk_size: chunk length T of the
    ``chunked`` mode (the reference ignores it). A step with beta = 0 and log_alpha = 0 is the
    identity on the state (how the layers mask padding).

    Returns (o (B, L, H, V), final_state (B, H, K, V)). The ranges of beta and log_alpha are not
    checked (that would synchronize a GPU).
    ``starts`` (B, L) bool: tokens that begin a new document of a packed row, before which the
    state is zero; every mode runs each document as its own slice (ops/_documents.py).
    """
    _validate(q, k, v, beta, log_alpha, initial_state, chunk_size)
    if starts is None:
        return MODES.run(mode, k, q, k, v, beta, log_alpha, initial_state, scale, chunk_size=chunk_size)
    check_starts("delta_rule", starts, k)
    mode = MODES.resolve(mode, k, owner="delta_rule")

    def run(p: list[Tensor | None], h0: Tensor | None) -> tuple[Tensor, Tensor]:
        return MODES.run(mode, k, *p, h0, scale, chunk_size=chunk_size)

    return by_documents(run, starts, initial_state, [q, k, v, beta, log_alpha])


def _validate(
    q: Tensor, k: Tensor, v: Tensor, beta: Tensor, log_alpha: Tensor | None,
    initial_state: Tensor | None, chunk_size: int,
) -> None:
    op = "delta_rule"
    named = {"q": q, "k": k, "v": v, "beta": beta, "log_alpha": log_alpha, "initial_state": initial_state}
    check_tensors(op, named, "k", optional=("log_alpha", "initial_state"))
    batch, L, H, K = check_sequence(op, "k", k, "(B, L, H, K)")
    expect_shape(op, "q", q, (batch, L, H, K), "(B, L, H, K) like k")
    V = check_values(op, v, batch, L, H)
    expect_shape(op, "beta", beta, (batch, L, H), "(B, L, H)")
    if log_alpha is not None:
        expect_shape(op, "log_alpha", log_alpha, (batch, L, H), "(B, L, H)")
    if initial_state is not None:
        expect_shape(op, "initial_state", initial_state, (batch, H, K, V), "(B, H, K, V)")
    check_chunk_size(op, chunk_size)


__all__ = ["delta_rule", "delta_rule_reference", "delta_rule_step", "delta_rule_chunked", "MODES"]
