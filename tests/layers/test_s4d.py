"""S4D specifics: the layer equals the paper's code written out by hand, init kinds, config checks.

Mode / state / gradient equivalence shared with DSS is in test_diagonal_lti.py.
"""
from __future__ import annotations

import math

import pytest
import torch

import ssmkit
from conftest import assert_close_rel
from ssmkit.testing import check_mixer
from ssmkit.core.init import s4d_init


def _paper_output(m, x: torch.Tensor) -> torch.Tensor:
    """The S4D paper's standalone layer (its s4d.py), written out: kernel, FFT conv, D, GELU, GLU."""
    L = x.shape[1]
    dt = torch.exp(m.log_dt)[:, None]
    A = -torch.exp(m.log_A_real) + 1j * m.A_imag
    C = torch.view_as_complex(m.C)
    B = torch.ones_like(A) if m.B is None else torch.view_as_complex(m.B)
    dtA = dt * A
    if m.config.discretization == "zoh":
        dA, dB = torch.exp(dtA), (torch.exp(dtA) - 1) / A * B
    else:
        dA, dB = (1 + dtA / 2) / (1 - dtA / 2), dt * B / (1 - dtA / 2)
    K = 2 * torch.einsum("hn,hnl->hl", C * dB, dA[..., None] ** torch.arange(L)).real
    u = x.transpose(1, 2)
    y = torch.fft.irfft(torch.fft.rfft(u, n=2 * L) * torch.fft.rfft(K, n=2 * L), n=2 * L)[..., :L]
    y = torch.nn.functional.gelu(y + u * m.D[:, None]).transpose(1, 2)
    return torch.nn.functional.glu(m.output_linear(y), dim=-1)


@pytest.mark.parametrize("init", ["legs", "inv", "lin", "real"])
@pytest.mark.parametrize("disc", ["zoh", "bilinear"])
def test_layer_equals_paper_formula(init, disc):
    torch.manual_seed(0)
    m = ssmkit.create_mixer("s4d", 6, d_state=8, init=init, discretization=disc).double().eval()
    x = torch.randn(2, 41, 6, dtype=torch.float64)
    expected = _paper_output(m, x)
    for mode in ("fft", "chunked", "reference"):
        assert_close_rel(m(x, mode=mode), expected, 1e-10, f"{mode} vs paper formula")


@pytest.mark.parametrize("init", ["legs", "inv", "lin", "real"])
def test_init_kinds(init):
    torch.manual_seed(0)
    H, N = 5, 16
    m = ssmkit.create_mixer("s4d", H, d_state=N, init=init, dt_min=0.01, dt_max=0.2)
    A = torch.complex(-torch.exp(m.log_A_real.double()), m.A_imag.double())
    assert A.shape == (H, N // 2)
    assert_close_rel(A, s4d_init(init, N // 2).expand(H, -1), 1e-6, "A")
    n = torch.arange(N // 2, dtype=torch.float64)
    if init == "lin":
        assert_close_rel(A[0].imag, math.pi * n, 1e-6, "S4D-Lin imaginary parts pi n")
    if init == "real":
        assert_close_rel(A[0].real, -(n + 1), 1e-6, "S4D-Real A_n = -(n + 1)")
        assert (A.imag == 0).all()
    if init in ("legs", "inv", "lin"):
        assert_close_rel(A.real, torch.full_like(A.real, -0.5), 1e-6, "real parts -1/2")
    dt = torch.exp(m.log_dt)
    assert ((dt >= 0.01 * (1 - 1e-6)) & (dt <= 0.2 * (1 + 1e-6))).all()
    assert m.B is None and m.C.shape == (H, N // 2, 2)
    assert m.state_size == H * N


def test_ssm_parameters_are_tagged():
    m = ssmkit.create_mixer("s4d", 4, trainable_B=True, ssm_lr=2e-3)
    for name in ("log_dt", "log_A_real", "A_imag", "B"):
        assert getattr(m, name)._optim == {"weight_decay": 0.0, "lr": 2e-3}, name
    assert m.C._optim == {"weight_decay": 0.0}
    assert not hasattr(m.output_linear.weight, "_optim")


def test_trainable_B_starts_at_ones_and_changes_the_kernel():
    torch.manual_seed(0)
    m = ssmkit.create_mixer("s4d", 4, d_state=6, trainable_B=True).double()
    x = torch.randn(1, 9, 4, dtype=torch.float64)
    y0 = m(x)
    assert torch.equal(torch.view_as_complex(m.B), torch.ones(4, 3, dtype=torch.complex128))
    with torch.no_grad():
        m.B.mul_(2)
    assert_close_rel(m(x), _paper_output(m, x), 1e-10, "B = 2")
    assert not torch.allclose(m(x), y0)


def test_equivalence_checker_on_non_default_config():
    results = check_mixer("s4d", length=11, discretization="bilinear", trainable_B=True, init="lin", scan_chunk=4)
    failed = [str(r) for r in results if not r.passed]
    assert not failed, "\n".join(failed)


@pytest.mark.parametrize(
    "cfg,field",
    [
        (dict(d_state=7), "d_state"),
        (dict(d_state=0), "d_state"),
        (dict(init="hippo"), "init"),
        (dict(discretization="euler"), "discretization"),
        (dict(dt_min=0.0), "dt_min"),
        (dict(dt_min=0.1, dt_max=0.01), "dt_max"),
        (dict(dropout=1.0), "dropout"),
        (dict(ssm_lr=-1.0), "ssm_lr"),
        (dict(scan_chunk=0), "scan_chunk"),
    ],
    ids=lambda v: v if isinstance(v, str) else "-".join(f"{k}={x}" for k, x in v.items()),
)
def test_config_validation_names_the_field(cfg, field):
    with pytest.raises(ValueError, match=f"'{field}'"):
        ssmkit.create_mixer("s4d", 4, **cfg)
