"""Compiled CPU mode of the selective scan: a C++ kernel built at first use, cached per machine.

``import ssmkit`` never compiles anything: the build (``ops._cpp``) runs on the first call of this
mode (or of ``cpp_unavailable_reason``), once per machine and torch version. The kernel
(``selective_scan.cpp``) reads the (B, L, D) tensors in place, vectorized across blocks of
channels. Its backward is a reverse scan that recomputes states chunk by chunk from the
states saved every ``CHUNK`` steps, so training memory is O(B D N L / CHUNK), not O(B L D N).
"""
from __future__ import annotations

import ctypes
import functools
import pathlib

import torch
from torch import Tensor

from .._cpp import load_library
from .step import discretized_step
from .validate import check_inputs

SOURCE = pathlib.Path(__file__).with_name("selective_scan.cpp")
HEADERS = (pathlib.Path(__file__).parent.parent / "kernel_math.h",)
CHUNK = 64  # steps between the states saved for the backward (recomputed from there)
BLOCK = 16  # channels per vectorized block in the backward, W in the kernel
DTYPES = {torch.float32: "f32", torch.float64: "f64"}


@functools.cache
def _library() -> ctypes.CDLL | str:
    """The loaded kernel library, or the reason it cannot be had (built and logged once)."""
    lib = load_library("ssmkit_selective_scan", SOURCE, HEADERS)
    if isinstance(lib, str):
        return lib
    for suffix in DTYPES.values():
        # (sizes..., pointers...) as declared by SSMKIT_SS_EXPORTS in the source
        getattr(lib, f"ssmkit_ss_forward_{suffix}").argtypes = [ctypes.c_int64] * 6 + [ctypes.c_void_p] * 11
        getattr(lib, f"ssmkit_ss_backward_{suffix}").argtypes = [ctypes.c_int64] * 7 + [ctypes.c_void_p] * 18
    return lib


@torch.compiler.assume_constant_result  # traced graphs take the answer as a constant (no file checks)
def cpp_unavailable_reason() -> str | None:
    """None when the C++ kernel is (or was just) built and loaded, else why not (the op's mode
    dispatch logs it once when ``auto`` falls back)."""
    lib = _library()
    return lib if isinstance(lib, str) else None


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _kernel(kind: str, dtype: torch.dtype):
    reason = cpp_unavailable_reason()
    if reason is not None:
        raise RuntimeError(f"selective_scan mode 'cpp' cannot run: {reason}")
    return getattr(_library(), f"ssmkit_ss_{kind}_{DTYPES[dtype]}")


