"""hgrn2 mixer: the paper's recurrence written out, the bounded forget gate, config."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_close_rel

import ssmkit
from ssmkit.testing.equivalence import check_mixer

from .layer_helpers import assert_chunked_grads_match_reference


def make(d_model: int = 16, **cfg):
    torch.manual_seed(0)
    return ssmkit.create_mixer("hgrn2", d_model, **cfg).double()


def naive(m, x: torch.Tensor) -> torch.Tensor:
    """Qin et al. 2024 as a loop: f = β + (1-β) σ(x W_f), S_t = Diag(f_t) S_{t-1} + (1 - f_t)ᵀ i_t,
    o_t = swish(x W_q)_t S_t (times E^-1/2 with ``scale_q``), y = RMSNorm(o) W_o."""
    B, L, D = x.shape
    H, E = m.n_heads, m.head_dim
    beta = m.config.lower_bound
    f = (beta + (1 - beta) * torch.sigmoid(m.f_proj(x))).view(B, L, H, E)
    q = F.silu(m.q_proj(x)).view(B, L, H, E) * (E**-0.5 if m.config.scale_q else 1.0)
    i = m.i_proj(x).view(B, L, H, E)
    S = torch.zeros(B, H, E, E, dtype=x.dtype)
    outs = []
    for t in range(L):
        S = f[:, t, :, :, None] * S + (1 - f[:, t, :, :, None]) * i[:, t, :, None, :]
        outs.append(torch.einsum("bhk,bhkv->bhv", q[:, t], S))
    return m.o_proj(m.norm(torch.stack(outs, 1).reshape(B, L, D)))


@pytest.mark.parametrize("mode", ["chunked", "parallel", "reference"])
@pytest.mark.parametrize("lower_bound", [0.0, 0.6])
@pytest.mark.parametrize("expand_ratio", [4, 16])
def test_matches_paper_recurrence(mode, lower_bound, expand_ratio):
    m = make(lower_bound=lower_bound, expand_ratio=expand_ratio, chunk_size=4)
    with torch.no_grad():
        m.f_proj.weight.normal_(0, 1)  # a spread of forget gates, some near 0
    x = torch.randn(2, 11, 16, dtype=torch.float64)
    assert_close_rel(m(x, mode=mode), naive(m, x), 1e-12, "y")


def test_scale_q_option_matches_the_formula_and_every_equivalence():
    """fla's layer scales q by K^-1/2: only the readout norm's eps sees it, so check it where that matters."""
    m = make(expand_ratio=4, chunk_size=4, scale_q=True, norm_eps=1e-2)
    x = torch.randn(2, 11, 16, dtype=torch.float64)
    assert_close_rel(m(x), naive(m, x), 1e-12, "y")
    unscaled = make(expand_ratio=4, chunk_size=4, norm_eps=1e-2)
    assert (m(x) - unscaled(x)).abs().max() > 1e-4
    failed = [str(r) for r in check_mixer("hgrn2", scale_q=True) if not r.passed]
    assert not failed, "\n".join(failed)


@pytest.mark.parametrize("lower_bound", [0.0, 0.9])
def test_forget_gate_bounds_and_tied_input_gate(lower_bound):
    m = make(lower_bound=lower_bound)
    with torch.no_grad():
        m.f_proj.weight.normal_(0, 100)  # logits in the thousands: sigmoid saturates both ways
    _, k, _, log_f = m._inputs(torch.randn(3, 20, 16, dtype=torch.float64))
    f = torch.exp(log_f)
    assert torch.isfinite(log_f).all() and (f >= lower_bound).all() and (f <= 1).all()
    assert_close_rel(k, 1 - f, 1e-15, "k = 1 - f")
    if lower_bound == 0.0:  # logsigmoid stays finite where f itself underflows to 0
        assert log_f.min() < -100


def test_chunked_gradients_match_reference_with_initial_state():
    m = make(expand_ratio=8, lower_bound=0.3, chunk_size=4)
    assert_chunked_grads_match_reference(m)


def test_heads_and_state_size():
    m = ssmkit.create_mixer("hgrn2", 512)
    assert (m.n_heads, m.head_dim, m.state_size) == (4, 128, 4 * 128 * 128)
    small = ssmkit.create_mixer("hgrn2", 8)
    assert (small.n_heads, small.head_dim) == (1, 8)
    assert [n for n, p in m.named_parameters() if hasattr(p, "_optim")] == ["f_proj.weight"]


@pytest.mark.parametrize("cfg,field", [
    (dict(expand_ratio=5), "expand_ratio"), (dict(expand_ratio=0), "expand_ratio"),
    (dict(lower_bound=1.0), "lower_bound"), (dict(lower_bound=-0.1), "lower_bound"),
    (dict(norm_eps=0.0), "norm_eps"), (dict(chunk_size=3), "chunk_size"),
])
def test_config_errors_name_the_field(cfg, field):
    with pytest.raises(ValueError, match=f"'{field}'"):
        ssmkit.create_mixer("hgrn2", 16, **cfg)
