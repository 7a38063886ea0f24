"""GSS: the paper's Fig. 1 equations with the DSS-exp kernel written out, shapes, config, tags."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_close_rel

from ssmkit.layers import create_mixer


def _paper_gss(m, x):
    """GSS with the DSS-exp kernel K_k = Re(sum_n w_n (e^{Lambda_n dt} - 1) / Lambda_n e^{Lambda_n k dt})
    and a direct causal convolution, as in the GSS and DSS papers."""
    B, L, _ = x.shape
    core = m.ssm
    dt = torch.exp(core.log_dt)[:, None, None]  # (H, 1, 1)
    Lam = torch.complex(-torch.exp(core.Lambda_log_neg_re), core.Lambda_im)[None, :, None]  # (1, N, 1)
    w = torch.view_as_complex(core.W.contiguous())[..., None]  # (H, N, 1)
    k = torch.arange(L, dtype=torch.float64)
    K = (w * (torch.exp(Lam * dt) - 1) / Lam * torch.exp(Lam * k * dt)).sum(1).real  # (H, L)
    v = F.gelu(m.gate_proj(x))
    u = F.gelu(m.ssm_in(x))  # (B, L, H)
    y = torch.zeros_like(u)
    for t in range(L):
        y[:, t] = (K[:, : t + 1].flip(-1) * u[:, : t + 1].transpose(1, 2)).sum(-1)
    y = y + core.D * u
    return m.out_proj(m.ssm_out(y) * v)


@pytest.mark.parametrize("mode", ["fft", "chunked", "reference"])
def test_matches_paper_equations(mode):
    torch.manual_seed(0)
    m = create_mixer("gss", 8, d_state=8).double()
    x = torch.randn(2, 11, 8, dtype=torch.float64)
    assert_close_rel(m(x, mode=mode), _paper_gss(m, x), 1e-11, mode)


def test_default_widths_and_state():
    m = create_mixer("gss", 16)
    assert m.gate_proj.out_features == 64 and m.ssm_in.out_features == 4  # F = 4D, H = D/4
    assert m.config.variant == "exp"
    h, = m.init_state(3)
    assert h.shape == (3, 4, 32) and h.is_complex()
    assert m.state_size == 4 * 64
    m = create_mixer("gss", 8, expand=2, d_ssm=5, d_state=6)
    assert m.out_proj.in_features == 16 and m.state_size == 30


def test_gradients_fft_vs_reference_including_state():
    torch.manual_seed(1)
    m = create_mixer("gss", 8, d_state=8).double()
    x = torch.randn(2, 9, 8, dtype=torch.float64)
    w = torch.randn(2, 9, 8, dtype=torch.float64)
    with torch.no_grad():
        _, (h,) = m(torch.randn(2, 4, 8, dtype=torch.float64), return_state=True)
    grads = {}
    for mode in ("fft", "reference"):
        xi, hi = x.clone().requires_grad_(True), h.clone().requires_grad_(True)
        y, (hT,) = m(xi, (hi,), return_state=True, mode=mode)
        loss = (y * w).sum() + hT.real.sum() + hT.imag.sum()
        grads[mode] = torch.autograd.grad(loss, [xi, hi, *m.parameters()])
    for a, b in zip(grads["fft"], grads["reference"]):
        assert_close_rel(a, b, 1e-10)


def test_config_errors_and_tags():
    with pytest.raises(ValueError, match="expand"):
        create_mixer("gss", 8, expand=0)
    with pytest.raises(ValueError, match="d_ssm"):
        create_mixer("gss", 8, d_ssm=0)
    with pytest.raises(ValueError, match="variant"):
        create_mixer("gss", 8, variant="cosine")
    m = create_mixer("gss", 8)
    tagged = sorted(n for n, p in m.named_parameters() if hasattr(p, "_optim"))
    assert tagged == ["ssm.Lambda_im", "ssm.Lambda_log_neg_re", "ssm.W", "ssm.log_dt"]
    assert not hasattr(m.ssm, "output_linear")  # the DSS head is replaced by GSS's projections
