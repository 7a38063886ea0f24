"""Irregular sampling: the layers with per-token dt against the exact continuous-time solution.

The system  h'(t) = A h(t) + B u(t)  with A diagonal (complex) is solved in float64 independently
of the layers: in a random dense basis (A_dense = V diag(A) V^-1), with torch.linalg.matrix_exp
over absolute times, never through a per-step recursion. Two input models (docs/irregular.md):

- zoh: u is held constant on (t_{k-1}, t_k] at the sample x_k (S4D zoh, DSS, S5 zoh, LRU);
- impulse: u = sum_k delta(t - t_k) tau_k x_k, tau_k = t_k - t_{k-1} (Mamba's Delta B x rule).

Learned steps are set to 1, so Delta_t = dt_t and t_k = t_0 + sum_{j<=k} dt_j. The layers' outputs
(every dt mode) and states (step by step and final) must equal the exact ones to ~1e-10.
"""
from __future__ import annotations

import logging
import math

import pytest
import torch
import torch.nn.functional as F

import ssmkit
from conftest import assert_close_rel
from ssmkit.core.init import inverse_softplus
from ssmkit.ops.short_conv import short_conv

B_, L_ = 2, 9
TOL = 1e-10


def _times(gen: torch.Generator) -> torch.Tensor:
    """Irregular gaps dt (B, L) over two decades, float64."""
    return torch.exp(torch.empty(B_, L_, dtype=torch.float64).uniform_(math.log(0.05), math.log(3.0), generator=gen))


def _dense(A: torch.Tensor, Bm: torch.Tensor, gen: torch.Generator):
    """A diag (n,), B (n, m) -> (A_dense, B_dense, V): the same system in a random basis x = V h."""
    n = A.shape[0]
    V = torch.eye(n, dtype=torch.complex128) + 0.3 * torch.randn(n, n, dtype=torch.complex128, generator=gen)
    return V @ torch.diag(A) @ torch.linalg.inv(V), V @ Bm, V


def exact_states(A: torch.Tensor, Bm: torch.Tensor, u: torch.Tensor, dt: torch.Tensor, h0: torch.Tensor,
                 gen: torch.Generator, input_model: str = "zoh") -> torch.Tensor:
    """h(t_k) (L, n) for one sequence: A (n,) complex, B (n, m), u (L, m), dt (L,), h0 (n,)."""
    Ad, Bd, V = _dense(A.to(torch.complex128), Bm.to(torch.complex128), gen)
    n, m = Bd.shape
    t = torch.cat([dt.new_zeros(1), dt.cumsum(0)])  # t_0 .. t_L
    Vinv = torch.linalg.inv(V)
    x0 = V @ h0.to(torch.complex128)
    aug = torch.zeros(n + m, n + m, dtype=torch.complex128)
    aug[:n, :n], aug[:n, n:] = Ad, Bd
    out = []
    for k in range(1, len(t)):
        x = torch.linalg.matrix_exp(Ad * (t[k] - t[0])) @ x0
        for j in range(1, k + 1):
            uj = u[j - 1].to(torch.complex128)
            if input_model == "zoh":  # int_{t_{j-1}}^{t_j} e^{A (t_k - s)} B ds u_j
                held = torch.linalg.matrix_exp(aug * (t[j] - t[j - 1]))[:n, n:] @ uj
            else:  # impulse of weight tau_j at t_j
                held = (t[j] - t[j - 1]) * (Bd @ uj)
            x = x + torch.linalg.matrix_exp(Ad * (t[k] - t[j])) @ held
        out.append(Vinv @ x)
    return torch.stack(out)


def _steps(m, x, dt, state):
    ys, hs = [], []
    for t in range(x.shape[1]):
        y, state = m.step(x[:, t], state, dt=dt[:, t])
        ys.append(y)
        hs.append(state)
    return torch.stack(ys, 1), hs


def _check_every_path(m, x, dt, h0, y_exact, states):
    """A one-tensor state (h,): every dt mode and token-by-token steps against the exact solution."""
    _check_modes(m, x, dt, (h0,), y_exact, states[:, -1], lambda s: s[0])
    ys, hs = _steps(m, x, dt, (h0,))
    assert_close_rel(ys, y_exact, TOL, "step outputs")
    assert_close_rel(torch.stack([s[0] for s in hs], 1), states, TOL, "step states")


