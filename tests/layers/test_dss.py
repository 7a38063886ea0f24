"""DSS specifics: the recurrence (every mode) equals the paper's softmax / exp kernels, init, config.

Mode / state / gradient equivalence shared with S4D is in test_diagonal_lti.py.
"""
from __future__ import annotations

import pytest
import torch

import ssmkit
from conftest import assert_close_rel
from ssmkit.testing import check_mixer
from ssmkit.core.hippo import diagonal_normal


def _paper_kernel(m, L: int) -> torch.Tensor:
    """The DSS paper's kernels (Proposition 1), written out for k < L (H, L)."""
    dt = torch.exp(m.log_dt)[:, None, None]
    Lam = -torch.exp(m.Lambda_log_neg_re) + 1j * m.Lambda_im  # (N,)
    W = torch.view_as_complex(m.W)  # (H, N)
    if m.config.variant == "exp":
        P = dt * Lam[:, None] * torch.arange(L)  # (H, N, L)
        S = (torch.exp(dt[..., 0] * Lam) - 1)[..., None] * torch.exp(P)
    else:
        # Row softmax over k < l_max of  Lambda dt k, then the first L entries.
        P = dt * Lam[:, None] * torch.arange(m.config.l_max)
        S = torch.exp(P) / torch.exp(P).sum(-1, keepdim=True)
        S = S[..., :L]
    return torch.einsum("hn,hnl->hl", W / Lam, S).real


def _layer_from_kernel(m, x: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    L = x.shape[1]
    u = x.transpose(1, 2)
    y = torch.fft.irfft(torch.fft.rfft(u, n=2 * L) * torch.fft.rfft(K, n=2 * L), n=2 * L)[..., :L]
    y = torch.nn.functional.gelu(y + u * m.D[:, None]).transpose(1, 2)
    return torch.nn.functional.glu(m.output_linear(y), dim=-1)


@pytest.mark.parametrize("variant,l_max,L", [("softmax", 24, 24), ("softmax", 30, 17), ("softmax", 8, 21),
                                             ("exp", 1024, 23)])
def test_every_mode_equals_paper_kernel(variant, l_max, L):
    """L = l_max is the paper's setting; L < l_max and L > l_max use the same fixed normalization."""
    torch.manual_seed(0)
    m = ssmkit.create_mixer("dss", 5, d_state=8, variant=variant, l_max=l_max, dt_min=0.01, dt_max=0.3)
    m = m.double().eval()
    x = torch.randn(2, L, 5, dtype=torch.float64)
    L_ker = min(L, l_max) if variant == "softmax" else L
    expected = _layer_from_kernel(m, x[:, :L_ker], _paper_kernel(m, L_ker))
    for mode in ("fft", "chunked", "reference"):
        assert_close_rel(m(x, mode=mode)[:, :L_ker], expected, 1e-10, f"{mode} vs paper kernel")


def test_softmax_normalization_length_matters():
    torch.manual_seed(0)
    m = ssmkit.create_mixer("dss", 4, d_state=6, l_max=10).double()
    x = torch.randn(1, 12, 4, dtype=torch.float64)
    y10 = m(x)
    m.config.l_max = 1000
    assert not torch.allclose(m(x), y10)


def test_init_is_hippo_legs_diagonal():
    H, N = 3, 16
    m = ssmkit.create_mixer("dss", H, d_state=N)
    Lam = torch.complex(-torch.exp(m.Lambda_log_neg_re.double()), m.Lambda_im.double())
    expected = diagonal_normal("legs", N)[: N // 2]  # the Im > 0 half
    assert_close_rel(Lam, expected, 1e-6, "Lambda")
    assert (Lam.imag > 0).all() and torch.allclose(Lam.real, torch.full_like(Lam.real, -0.5))
    assert m.W.shape == (H, N // 2, 2) and m.log_dt.shape == (H,)
    assert m.state_size == H * N
    for name in ("log_dt", "Lambda_log_neg_re", "Lambda_im"):
        assert getattr(m, name)._optim["lr"] == m.config.ssm_lr, name


@pytest.mark.parametrize("variant", ["softmax", "exp"])
def test_equivalence_checker(variant):
    results = check_mixer("dss", length=11, variant=variant, l_max=6, scan_chunk=4)
    failed = [str(r) for r in results if not r.passed]
    assert not failed, "\n".join(failed)


@pytest.mark.parametrize(
    "cfg,field",
    [(dict(variant="tanh"), "variant"), (dict(l_max=0), "l_max"), (dict(d_state=3), "d_state"),
     (dict(dt_max=1e-5), "dt_max")],
    ids=["variant", "l_max", "d_state", "dt_max"],
)
def test_config_validation_names_the_field(cfg, field):
    with pytest.raises(ValueError, match=f"'{field}'"):
        ssmkit.create_mixer("dss", 4, **cfg)
