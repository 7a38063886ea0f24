"""Mamba-2 state-space duality (SSD): scalar decay per head, B and C shared within groups.

    h_t[h] = exp(dt_t[h] A[h]) h_{t-1}[h] + dt_t[h] x_t[h] B_t[g(h)]^T      h_t[h]: (P, N)
    y_t[h] = h_t[h] C_t[g(h)] + D[h] x_t[h]                                g(h) = h // (H / G)

Modes (one signature, one result): ``reference`` (loop over t), ``quadratic`` (masked attention
form, O(L^2)), ``chunked`` (the SSD algorithm), ``triton`` (the SSD algorithm as Triton kernels,
forward and backward; triton.py, imported on first use). ``auto`` takes ``triton`` for CUDA
tensors when triton is installed, and ``chunked`` otherwise, whatever the length. ``ssd_step`` advances one token. See README.md and docs/math/ssd.md.
"""
from __future__ import annotations

from torch import Tensor

from ...core.precision import float32_core
from ...core.segsum import segsum
from .._validate import check_chunk_size, check_sequence, check_tensors, expect_shape
from .._documents import by_documents, check_starts
from .._triton import lazy, triton_auto_skip, triton_unavailable
from ..dispatch import Modes
from .chunked import ssd_chunked
from .quadratic import ssd_quadratic
from .reference import ssd_reference
from .step import ssd_step

MODES = Modes(
    "ssd",
    {"triton": lazy(f"{__name__}.triton", "ssd_triton"), "chunked": ssd_chunked, "quadratic": ssd_quadratic,
     "reference": ssd_reference},
    unavailable={"triton": triton_unavailable}, auto_skip={"triton": triton_auto_skip},
    options={"chunked": ("chunk_size",), "triton": ("chunk_size",)},
)


@float32_core
def ssd(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    initial_state: Tensor | None = None,
    mode: str = "auto",
    chunk_size: int = 64,
    starts: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The SSD sequence operator.

    x (B, L, H, P) inputs; dt (B, L, H) step sizes, already positive (the layer applies its bias
    and softplus), and a step with dt = 0 is the identity on the state (how padded steps are
    masked); A (H,) negative real decay rates; B and C (B, L, G, N) with G dividing H;
    D (H,) | (H, P) | None skip connection; initial_state (B, H, P, N) or None for zeros;
    chunk_size: chunk length T of the ``chunked`` mode (the other modes ignore it).

    Returns (y (B, L, H, P), final_state (B, H, P, N)). The signs of dt and A are not checked
    (that would synchronize a GPU); with dt >= 0 and A <= 0 no mode exponentiates a positive number.
    ``starts`` (B, L) bool: tokens that begin a new document of a packed row, before which the
    state is zero; every mode runs each document as its own slice (ops/_documents.py).
    """
    _validate(x, dt, A, B, C, D, initial_state, chunk_size)
    if starts is None:
        return MODES.run(mode, x, x, dt, A, B, C, D, initial_state, chunk_size=chunk_size)
    check_starts("ssd", starts, x)
    mode = MODES.resolve(mode, x, owner="ssd")

    def run(p: list[Tensor | None], h0: Tensor | None) -> tuple[Tensor, Tensor]:
        return MODES.run(mode, x, p[0], p[1], A, p[2], p[3], D, h0, chunk_size=chunk_size)

    return by_documents(run, starts, initial_state, [x, dt, B, C])


def _validate(
    x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor,
    D: Tensor | None, initial_state: Tensor | None, chunk_size: int,
) -> None:
    op = "ssd"
    named = {"x": x, "dt": dt, "A": A, "B": B, "C": C, "D": D, "initial_state": initial_state}
    check_tensors(op, named, "x", optional=("D", "initial_state"))
    batch, L, H, P = check_sequence(op, "x", x, "(B, L, H, P)")
    expect_shape(op, "dt", dt, (batch, L, H), "(B, L, H)")
    expect_shape(op, "A", A, (H,), "(H,)")
    if B.ndim != 4 or tuple(B.shape[:2]) != (batch, L):
        raise ValueError(f"{op}: B must have shape (B, L, G, N) with B={batch}, L={L}, got {tuple(B.shape)}")
    G, N = B.shape[2], B.shape[3]
    if G == 0 or H % G != 0:
        raise ValueError(f"{op}: the number of groups G={G} of B must divide the number of heads H={H}")
    expect_shape(op, "C", C, (batch, L, G, N), "(B, L, G, N) like B")
    if D is not None and tuple(D.shape) not in ((H,), (H, P)):
        raise ValueError(f"{op}: D must have shape (H,) = {(H,)} or (H, P) = {(H, P)}, got {tuple(D.shape)}")
    if initial_state is not None:
        expect_shape(op, "initial_state", initial_state, (batch, H, P, N), "(B, H, P, N)")
    check_chunk_size(op, chunk_size)


__all__ = ["ssd", "ssd_reference", "ssd_quadratic", "ssd_chunked", "ssd_step", "segsum", "MODES"]
