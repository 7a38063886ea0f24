"""Initializations of diagonal SSMs: S4D, LRU, S5, and the log-uniform step (docs/math/initialization.md),
directly (``dt_init``) or through a softplus bias (``softplus_dt_bias``, the selective layers).

Sources: Gu et al. 2022 "On the Parameterization and Initialization of Diagonal State Space
Models" (S4D), Orvieto et al. 2023 "Resurrecting Recurrent Neural Networks for Long Sequences"
(LRU), Smith et al. 2023 "Simplified State Space Layers for Sequence Modeling" (S5).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .hippo import diagonal_normal, dplr

S4D_KINDS = ("legs", "inv", "lin", "real")


def _complex(dtype: torch.dtype) -> torch.dtype:
    return {torch.float32: torch.complex64, torch.float64: torch.complex128}.get(dtype, dtype)


def _check_size(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")


def s4d_init(kind: str, N: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """N complex modes of a diagonal A (N,), for ``kind`` in S4D_KINDS.

    Returns the N modes to use, not a real state size: an S4D layer with real state size N_s
    (the paper's N) keeps N = N_s // 2 modes and their implicit conjugates, so it calls
    ``s4d_init(kind, N_s // 2)``. With n = 0..N-1 and N_s = 2N:

    - legs: the Im > 0 half of the eigenvalues of the normal part of HiPPO-LegS of size 2N,
            Im descending (real part -1/2);
    - inv:  -1/2 + i N_s/pi (N_s/(2n+1) - 1)  (the asymptotics of legs, same order);
    - lin:  -1/2 + i pi n;
    - real: -(n+1)  (imaginary part 0).
    """
    if kind not in S4D_KINDS:
        raise ValueError(f"unknown S4D init {kind!r}; expected one of {S4D_KINDS}")
    _check_size("number of S4D modes N", N)
    if kind == "legs":
        return diagonal_normal("legs", 2 * N, dtype)[:N]
    n = torch.arange(N, dtype=torch.float64)
    if kind == "inv":
        Ns = 2 * N
        A = torch.complex(torch.full_like(n, -0.5), Ns / math.pi * (Ns / (2 * n + 1) - 1))
    elif kind == "lin":
        A = torch.complex(torch.full_like(n, -0.5), math.pi * n)
    else:
        A = torch.complex(-(n + 1), torch.zeros_like(n))
    return A.to(_complex(dtype))


def lru_init(
    N: int,
    r_min: float = 0.0,
    r_max: float = 1.0,
    max_phase: float = 2 * math.pi,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
) -> tuple[Tensor, Tensor, Tensor]:
    """(nu_log, theta_log, gamma_log), each (N,), of the LRU exponential parametrization

        lambda = exp(-exp(nu_log) + i exp(theta_log)),   gamma_log = log sqrt(1 - |lambda|^2).

    |lambda|^2 is uniform on [r_min^2, r_max^2] (lambda uniform on the ring by area) and the phase
    uniform on [0, max_phase], as in the LRU paper.
    """
    _check_size("LRU state size N", N)
    if not 0.0 <= r_min < r_max <= 1.0:
        raise ValueError(f"LRU radii must satisfy 0 <= r_min < r_max <= 1, got r_min={r_min}, r_max={r_max}")
    if not max_phase > 0:
        raise ValueError(f"LRU max_phase must be > 0, got {max_phase}")
    # Keep u strictly inside (0, 1): u = 0 with r_min = 0 gives nu_log = +inf, and u = 1 with
    # r_max = 1 gives |lambda| = 1, nu_log = -inf and gamma_log = -inf.
    eps = torch.finfo(torch.float64).eps
    u1 = torch.rand(N, generator=generator, dtype=torch.float64).clamp(eps, 1 - eps)
    u2 = torch.rand(N, generator=generator, dtype=torch.float64).clamp(eps, 1)
    mod2 = u1 * (r_max**2 - r_min**2) + r_min**2
    nu_log = torch.log(-0.5 * torch.log(mod2))
    theta_log = torch.log(max_phase * u2)
    gamma_log = 0.5 * torch.log1p(-mod2)
    return nu_log.to(dtype), theta_log.to(dtype), gamma_log.to(dtype)


def s5_init(P: int, blocks: int, dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    """(Lambda (P,), V (P, P)) complex: S5's block-diagonal HiPPO-N initialization.

    Each of the ``blocks`` diagonal blocks of size P // blocks is the eigendecomposition of the
    normal part of HiPPO-LegS (S = A_legs + P^T P = V diag(Lambda) V^*, V unitary). Within a block
    the eigenvalues are sorted by decreasing imaginary part, so for an even block size its first
    half has Im > 0 and the second half holds their conjugates in reverse order (a conjugate-
    symmetric S5 keeps the first half of each block and the matching columns of V).
    """
    _check_size("S5 state size P", P)
    _check_size("S5 blocks", blocks)
    if P % blocks:
        raise ValueError(f"S5 state size P={P} must be divisible by blocks={blocks}")
    Lam, _, _, V = dplr("legs", P // blocks, dtype=dtype)
    return Lam.repeat(blocks), torch.block_diag(*([V] * blocks))


def inverse_softplus(x: Tensor) -> Tensor:
    """The b with softplus(b) = x, for x > 0 (exact near 0: log(expm1(x)) = x + log(-expm1(-x)))."""
    return x + torch.log(-torch.expm1(-x))


def softplus_dt_bias(n: int, dt_min: float, dt_max: float, floor: float) -> Tensor:
    """The bias b (n,) of a selective step softplus(b + ...) that starts log-uniform on [dt_min, dt_max],
    floored at ``floor`` (Mamba's dt init, also Mamba-2's and Gated DeltaNet's); float32, drawn from
    torch's global generator like the layers' other weights."""
    dt = torch.exp(torch.rand(n) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
    return inverse_softplus(dt.clamp(min=floor))


def dt_init(
    H: int,
    dt_min: float = 1e-3,
    dt_max: float = 1e-1,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """log(dt) (H,) with dt log-uniform on [dt_min, dt_max] (one step per channel / head)."""
    _check_size("number of steps H", H)
    if not 0.0 < dt_min <= dt_max:
        raise ValueError(f"dt range must satisfy 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}")
    u = torch.rand(H, generator=generator, dtype=torch.float64)
    log_dt = math.log(dt_min) + u * (math.log(dt_max) - math.log(dt_min))
    return log_dt.to(dtype)