# The kernel as two torch custom ops (torch.library): torch.compile and torch.export keep each as
# one node of the graph (no graph break at the ctypes call), trace shapes through the fake
# implementations below, and autograd runs the backward op. A custom op returns tensors only, so an
# absent result (no chunk states when nothing needs gradients, no dD without D) is an empty tensor.
@torch.library.custom_op("ssmkit::selective_scan_cpp_forward", mutates_args=())
def _forward_op(
    u: Tensor, dt: Tensor, A: Tensor, Bm: Tensor, Cm: Tensor, Dv: Tensor | None, z: Tensor | None,
    h0: Tensor | None, save: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """(u, dt, z: (B, L, D); A: (D, N); Bm, Cm: (B, L, G, N); Dv: (D,); h0: (B, D, N)), contiguous,
    one dtype -> (y (B, L, D), final state (B, D, N), chunk states for the backward (empty unless save))."""
    given = [t for t in (u, dt, A, Bm, Cm, Dv, z, h0) if t is not None]
    if not all(t.is_contiguous() and t.dtype == u.dtype and t.device.type == "cpu" for t in given):
        raise ValueError("the C++ selective scan takes contiguous CPU tensors of one dtype")
    Bsz, L, Dm = u.shape
    N, G = A.shape[1], Bm.shape[2]
    y = torch.empty_like(u)
    h_last = u.new_empty(Bsz, Dm, N)
    # States at every chunk start, laid out for the kernel's channel blocks.
    ckpt = u.new_empty(Bsz, -(-L // CHUNK), N, Dm) if save else None
    _kernel("forward", u.dtype)(
        Bsz, Dm, L, N, G, CHUNK,
        *map(_ptr, (u, dt, A, Bm, Cm, Dv, z, h0, y, h_last, ckpt)),
    )  # fmt: skip
    return y, h_last, u.new_empty(0) if ckpt is None else ckpt


@_forward_op.register_fake
def _forward_fake(u, dt, A, Bm, Cm, Dv, z, h0, save):
    Bsz, L, Dm = u.shape
    N = A.shape[1]
    ckpt = u.new_empty(Bsz, -(-L // CHUNK), N, Dm) if save else u.new_empty(0)
    return torch.empty_like(u), u.new_empty(Bsz, Dm, N), ckpt


@torch.library.custom_op("ssmkit::selective_scan_cpp_backward", mutates_args=())
def _backward_op(
    u: Tensor, dt: Tensor, A: Tensor, Bm: Tensor, Cm: Tensor, Dv: Tensor | None, z: Tensor | None,
    ckpt: Tensor, gy: Tensor, g_last: Tensor | None,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Gradients (du, ddt, dA, dB, dC, dD, dz, dh0) of the forward op; dD, dz empty without D, z."""
    Bsz, L, Dm = u.shape
    N, G = A.shape[1], Bm.shape[2]
    # dB, dC are sums over channels: each kernel task sums a slice of the group's channel
    # blocks into its own rows. About two tasks per thread balances the load.
    blocks = -(-(Dm // G) // BLOCK)
    slices = max(1, min(blocks, -(-2 * torch.get_num_threads() // (Bsz * G))))
    du, ddt = torch.empty_like(u), torch.empty_like(u)
    dA = u.new_empty(Bsz, Dm, N)
    dB = u.new_empty(Bsz, G, slices, L, N)
    dC = u.new_empty(Bsz, G, slices, L, N)
    dD = None if Dv is None else u.new_empty(Bsz, Dm)
    dz = None if z is None else torch.empty_like(u)
    dh0 = u.new_empty(Bsz, Dm, N)
    _kernel("backward", u.dtype)(
        Bsz, Dm, L, N, G, CHUNK, slices,
        *map(_ptr, (u, dt, A, Bm, Cm, Dv, z, ckpt, gy, g_last, du, ddt, dA, dB, dC, dD, dz, dh0)),
    )  # fmt: skip
    return (du, ddt, dA.sum(0), dB.sum(2).transpose(1, 2).contiguous(), dC.sum(2).transpose(1, 2).contiguous(),
            u.new_empty(0) if dD is None else dD.sum(0), u.new_empty(0) if dz is None else dz, dh0)


@_backward_op.register_fake
def _backward_fake(u, dt, A, Bm, Cm, Dv, z, ckpt, gy, g_last):
    Bsz, L, Dm = u.shape
    N = A.shape[1]
    return (torch.empty_like(u), torch.empty_like(u), A.new_empty(Dm, N), torch.empty_like(Bm), torch.empty_like(Cm),
            u.new_empty(0) if Dv is None else Dv.new_empty(Dm), u.new_empty(0) if z is None else torch.empty_like(u),
            u.new_empty(Bsz, Dm, N))


def _setup_context(ctx, inputs, output) -> None:
    u, dt, A, Bm, Cm, Dv, z, h0, _ = inputs
    ctx.save_for_backward(u, dt, A, Bm, Cm, Dv, z, output[2])
    ctx.has_h0 = h0 is not None


def _backward(ctx, gy, g_last, _g_ckpt):
    u, dt, A, Bm, Cm, Dv, z, ckpt = ctx.saved_tensors
    if ckpt.numel() == 0:
        raise RuntimeError("selective_scan mode 'cpp': the forward ran without saving its chunk states "
                           "(no input required gradients then); run it again with gradients enabled")
    gy = torch.zeros_like(u) if gy is None else gy.contiguous()
    g_last = None if g_last is None else g_last.contiguous()
    du, ddt, dA, dB, dC, dD, dz, dh0 = _backward_op(u, dt, A, Bm, Cm, Dv, z, ckpt, gy, g_last)
    return (du, ddt, dA, dB, dC, None if Dv is None else dD, None if z is None else dz,
            dh0 if ctx.has_h0 else None, None)


_forward_op.register_autograd(_backward, setup_context=_setup_context)


def selective_scan_cpp(
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
) -> tuple[Tensor, Tensor]:
    """Same signature and result as ``selective_scan_reference``; float32/float64 on the CPU."""
    if u.device.type != "cpu" or u.dtype not in DTYPES:
        raise RuntimeError(
            f"selective_scan mode 'cpp' runs float32/float64 CPU tensors, got {u.dtype} on {u.device}"
        )
    check_inputs(u, delta, A, B, C, D, z, delta_bias, initial_state)  # the kernel trusts shapes
    dt = discretized_step(delta, delta_bias, delta_softplus)

    def contiguous(x: Tensor | None) -> Tensor | None:
        return None if x is None else x.contiguous()

    B, C = (M.unsqueeze(2) if M.dim() == 3 else M for M in (B, C))  # (B, L, G, N)
    args = tuple(map(contiguous, (u, dt, A, B, C, D, z, initial_state)))
    save = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in args)
    y, h_last, _ = _forward_op(*args, save)
    return y, h_last