def _check_modes(m, x, dt, h0_state, y_exact, final_exact, pick):
    for mode in m.dt_modes or m.modes:  # a mode that cannot run here raises: a failure, not a skip
        y, s = m(x, h0_state, dt=dt, return_state=True, mode=mode)
        assert_close_rel(y, y_exact, TOL, f"{mode} output")
        assert_close_rel(pick(s), final_exact, TOL, f"{mode} final state")


@pytest.mark.parametrize("name", ["s4d", "dss"])
def test_diagonal_lti_zoh_equals_continuous_solution(name, gen):
    torch.manual_seed(0)
    H, Nh = 3, 4
    m = ssmkit.create_mixer(name, H, d_state=2 * Nh).double().eval()
    with torch.no_grad():
        m.log_dt.zero_()  # learned step 1: Delta_t = dt_t
    c = m.continuous_system()
    A = c.A.expand(H, Nh)
    Bc = c.B.expand(H, Nh)
    x = torch.randn(B_, L_, H, dtype=torch.float64, generator=gen)
    dt = _times(gen)
    h0 = torch.randn(B_, H, Nh, dtype=torch.complex128, generator=gen)
    states = torch.zeros(B_, L_, H, Nh, dtype=torch.complex128)
    for b in range(B_):
        for h in range(H):  # one SISO system per channel
            states[b, :, h] = exact_states(A[h], Bc[h][:, None], x[b, :, h, None], dt[b], h0[b, h], gen)
    y_exact = m._post((c.C * states).real.sum(-1), x)  # the layer's head on the exact readout
    _check_every_path(m, x, dt, h0, y_exact, states)


def test_s5_zoh_equals_continuous_solution(gen):
    torch.manual_seed(0)
    D = 3
    m = ssmkit.create_mixer("s5", D, d_state=8, blocks=2).double().eval()
    with torch.no_grad():
        m.log_dt.zero_()
    A, Bt = m.eigenvalues(), torch.complex(m.B_re, m.B_im)  # (P',), (P', D)
    x = torch.randn(B_, L_, D, dtype=torch.float64, generator=gen)
    dt = _times(gen)
    h0 = torch.randn(B_, m.n_modes, dtype=torch.complex128, generator=gen)
    states = torch.stack([exact_states(A, Bt, x[b], dt[b], h0[b], gen) for b in range(B_)])
    y_exact = m.output_block(states, x)
    _check_every_path(m, x, dt, h0, y_exact, states)


def test_lru_equals_zoh_of_its_continuous_system(gen):
    """LRU: A = log(lambda), B_c = gamma B log(lambda) / (lambda - 1), whose unit-step zoh is the LRU."""
    torch.manual_seed(0)
    D = 3
    m = ssmkit.create_mixer("lru", D, d_state=5, r_min=0.5, r_max=0.95).double().eval()
    z = m.log_eigenvalues()
    lam = torch.exp(z)
    Bc = m.input_matrix() * (z / (lam - 1))[:, None]
    x = torch.randn(B_, L_, D, dtype=torch.float64, generator=gen)
    dt = _times(gen)
    h0 = torch.randn(B_, 5, dtype=torch.complex128, generator=gen)
    states = torch.stack([exact_states(z, Bc, x[b], dt[b], h0[b], gen) for b in range(B_)])
    y_exact = m.output_block(states, x)
    _check_every_path(m, x, dt, h0, y_exact, states)


def _mamba_inputs(m, x):
    """xc (B, L, E), B_t, C_t (B, L, N), z (B, L, E): what the selective SSM sees (independent of dt)."""
    xi, z = m.in_proj(x).chunk(2, dim=-1)
    conv_out, _ = short_conv(xi, m.conv1d.weight[:, 0, :], m.conv1d.bias, None)
    xc, _, Bt, Ct = m._ssm_inputs(conv_out, None)
    return xc, Bt, Ct, z


