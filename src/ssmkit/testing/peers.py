"""The referee of kernels (``ssmkit check --peers``): every Triton mode of an op, ssmkit's own and the
peers' (flash-linear-attention's), against the op's float64 reference, run in float32 (the dtype the
kernels are for), reported per check like ``ssmkit check``: outputs with the final state, and the
gradients of every input (initial state included).

The cases cross chunk boundaries with a partial last chunk (L = 37 by default, 67 on a GPU script's
request), carry an initial state, and cover every decay kind the op takes. A mode that cannot run
here is reported n/a with the reason (``detail``), never used and never a silent pass; the tolerance
is float32's: the float32 reference loop itself loses ~1e-6 relative here, so 1e-4 leaves a margin
of ~100 while any wrong formula (a missing decay, a wrong gradient) is off by O(1).
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from .equivalence import CheckResult
from .tolerances import rel_err

FLOAT32_TOL = 1e-4

# op name -> the modes refereed here (ssmkit's triton first, then the peers')
MODES: dict[str, tuple[str, ...]] = {
    "linear_attention": ("triton", "fla", "fla_recurrent"),
    "ssd": ("triton",),
    "selective_scan": ("triton",),
}


def _linear_attention_cases(L: int, gen: torch.Generator) -> dict[str, dict[str, Any]]:
    B, H, K, V = 2, 2, 16, 16

    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    def decay(*shape):
        return -torch.rand(*shape, generator=gen, dtype=torch.float64) * 0.5

    base = lambda: {"q": randn(B, L, H, K), "k": randn(B, L, H, K) * K**-0.5, "v": randn(B, L, H, V),  # noqa: E731
                    "initial_state": randn(B, H, K, V)}
    return {"no-decay": base() | {"log_decay": None}, "head-decay": base() | {"log_decay": decay(H)},
            "step-decay": base() | {"log_decay": decay(B, L, H)}, "key-decay": base() | {"log_decay": decay(B, L, H, K)}}


def _ssd_cases(L: int, gen: torch.Generator) -> dict[str, dict[str, Any]]:
    B, H, P, G, N = 2, 4, 8, 2, 16
    randn = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float64)  # noqa: E731
    return {"groups": {"x": randn(B, L, H, P), "dt": torch.rand(B, L, H, generator=gen, dtype=torch.float64) * 0.5,
                       "A": -torch.linspace(0.5, 2.0, H, dtype=torch.float64), "B": randn(B, L, G, N),
                       "C": randn(B, L, G, N), "D": randn(H), "initial_state": randn(B, H, P, N)}}


def _selective_scan_cases(L: int, gen: torch.Generator) -> dict[str, dict[str, Any]]:
    B, D, N = 2, 16, 8
    randn = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float64)  # noqa: E731
    return {"full": {"u": randn(B, L, D), "delta": randn(B, L, D), "A": -torch.rand(D, N, generator=gen,
                                                                                    dtype=torch.float64) - 0.1,
                     "B": randn(B, L, N), "C": randn(B, L, N), "D": randn(D), "z": randn(B, L, D),
                     "delta_bias": randn(D), "delta_softplus": True, "initial_state": randn(B, D, N)}}


CASES: dict[str, Callable[[int, torch.Generator], dict[str, dict[str, Any]]]] = {
    "linear_attention": _linear_attention_cases, "ssd": _ssd_cases, "selective_scan": _selective_scan_cases,
}
OPTIONS: dict[str, dict[str, Any]] = {"linear_attention": {"scale": 0.5}}


def _op(name: str):
    import importlib

    module = importlib.import_module(f"ssmkit.ops.{name}")
    return getattr(module, name), module.MODES


def _run(fn, inputs: dict[str, Any], dtype: torch.dtype, mode: str, options: dict[str, Any], seed: int):
    """(out, final, {name: grad}) with the loss a fixed random projection of both outputs."""
    leaves = {n: t.detach().to(dtype).requires_grad_(True) for n, t in inputs.items() if isinstance(t, Tensor)}
    out, final = fn(**{**inputs, **leaves}, mode=mode, **options)
    g = torch.Generator().manual_seed(seed)
    w_out = torch.randn(out.shape, generator=g, dtype=torch.float64).to(out)
    w_final = torch.randn(final.shape, generator=g, dtype=torch.float64).to(out)
    # a kernel that gives an input no gradient gets zeros: an error against the reference's gradient
    grads = torch.autograd.grad((out * w_out).sum() + (final * w_final).sum(), list(leaves.values()),
                                allow_unused=True)
    grads = [torch.zeros_like(t) if g is None else g for t, g in zip(leaves.values(), grads)]
    return out.detach(), final.detach(), dict(zip(leaves, grads))


def check_peers(ops: Iterable[str] | None = None, length: int = 37, device: str | torch.device = "cpu",
                tol: float = FLOAT32_TOL, seed: int = 0) -> list[CheckResult]:
    """One row per (op, mode, case, outputs|grads): the float32 mode against the float64 reference.
    Interpreted (TRITON_INTERPRET=1), autotuned kernels run their first config."""
    from ..ops._triton import interpreted, interpreter_first_config

    with interpreter_first_config() if interpreted() else contextlib.nullcontext():
        return _check_peers(ops, length, device, tol, seed)


def _check_peers(ops: Iterable[str] | None, length: int, device: str | torch.device, tol: float,
                 seed: int) -> list[CheckResult]:
    rows: list[CheckResult] = []
    for op in ops or MODES:
        if op not in MODES:
            raise ValueError(f"check_peers: unknown op {op!r}; ops: {sorted(MODES)}")
        fn, modes = _op(op)
        for case, inputs in CASES[op](length, torch.Generator().manual_seed(seed)).items():
            inputs = {n: t.to(device) if isinstance(t, Tensor) else t for n, t in inputs.items()}
            like = next(t for t in inputs.values() if isinstance(t, Tensor)).float()
            ref = _run(fn, inputs, torch.float64, "reference", OPTIONS.get(op, {}), seed + 1)
            setting = f"L={length} {case}"
            for mode in MODES[op]:
                reason = modes.unavailable_reason(mode, like)
                if reason is not None:
                    rows.append(CheckResult(op, f"{mode}", float("nan"), tol, f"cannot run here: {reason}",
                                            setting, allowed=True))
                    continue
                try:
                    out, final, grads = _run(fn, inputs, torch.float32, mode, OPTIONS.get(op, {}), seed + 1)
                except Exception as err:  # a peer's kernel that crashes is reported, never used
                    rows.append(CheckResult(op, f"{mode}", float("inf"), tol, f"raised {type(err).__name__}: "
                                            f"{str(err).splitlines()[0][:160]}", setting))
                    continue
                rows.append(CheckResult(op, f"{mode}:out+state", max(rel_err(out, ref[0]), rel_err(final, ref[1])),
                                        tol, "", setting))
                worst = max(ref[2], key=lambda n: rel_err(grads[n], ref[2][n]))
                rows.append(CheckResult(op, f"{mode}:grads", rel_err(grads[worst], ref[2][worst]), tol,
                                        f"worst: d{worst}", setting))
    return rows
