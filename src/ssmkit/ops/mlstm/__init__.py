"""mLSTM matrix memory with exponential gating and its stabilizer (Beck et al. 2024, xLSTM).

    m_t = max(log f_t + m_{t-1}, log i_t),  f' = exp(log f_t + m_{t-1} - m_t),  i' = exp(log i_t - m_t)
    C_t = f' C_{t-1} + i' k_t v_t^T   (K, V),   n_t = f' n_{t-1} + i' k_t
    h_t = C_t^T q_t / max(|n_t^T q_t|, exp(-m_t))

Modes (one signature, one result up to rounding): ``reference`` (loop over t), ``chunked``
(chunkwise parallel, stabilized in log space). ``auto`` is always ``chunked``. See README.md.
``mlstm_step`` advances one token.
"""
from __future__ import annotations

from torch import Tensor

from ...core.precision import float32_core
from .._validate import check_chunk_size, check_sequence, check_tensors, check_values, expect_shape
from .._documents import by_documents, check_starts
from ..dispatch import Modes
from .chunked import mlstm_chunked
from .reference import mlstm_reference
from .step import mlstm_step

MODES = Modes("mlstm", {"chunked": mlstm_chunked, "reference": mlstm_reference}, options={"chunked": ("chunk_size",)})


@float32_core
def mlstm(
    q: Tensor, k: Tensor, v: Tensor, log_i: Tensor, log_f: Tensor,
    initial_state: tuple[Tensor, Tensor, Tensor] | None = None,
    mode: str = "auto", chunk_size: int = 128, starts: Tensor | None = None,
) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor]]:
    """The mLSTM sequence operator.

    q, k (B, L, H, K) queries and keys (any key scaling is the caller's), v (B, L, H, V),
    log_i (B, L, H) input-gate pre-activations (the gate is exp), log_f (B, L, H) log forget
    gates (<= 0 for a sigmoid gate; log f = 0 with log i = -inf is an identity step),
    initial_state (C (B, H, K, V), n (B, H, K), m (B, H)) or None for zeros (m = 0).
    Returns (h (B, L, H, V), final_state (C, n, m)).
    ``starts`` (B, L) bool: tokens that begin a new document of a packed row, before which the
    state is zero; every mode runs each document as its own slice (ops/_documents.py).
    """
    _validate(q, k, v, log_i, log_f, initial_state, chunk_size)
    if starts is None:
        return MODES.run(mode, q, q, k, v, log_i, log_f, initial_state, chunk_size=chunk_size)
    check_starts("mlstm", starts, q)
    mode = MODES.resolve(mode, q, owner="mlstm")

    def run(p: list[Tensor | None], h0: tuple[Tensor, Tensor, Tensor] | None):
        return MODES.run(mode, q, *p, h0, chunk_size=chunk_size)

    return by_documents(run, starts, None if initial_state is None else tuple(initial_state), [q, k, v, log_i, log_f])


def _validate(
    q: Tensor, k: Tensor, v: Tensor, log_i: Tensor, log_f: Tensor,
    initial_state: tuple[Tensor, Tensor, Tensor] | None, chunk_size: int,
) -> None:
    op = "mlstm"
    named = {"q": q, "k": k, "v": v, "log_i": log_i, "log_f": log_f}
    if initial_state is not None:
        if not isinstance(initial_state, (tuple, list)) or len(initial_state) != 3:
            raise TypeError(f"{op}: initial_state must be a tuple (C, n, m) of tensors")
        named.update(zip(("C", "n", "m"), initial_state))
    check_tensors(op, named, "q")
    batch, L, H, K = check_sequence(op, "q", q, "(B, L, H, K)")
    expect_shape(op, "k", k, (batch, L, H, K), "(B, L, H, K)")
    V = check_values(op, v, batch, L, H)
    for name, shape, legend in (("log_i", (batch, L, H), "(B, L, H)"), ("log_f", (batch, L, H), "(B, L, H)"),
                                ("C", (batch, H, K, V), "(B, H, K, V)"), ("n", (batch, H, K), "(B, H, K)"),
                                ("m", (batch, H), "(B, H)")):
        if name in named:
            expect_shape(op, name, named[name], shape, legend)
    check_chunk_size(op, chunk_size)


__all__ = ["mlstm", "mlstm_reference", "mlstm_step", "mlstm_chunked", "MODES"]