def test_mamba_equals_impulse_driven_continuous_solution(gen):
    """Mamba's h_k = e^{Delta_k A} h_{k-1} + Delta_k B_k x_k with Delta_k = dt_k is the exact solution of
    h' = A h + sum_k delta(t - t_k) tau_k B_k x_k: every mode, step, outputs, from a non-zero state."""
    torch.manual_seed(0)
    m = ssmkit.create_mixer("mamba", 4, d_state=3, expand=1).double().eval()
    with torch.no_grad():
        m.dt_proj.weight.zero_()  # learned step softplus(bias) = 1
        m.dt_proj.bias.fill_(inverse_softplus(torch.tensor(1.0, dtype=torch.float64)).item())
    x = torch.randn(B_, L_, 4, dtype=torch.float64, generator=gen)
    dt = _times(gen)
    xc, Bt, Ct, z = _mamba_inputs(m, x)
    A = -torch.exp(m.A_log)  # (E, N) real
    E, N = A.shape
    h0 = torch.randn(B_, E, N, dtype=torch.float64, generator=gen)
    states = torch.zeros(B_, L_, E, N, dtype=torch.float64)
    for b in range(B_):
        for e in range(E):  # per channel: A_e (N,), input B_t x_t,e
            u = (Bt[b] * xc[b, :, e, None]).detach()  # (L, N): one input per state (B = I)
            ex = exact_states(A[e].to(torch.complex128), torch.eye(N, dtype=torch.complex128), u, dt[b],
                              h0[b, e], gen, input_model="impulse")
            states[b, :, e] = ex.real
    y_exact = m.out_proj(((states * Ct[:, :, None, :]).sum(-1) + m.D * xc) * F.silu(z))
    conv0 = torch.zeros(B_, m.config.d_conv - 1, E, dtype=torch.float64)
    _check_modes(m, x, dt, (conv0, h0), y_exact, states[:, -1], lambda s: s[1])
    ys, hs = _steps(m, x, dt, (conv0, h0))
    assert_close_rel(ys, y_exact, TOL, "step outputs")
    assert_close_rel(torch.stack([s[1] for s in hs], 1), states, TOL, "step states")


def test_mamba_free_decay_is_exact_over_elapsed_time(gen):
    """With zero SSM input (x = 0, conv bias 0 -> silu(0) = 0), the state is e^{A (t_k - t_0)} h0."""
    m = ssmkit.create_mixer("mamba", 4, d_state=3).double().eval()
    with torch.no_grad():
        m.conv1d.bias.zero_()
        m.dt_proj.weight.zero_()
        m.dt_proj.bias.fill_(inverse_softplus(torch.tensor(1.0, dtype=torch.float64)).item())
    dt = _times(gen)
    h0 = torch.randn(B_, m.d_inner, 3, dtype=torch.float64, generator=gen)
    conv0 = torch.zeros(B_, m.config.d_conv - 1, m.d_inner, dtype=torch.float64)
    A = -torch.exp(m.A_log)
    _, hs = _steps(m, torch.zeros(B_, L_, 4, dtype=torch.float64), dt, (conv0, h0))
    t = dt.cumsum(1)  # (B, L)
    expected = torch.exp(t[:, :, None, None] * A) * h0[:, None]
    assert_close_rel(torch.stack([s[1] for s in hs], 1), expected, TOL, "free decay")


def test_mamba2_equals_impulse_driven_continuous_solution(gen):
    torch.manual_seed(0)
    m = ssmkit.create_mixer("mamba2", 4, d_state=3, head_dim=4, expand=2).double().eval()
    E, H, N = m.d_inner, m.n_heads, 3
    with torch.no_grad():
        m.in_proj.weight[-H:].zero_()  # the dt rows: learned step softplus(dt_bias) = 1
        m.dt_bias.fill_(inverse_softplus(torch.tensor(1.0, dtype=torch.float64)).item())
    x = torch.randn(B_, L_, 4, dtype=torch.float64, generator=gen)
    dt = _times(gen)
    _, xbc, _ = m._project(x)
    xc, _ = short_conv(xbc, m.conv1d.weight[:, 0, :], m.conv1d.bias, None)
    xs, Bt, _, _ = m._ssm_inputs(F.silu(xc), torch.zeros(B_, L_, H, dtype=torch.float64), None)
    A = -torch.exp(m.A_log)  # (H,)
    P = m.config.head_dim
    h0 = torch.randn(B_, H, P, N, dtype=torch.float64, generator=gen)
    states = torch.zeros(B_, L_, H, P, N, dtype=torch.float64)
    for b in range(B_):
        for h in range(H):  # the state of head h: P x N entries sharing the scalar decay A_h
            u = (xs[b, :, h, :, None] * Bt[b, :, 0, None, :]).flatten(1).detach()  # (L, P N)
            Ah = A[h].to(torch.complex128).expand(P * N)
            ex = exact_states(Ah, torch.eye(P * N, dtype=torch.complex128), u, dt[b], h0[b, h].flatten(),
                              gen, input_model="impulse")
            states[b, :, h] = ex.real.unflatten(-1, (P, N))
    conv0 = torch.zeros(B_, m.config.d_conv - 1, m.conv_dim, dtype=torch.float64)
    for mode in m.modes:
        _, s = m(x, (conv0, h0), dt=dt, return_state=True, mode=mode)
        assert_close_rel(s[1], states[:, -1], TOL, f"{mode} final state")
    _, hs = _steps(m, x, dt, (conv0, h0))
    assert_close_rel(torch.stack([s[1] for s in hs], 1), states, TOL, "step states")


