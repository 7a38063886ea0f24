"""H3: fft vs reference (outputs, state, gradients incl. the initial state, masks, multi-head),
the layer against a naive computation from dense powers, the shift SSM as a real shift-matrix
SSM, init and config validation."""
from __future__ import annotations

import pytest
import torch

from conftest import assert_close_rel
from ssmkit import create_mixer
from ssmkit.core.init import s4d_init
from ssmkit.ops.long_conv import long_conv

from .layer_helpers import assert_mode_matches_reference

D = 8


def make(seed: int = 0, **cfg):
    torch.manual_seed(seed)
    return create_mixer("h3", D, **{"d_state": 6, "d_shift": 4, **cfg}).double()


def random_state(m, B, gen):
    shift, s = m.init_state(B, dtype=torch.float64)
    return (torch.randn(shift.shape, generator=gen, dtype=torch.float64),
            torch.randn(s.shape, generator=gen, dtype=torch.complex128))


@pytest.mark.parametrize("head_dim", [1, 2], ids=lambda p: f"P{p}")
@pytest.mark.parametrize("L", [1, 7, 40], ids=lambda L: f"L{L}")
def test_fft_matches_reference_with_mask_and_state(L, head_dim):
    m = make(L, head_dim=head_dim)
    gen = torch.Generator().manual_seed(L)
    B = 3
    x = torch.randn(B, L, D, generator=gen, dtype=torch.float64, requires_grad=True)
    s0 = [t.requires_grad_(True) for t in random_state(m, B, gen)]
    assert_mode_matches_reference(m, "fft", x, s0, gen, ["shift", "ssm"], 1e-11, 1e-10)


@pytest.mark.parametrize("mode", ["fft", "reference"])
def test_layer_matches_naive_kernels_from_dense_powers(mode):
    """y = W_o(Σ_i q_i (K * (k̄_i v) + D k̄_i v)) with K_l = 2 Re(Σ_n C_n dB_n dA_n^l), zoh."""
    m = make(1, head_dim=2)
    gen = torch.Generator().manual_seed(2)
    B, L, P = 2, 13, 2
    H = D // P
    x = torch.randn(B, L, D, generator=gen, dtype=torch.float64)
    q, k, v = (x @ lin.weight.T + lin.bias for lin in (m.q_proj, m.k_proj, m.v_proj))
    kbar = torch.zeros_like(k)
    for t in range(L):  # shift SSM: taps C_l on k_{t-l}, skip D on k_t
        for lag in range(min(t + 1, 4)):
            kbar[:, t] += m.shift_C[:, lag] * k[:, t - lag]
        kbar[:, t] += m.shift_D * k[:, t]
    dt = torch.exp(m.log_dt)[:, None]
    A = torch.complex(-torch.exp(m.log_A_real), m.A_imag)
    dA, dB = torch.exp(dt * A), (torch.exp(dt * A) - 1) / A  # zoh with B = 1
    C = torch.view_as_complex(m.C.contiguous())
    lags = torch.arange(L, dtype=torch.float64)
    K = 2 * (C[..., None] * dB[..., None] * dA[..., None] ** lags).real.sum(1)  # (H, L)
    kv = kbar.view(B, L, H, P, 1) * v.view(B, L, H, 1, P)
    o = torch.zeros_like(kv)
    for t in range(L):
        for s in range(t + 1):
            o[:, t] += K[:, t - s, None, None] * kv[:, s]
    o = o + m.D[:, None, None] * kv
    y = (q.view(B, L, H, P, 1) * o).sum(-2).reshape(B, L, D)
    assert_close_rel(m(x, mode=mode), y @ m.output_linear.weight.T + m.output_linear.bias, 1e-11, "y")


def test_shift_kernel_is_the_shift_matrix_ssm():
    """x_t = S x_{t-1} + e_1 k_t (S: ones below the diagonal), y_t = c x_t + d k_t."""
    m = make(3, d_shift=5)
    gen = torch.Generator().manual_seed(3)
    k = torch.randn(2, 9, D, generator=gen, dtype=torch.float64)
    S = torch.diag(torch.ones(4, dtype=torch.float64), -1)  # (5, 5) shift matrix
    e1 = torch.zeros(5, dtype=torch.float64)
    e1[0] = 1.0
    xs = torch.zeros(2, D, 5, dtype=torch.float64)
    ys = []
    for t in range(9):
        xs = xs @ S.T + k[:, t, :, None] * e1
        ys.append((m.shift_C * xs).sum(-1) + m.shift_D * k[:, t])
    y, _ = long_conv(k, m.shift_kernel())
    assert_close_rel(y, torch.stack(ys, 1), 1e-13, "shift SSM")


def test_init_and_tags():
    torch.manual_seed(0)
    m = create_mixer("h3", 16, head_dim=4)
    A = torch.complex(-torch.exp(m.log_A_real), m.A_imag)
    assert_close_rel(A.to(torch.complex128), s4d_init("lin", 32).expand(4, 32), 1e-6, "S4D-Lin")
    dt = torch.exp(m.log_dt)
    assert (dt >= 1e-3 * (1 - 1e-6)).all() and (dt <= 1e-1 * (1 + 1e-6)).all()
    tagged = {name: p._optim for name, p in m.named_parameters() if hasattr(p, "_optim")}
    assert set(tagged) == {"shift_C", "log_dt", "log_A_real", "A_imag", "C"}
    assert tagged["log_dt"] == {"weight_decay": 0.0, "lr": 1e-3}
    state = m.init_state(2, dtype=torch.float64)
    assert [tuple(t.shape) for t in state] == [(2, 63, 16), (2, 4, 4, 4, 32)]
    assert state[1].dtype == torch.complex128
    assert m.state_size == state[0][0].numel() + 2 * state[1][0].numel()


@pytest.mark.parametrize(
    "cfg,field",
    [
        (dict(head_dim=3), "head_dim"),
        (dict(d_state=5), "d_state"),
        (dict(d_shift=0), "d_shift"),
        (dict(init="hippo"), "init"),
        (dict(dt_min=0.2, dt_max=0.1), "dt_min"),
    ],
)
def test_config_validation_names_the_field(cfg, field):
    with pytest.raises(ValueError, match=f"'{field}'"):
        create_mixer("h3", D, **cfg)
