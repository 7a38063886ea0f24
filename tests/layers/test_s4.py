"""S4 (DPLR) mixer: HiPPO init, Woodbury discretization, kernel, fft vs reference incl. gradients."""
from __future__ import annotations

import pytest
import torch

import ssmkit
from conftest import assert_close_rel
from ssmkit.core.discretize import discretize
from ssmkit.core.hippo import dplr, hippo
from ssmkit.layers.s4 import S4, bilinear_real, dense_real_form


def _layer(d_model: int = 3, seed: int = 0, perturb: float = 0.05, **cfg) -> S4:
    """A float64 layer moved off its structured init (the low-rank term and B included)."""
    torch.manual_seed(seed)
    m = ssmkit.create_mixer("s4", d_model, **{"d_state": 8, **cfg}).double()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(perturb * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return m


def _random_state(m: S4, batch: int, gen) -> tuple[torch.Tensor]:
    h = m.init_state(batch, dtype=torch.float64)[0]
    return (torch.randn(h.shape, dtype=h.dtype, generator=gen),)


# ---------------------------------------------------------------- config, init, interface


@pytest.mark.parametrize(
    "cfg,match",
    [
        ({"d_state": 7}, "'d_state'.*even int"),
        ({"measure": "fout"}, "'measure'.*legs"),
        ({"measure": "legt", "rank": 1}, "'rank'.*>= 2"),
        ({"n_ssm": 0}, "'n_ssm'"),
        ({"n_ssm": 3}, "'n_ssm'.*divide d_model=4"),
        ({"dt_min": 0.0}, "'dt_min'"),
        ({"dt_min": 0.1, "dt_max": 0.01}, "'dt_max'"),
        ({"dropout": 1.0}, "'dropout'"),
        ({"ssm_lr": -1.0}, "'ssm_lr'"),
    ],
    ids=["odd_state", "fout", "legt_rank1", "n_ssm0", "n_ssm_not_divisor", "dt_min", "dt_range", "dropout", "ssm_lr"],
)
def test_config_errors_name_the_field(cfg, match):
    with pytest.raises(ValueError, match=match):
        ssmkit.create_mixer("s4", 4, **cfg)


@pytest.mark.parametrize("N", [8, 16], ids=lambda n: f"N{n}")
def test_init_is_hippo_legs_in_its_eigenbasis(N):
    """With x = T r, T = 2 [Re V1, -Im V1] (V1 the Im > 0 eigenvectors), the layer's real system
    (A_r, B_r) on r = [Re h; Im h] is HiPPO-LegS: T A_r = A T and T B_r = B."""
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # parameters created in float64: no float32 rounding
    try:
        m = ssmkit.create_mixer("s4", 4, d_state=N, n_ssm=2)
    finally:
        torch.set_default_dtype(default)
    s = m.system()
    assert torch.all(s.Lambda.real < 0) and torch.all(s.Lambda.imag > 0)
    A_r, B_r = dense_real_form(s.Lambda, s.P, s.B)  # (H, N, N), (H, N)
    A, B = hippo("legs", N)
    V1 = dplr("legs", N)[3][:, : N // 2]
    T = 2 * torch.cat([V1.real, -V1.imag], -1)
    assert_close_rel(T @ A_r, (A @ T).expand_as(A_r), 1e-12, "T A_r = A T")
    assert_close_rel(B_r @ T.T, B.expand_as(B_r), 1e-12, "T B_r = B")


def test_tags_and_state_interface():
    m = ssmkit.create_mixer("s4", 4, d_state=6, ssm_lr=0.01).double()
    for name in ("log_A_real", "A_imag", "P", "B", "log_dt"):
        assert getattr(m, name)._optim == {"weight_decay": 0.0, "lr": 0.01}, name
    assert m.C._optim == {"weight_decay": 0.0}
    assert m.state_size == 4 * 6
    (h,) = m.init_state(2)
    assert h.shape == (2, 4, 3) and h.dtype == torch.complex128
    x = torch.zeros(2, 5, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"Expected \(\(B, 4, 3\) complex128,\)"):
        m(x, (torch.zeros(2, 4, 4, dtype=torch.complex128),))


# ---------------------------------------------------------------- discretization and kernel


@pytest.mark.parametrize("cfg", [{}, {"measure": "legt", "rank": 2}], ids=["legs_rank1", "legt_rank2"])
def test_woodbury_bilinear_matches_dense_solve(cfg):
    s = _layer(**cfg).system()
    A_r, B_r = dense_real_form(s.Lambda, s.P, s.B)
    dA, dB = discretize(A_r, B_r[..., None], s.dt, "bilinear")
    dA_w, dB_w = bilinear_real(s.Lambda, s.P, s.B, s.dt)
    assert_close_rel(dA_w, dA, 1e-13, "dA")
    assert_close_rel(dB_w, dB[..., 0], 1e-13, "dB")


@pytest.mark.parametrize("L", [1, 8, 37, 300], ids=lambda L: f"L{L}")
def test_kernel_is_c_dA_power_dB(L):
    m = _layer(measure="lagt")
    s = m.system()
    x, K = s.dB, []
    for _ in range(L):
        K.append((s.c * x).sum(-1))
        x = (s.dA @ x[..., None])[..., 0]
    assert_close_rel(m.kernel(L), torch.stack(K, -1), 1e-10, "kernel")


# ---------------------------------------------------------------- fft vs reference


def _run(m: S4, x, state, mask, mode: str, w_y, w_h):
    """Outputs, final state and the gradients of a weighted loss of both (input, state, params)."""
    m.zero_grad(set_to_none=True)
    x = x.detach().requires_grad_(True)
    h0 = state[0].detach().requires_grad_(True)
    y, (h,) = m(x, (h0,), mask=mask, return_state=True, mode=mode)
    loss = (y * w_y).sum() + (h * w_h).real.sum()
    params = list(m.parameters())
    grads = torch.autograd.grad(loss, [x, h0, *params])
    return y.detach(), h.detach(), grads


@pytest.mark.parametrize("L", [1, 7, 130, 300], ids=lambda L: f"L{L}")
@pytest.mark.parametrize(
    "cfg", [{}, {"measure": "legt", "rank": 2, "n_ssm": 1}, {"measure": "lagt", "n_ssm": 3}],
    ids=["legs", "legt_rank2_shared", "lagt"],
)
def test_fft_matches_reference_outputs_state_gradients(cfg, L):
    """L = 130 and 300 span two and three Krylov chunks (odd count: the pairwise tree pads)."""
    m = _layer(**cfg)
    gen = torch.Generator().manual_seed(L)
    x = torch.randn(2, L, 3, dtype=torch.float64, generator=gen)
    state = _random_state(m, 2, gen)
    mask = torch.ones(2, L, dtype=torch.bool)
    mask[1, : L // 3] = False  # a shorter row: its state after fewer tokens
    w_y = torch.randn(x.shape, dtype=torch.float64, generator=gen)
    w_h = torch.randn(state[0].shape, dtype=state[0].dtype, generator=gen)
    ref = _run(m, x, state, mask, "reference", w_y, w_h)
    fft = _run(m, x, state, mask, "fft", w_y, w_h)
    assert_close_rel(fft[0], ref[0], 1e-10, "y")
    assert_close_rel(fft[1], ref[1], 1e-10, "final state")
    names = ["x", "h0", *(n for n, _ in m.named_parameters())]
    for name, a, b in zip(names, fft[2], ref[2]):
        assert_close_rel(a, b, 1e-9, f"grad {name}")


def test_step_from_a_state_matches_forward():
    m = _layer(d_state=10)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 9, 3, dtype=torch.float64, generator=gen)
    state = _random_state(m, 2, gen)
    y, (h,) = m(x, state, return_state=True, mode="fft")
    s, ys = state, []
    for t in range(x.shape[1]):
        y_t, s = m.step(x[:, t], s)
        ys.append(y_t)
    assert_close_rel(torch.stack(ys, 1), y, 1e-10, "step outputs")
    assert_close_rel(s[0], h, 1e-10, "step state")


def test_float32_long_sequence_matches_float64():
    """Float32 through the Cauchy kernel, C~ from 12 squarings of dA, and the chunked state."""
    torch.manual_seed(0)
    m = ssmkit.create_mixer("s4", 4, d_state=16, dt_min=1e-3, dt_max=1e-2)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3000, 4, generator=gen)
    state = (torch.randn(1, 4, 8, dtype=torch.complex64, generator=gen),)
    y32, (h32,) = m(x, state, return_state=True)
    m.double()
    y64, (h64,) = m(x.double(), (state[0].to(torch.complex128),), return_state=True)
    assert y32.dtype == torch.float32 and h32.dtype == torch.complex64
    assert_close_rel(y32, y64, 1e-4, "float32 y")
    assert_close_rel(h32, h64, 1e-4, "float32 final state")
