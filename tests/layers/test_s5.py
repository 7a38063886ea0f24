"""S5: the parallel scan vs the reference loop, S5 == a dense SSM in the HiPPO basis, init, config."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from conftest import assert_close_rel
from ssmkit import create_mixer
from ssmkit.core.discretize import discretize
from ssmkit.core.init import s5_init

D_MODEL = 5
CONFIGS = {
    "zoh-conj_sym": dict(discretization="zoh", conj_sym=True),
    "bilinear-full": dict(discretization="bilinear", conj_sym=False),
    "clip_eigs-full_glu-3blocks": dict(clip_eigs=True, activation="full_glu", d_state=12, blocks=3),
}


def make_s5(seed: int, **cfg) -> torch.nn.Module:
    """A float64 S5 whose steps span slow and fast modes (dt log-uniform on [1e-3, 1])."""
    torch.manual_seed(seed)
    m = create_mixer("s5", D_MODEL, **{"d_state": 8, "blocks": 2, **cfg}).double()
    with torch.no_grad():
        m.log_dt.uniform_(math.log(1e-3), 0.0)
    return m


def run(m, x, h0, mask, mode, w):
    """Outputs, final state and a scalar loss touching both (with random weights w)."""
    y, (h,) = m(x, (h0,), mask=mask, return_state=True, mode=mode)
    loss = (y * w).sum() + (h.real * 0.7 + h.imag * 1.3).sum()
    return y, h, loss


@pytest.mark.parametrize("L", [1, 7, 37], ids=lambda L: f"L{L}")
@pytest.mark.parametrize("cfg", list(CONFIGS.values()), ids=list(CONFIGS))
def test_scan_matches_reference_outputs_state_and_gradients(cfg, L):
    m = make_s5(L, **cfg)
    gen = torch.Generator().manual_seed(L)
    B = 3
    x = torch.randn(B, L, D_MODEL, generator=gen, dtype=torch.float64, requires_grad=True)
    n = m.init_state(1)[0].shape[1]
    h0 = torch.randn(B, n, generator=gen, dtype=torch.complex128).requires_grad_(True)
    mask = torch.ones(B, L, dtype=torch.bool)
    mask[1, L // 2 :] = False  # row 1 ends early (length L // 2, zero when L == 1)
    mask[2, 0] = L == 1  # row 2 starts with a pad
    w = torch.randn(B, L, D_MODEL, generator=gen, dtype=torch.float64)
    params = list(m.parameters())
    results = {}
    for mode in ("reference", "chunked"):
        y, h, loss = run(m, x, h0, mask, mode, w)
        grads = torch.autograd.grad(loss, [x, h0, *params])
        results[mode] = (y, h, grads)
    y_r, h_r, g_r = results["reference"]
    y_s, h_s, g_s = results["chunked"]
    assert_close_rel(y_s, y_r, 1e-10, "y")
    assert_close_rel(h_s, h_r, 1e-10, "final state")
    names = ["x", "h0", *(name for name, _ in m.named_parameters())]
    for name, a, b in zip(names, g_s, g_r):
        assert_close_rel(a, b, 1e-10, f"grad {name}")
    # Row 1's final state is the state after its own length: pads must not move it.
    if L > 1:
        _, (h_short,) = m(x[1:2, : L // 2], (h0[1:2],), return_state=True, mode="reference")
    else:
        h_short = h0[1:2]  # a row of length 0 keeps the incoming state
    assert_close_rel(h_s[1:2], h_short, 1e-12, "state after length")


def _complete(m, conj_sym: bool, blocks: int):
    """(Lambda, dt, B~, C~, V) of the full P-mode system (conjugate halves appended if conj_sym)."""
    P = m.config.d_state
    Lam0, V = s5_init(P, blocks)
    with torch.no_grad():
        Lam = torch.complex(m.Lambda_re, m.Lambda_im)
        dt = torch.exp(m.log_dt).to(torch.complex128)
        Bt = torch.complex(m.B_re, m.B_im)
        Ct = torch.complex(m.C_re, m.C_im)
    if not conj_sym:
        return Lam, dt, Bt, Ct, V
    bs = P // blocks
    Vk = V[:, (torch.arange(P) % bs) < bs // 2]
    return (
        torch.cat([Lam, Lam.conj()]),
        torch.cat([dt, dt]),
        torch.cat([Bt, Bt.conj()]),
        torch.cat([Ct, Ct.conj()], dim=1),
        torch.cat([Vk, Vk.conj()], dim=1),
    )


@pytest.mark.parametrize("conj_sym", [True, False], ids=["conj_sym", "full"])
@pytest.mark.parametrize("method", ["zoh", "bilinear"])
def test_equals_dense_ssm_in_original_basis(method, conj_sym):
    """S5 == x_k = dA x_{k-1} + dB u_k, y = Re(C x) + D u with A = V diag(Lambda dt) V^{-1}, unit step.

    Per-mode steps fold into the dense matrices (docs/math/s5.md): A = V diag(Lambda * dt) V^{-1},
    B = V diag(dt) B~, C = C~ V^{-1}, discretized by ``core.discretize.discretize`` with step 1.
    """
    blocks = 2
    m = make_s5(3, discretization=method, conj_sym=conj_sym, activation="gelu", blocks=blocks)
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():  # move off the init: the identity holds for any parameters
        for p in m.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    Lam, dt, Bt, Ct, V = _complete(m, conj_sym, blocks)
    Vinv = torch.linalg.inv(V)
    A = V @ torch.diag(Lam * dt) @ Vinv
    Bd = V @ torch.diag(dt) @ Bt
    Cd = Ct @ Vinv
    if conj_sym:  # the conjugate completion is a real system
        for name, t in (("A", A), ("B", Bd), ("C", Cd)):
            assert t.imag.abs().max() < 1e-12 * t.abs().max(), f"dense {name} is not real"
    dA, dB = discretize(A, Bd, 1.0, method)

    Bsz, L = 2, 9
    u = torch.randn(Bsz, L, D_MODEL, generator=gen, dtype=torch.float64)
    h0 = torch.randn(Bsz, m.init_state(1)[0].shape[1], generator=gen, dtype=torch.complex128)
    s = (torch.cat([h0, h0.conj()], dim=1) if conj_sym else h0) @ V.T  # x_0 = V h_0
    ys = []
    for k in range(L):
        s = s @ dA.T + u[:, k].to(dA.dtype) @ dB.T
        ys.append((s @ Cd.T).real + m.D.detach() * u[:, k])
    expected = F.gelu(torch.stack(ys, dim=1))
    for mode in ("reference", "chunked"):
        y, (h,) = m(u, (h0,), return_state=True, mode=mode)
        assert_close_rel(y, expected, 1e-10, f"y ({mode})")
        x_final = (torch.cat([h, h.conj()], dim=1) if conj_sym else h) @ V.T
        assert_close_rel(x_final, s, 1e-10, f"final state in the original basis ({mode})")


@pytest.mark.parametrize("conj_sym", [True, False], ids=["conj_sym", "full"])
def test_init_is_block_hippo_n_eigenbasis_of_real_b(conj_sym):
    """Lambda is s5_init's (Im > 0 half of each block with conj_sym); V B~ is the real initial B."""
    P, blocks = 12, 3
    torch.manual_seed(0)
    m = create_mixer("s5", 4, d_state=P, blocks=blocks, conj_sym=conj_sym).double()
    Lam0, _ = s5_init(P, blocks)
    Lam, _, Bt, Ct, V = _complete(m, conj_sym, blocks)
    n = P // 2 if conj_sym else P
    assert m.state_size == 2 * n and m.init_state(2)[0].shape == (2, n)
    got = torch.complex(m.Lambda_re, m.Lambda_im).detach()
    if conj_sym:
        assert (got.imag > 0).all(), "conj_sym must keep one mode of each pair (Im > 0)"
        assert_close_rel(torch.sort(Lam.imag).values, torch.sort(Lam0.imag).values, 1e-6, "full spectrum")
    else:
        assert_close_rel(got, Lam0, 1e-6, "Lambda")
    assert (got.real < 0).all()
    B = V @ Bt  # initial B in the original basis
    assert B.imag.abs().max() < 1e-6 * B.abs().max(), "V B~ must be real at init"
    assert (m.log_dt.exp() >= 1e-3 * (1 - 1e-6)).all() and (m.log_dt.exp() <= 0.1 * (1 + 1e-6)).all()
    assert m.log_dt.shape == (n,) and Ct.shape == (4, P)