# ----------------------------------------------------------------- interface behaviour
def test_fft_mode_rejects_dt_and_auto_falls_back_to_chunked(caplog):
    m = ssmkit.create_mixer("s4d", 4).double()
    x = torch.randn(1, 6, 4, dtype=torch.float64)
    dt = torch.full((1, 6), 0.5, dtype=torch.float64)
    with pytest.raises(ValueError, match="mode 'fft' cannot take per-token dt"):
        m(x, dt=dt, mode="fft")
    with caplog.at_level(logging.WARNING, logger="ssmkit"):
        ssmkit.log._logged.discard(
            "S4D (mixer 's4d'): mode 'fft' cannot take per-token dt (a time-varying step); auto uses "
            "'chunked' when dt is given")
        y = m(x, dt=dt)
    assert "auto uses 'chunked'" in caplog.text
    assert torch.equal(y, m(x, dt=dt, mode="chunked"))


@pytest.mark.parametrize("name", ["s4d", "s5", "lru", "mamba"])
def test_bad_dt_is_rejected_with_a_clear_error(name):
    m = ssmkit.create_mixer(name, 4)
    x = torch.randn(2, 5, 4)
    with pytest.raises(ValueError, match=r"shape \(B, L\) = \(2, 5\)"):
        m(x, dt=torch.ones(2, 4))
    with pytest.raises(ValueError, match="NaN or Inf"):
        m(x, dt=torch.tensor([[1.0, float("nan"), 1, 1, 1]] * 2))
    with pytest.raises(ValueError, match="> 0"):
        m(x, dt=torch.zeros(2, 5))
    with pytest.raises(TypeError, match="floating-point"):
        m(x, dt=torch.ones(2, 5, dtype=torch.long))
    with pytest.raises(TypeError, match="torch.Tensor"):
        m(x, dt=[1.0] * 5)
    with pytest.raises(ValueError, match=r"\(B,\) = \(2,\)"):
        m.step(x[:, 0], m.init_state(2), dt=torch.ones(2, 1))
    # A padded position may hold any dt (even NaN): it is never read.
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[0, 2] = False
    dt = torch.ones(2, 5)
    dt[0, 2] = float("nan")
    assert torch.isfinite(m(x, mask=mask, dt=dt)).all()


def test_mixer_without_dt_names_itself_and_the_ones_that_take_it():
    m = ssmkit.create_mixer("retnet", 8)
    with pytest.raises(ValueError, match=r"RetNet \(mixer 'retnet'\) does not take per-token time deltas.*'s4d'"):
        m(torch.randn(1, 3, 8), dt=torch.ones(1, 3))


def test_s4d_bilinear_with_dt_is_consistent():
    """Bilinear is not exact in continuous time, but dt = 1 is the regular layer and forward == step."""
    torch.manual_seed(0)
    m = ssmkit.create_mixer("s4d", 4, discretization="bilinear").double().eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 7, 4, dtype=torch.float64, generator=g)
    dt = torch.exp(torch.randn(2, 7, dtype=torch.float64, generator=g))
    assert_close_rel(m(x, dt=torch.ones_like(dt), mode="chunked"), m(x, mode="chunked"), 1e-13, "dt = 1")
    y, s = m(x, dt=dt, return_state=True, mode="chunked")
    ys, hs = _steps(m, x, dt, m.init_state(2, dtype=torch.float64))
    assert_close_rel(ys, y, 1e-12, "step")
    assert_close_rel(hs[-1][0], s[0], 1e-12, "state")