def test_clip_eigs_keeps_unstable_parameters_stable():
    m = make_s5(0, clip_eigs=True)
    with torch.no_grad():
        m.Lambda_re.fill_(0.5)  # an unstable continuous-time mode if used as is
    dA, _ = m.discrete()
    assert (dA.abs() < 1).all()
    m.config.clip_eigs = False
    assert (m.discrete()[0].abs() > 1).all()


def test_float64_end_to_end_and_float32_default():
    m = make_s5(0)
    x = torch.randn(2, 6, D_MODEL, dtype=torch.float64)
    y, (h,) = m(x, return_state=True)
    assert y.dtype == torch.float64 and h.dtype == torch.complex128
    assert m.init_state(2)[0].dtype == torch.complex128
    m32 = create_mixer("s5", D_MODEL, d_state=8, blocks=2)
    assert all(p.dtype == torch.float32 for p in m32.parameters())
    assert m32.init_state(2)[0].dtype == torch.complex64
    ssm = [n for n, p in m32.named_parameters() if getattr(p, "_optim", {}).get("lr") == 1e-3]
    assert sorted(ssm) == sorted(["Lambda_re", "Lambda_im", "log_dt", "B_re", "B_im", "C_re", "C_im"])


@pytest.mark.parametrize(
    "cfg, match",
    [
        (dict(d_state=0), "'d_state': must be an int > 0"),
        (dict(d_state=12, blocks=5), "'blocks': must divide d_state=12"),
        (dict(d_state=12, blocks=4), "'conj_sym': needs an even block size"),
        (dict(discretization="euler"), "'discretization': must be one of"),
        (dict(dt_min=0.2, dt_max=0.1), "'dt_min': need 0 < dt_min <= dt_max"),
        (dict(activation="relu"), "'activation': must be one of"),
        (dict(ssm_lr=-1.0), "'ssm_lr'"),
    ],
    ids=["d_state", "blocks", "conj_sym-odd-block", "discretization", "dt-range", "activation", "ssm_lr"],
)
def test_config_validation_names_the_field(cfg, match):
    with pytest.raises(ValueError, match=match):
        create_mixer("s5", 4, **cfg)


def test_odd_block_allowed_without_conj_sym():
    m = create_mixer("s5", 4, d_state=12, blocks=4, conj_sym=False)
    assert m.state_size == 24
