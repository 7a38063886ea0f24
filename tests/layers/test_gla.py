"""gla mixer: the paper's gated recurrence written out, its gate, strong gates, config."""
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
    return ssmkit.create_mixer("gla", d_model, **cfg).double()


def naive(m, x: torch.Tensor) -> torch.Tensor:
    """Yang et al. section 4.4 as a loop: α_t = sigmoid(x W_α1 W_α2 + b_α)^(1/τ),
    S_t = Diag(α_t) S_{t-1} + k_tᵀ v_t, o_t = q_t S_t / sqrt(K), y = (RMSNorm(o) ⊙ swish(x W_r + b_r)) W_o."""
    B, L, _ = x.shape
    H, K, V = m.n_heads, m.key_dim, m.value_dim
    q, k = m.q_proj(x).view(B, L, H, K), m.k_proj(x).view(B, L, H, K)
    v = m.v_proj(x).view(B, L, H, V)
    alpha = torch.sigmoid(m.gate_up(m.gate_down(x))).pow(1 / m.config.gate_temperature).view(B, L, H, K)
    S = torch.zeros(B, H, K, V, dtype=x.dtype)
    outs = []
    for t in range(L):
        S = alpha[:, t, :, :, None] * S + k[:, t, :, :, None] * v[:, t, :, None, :]
        outs.append(torch.einsum("bhk,bhkv->bhv", q[:, t], S) / K**0.5)
    o = torch.stack(outs, 1)
    o = (o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + m.config.norm_eps) * m.norm.weight).flatten(-2)
    return m.o_proj(o if not m.config.output_gate else o * F.silu(m.r_proj(x)))


@pytest.mark.parametrize("mode", ["chunked", "parallel", "reference"])
@pytest.mark.parametrize("n_heads", [1, 4])
def test_matches_paper_recurrence(mode, n_heads):
    m = make(n_heads=n_heads, chunk_size=4)
    with torch.no_grad():
        m.gate_up.bias.normal_(0, 3)  # a spread of decays, some strong
        m.norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(2, 11, 16, dtype=torch.float64)
    assert_close_rel(m(x, mode=mode), naive(m, x), 1e-12, "y")


@pytest.mark.parametrize("cfg", [dict(gate_bias=False), dict(output_gate=False)], ids=["no b_r", "no gate"])
def test_flash_linear_attention_output_options(cfg):
    """fla's GLA layer: the output gate without bias, or no output gate at all; every equivalence."""
    m = make(n_heads=2, chunk_size=4, **cfg)
    assert (m.r_proj is None) == (not m.config.output_gate)
    assert m.r_proj is None or m.r_proj.bias is None
    x = torch.randn(2, 11, 16, dtype=torch.float64)
    assert_close_rel(m(x), naive(m, x), 1e-12, "y")
    failed = [str(r) for r in check_mixer("gla", **cfg) if not r.passed]
    assert not failed, "\n".join(failed)


def test_gate_starts_close_to_one_and_is_tagged():
    """logits ≈ 0 at init, so α ≈ sigmoid(0)^(1/16) ≈ 0.958: long memory from the start."""
    m = ssmkit.create_mixer("gla", 64, ssm_lr=1e-3)
    _, _, _, log_alpha = m._inputs(torch.randn(4, 50, 64))
    alpha = torch.exp(log_alpha)
    assert alpha.shape == (4, 50, 4, 8)
    assert 0.9 < alpha.min() and alpha.max() < 1.0
    assert abs(alpha.mean().item() - 0.5 ** (1 / 16)) < 0.01
    tagged = {n for n, p in m.named_parameters() if getattr(p, "_optim", {}).get("lr") == 1e-3}
    assert tagged == {"gate_down.weight", "gate_up.weight", "gate_up.bias"}


def test_strong_gates_stay_finite_in_float32():
    """Gate logits near -2000 give log α near -125 a step: no overflow, same as float64."""
    m = make(d_model=32, chunk_size=16)
    with torch.no_grad():
        m.gate_up.bias.uniform_(-2000, 5)
    x = torch.randn(2, 100, 32, dtype=torch.float64)
    y64 = m(x)
    xg = x.float().requires_grad_()
    y32 = m.float()(xg)
    y32.sum().backward()
    assert torch.isfinite(xg.grad).all() and all(torch.isfinite(p.grad).all() for p in m.parameters())
    assert_close_rel(y32, y64, 1e-4, "float32 y")


def test_chunked_gradients_match_reference_with_initial_state():
    m = make(n_heads=2, chunk_size=4)
    assert_chunked_grads_match_reference(m)


def test_state_size():
    m = ssmkit.create_mixer("gla", 512)
    assert (m.n_heads, m.key_dim, m.value_dim) == (4, 64, 128)
    assert m.state_size == 4 * 64 * 128


@pytest.mark.parametrize("cfg,field", [
    (dict(n_heads=3), "n_heads"), (dict(n_heads=16), "n_heads"), (dict(expand_k=0.0), "expand_k"),
    (dict(gate_low_rank=0), "gate_low_rank"), (dict(gate_temperature=0.0), "gate_temperature"),
    (dict(chunk_size=12), "chunk_size"),
])
def test_config_errors_name_the_field(cfg, field):
    with pytest.raises(ValueError, match=f"'{field}'"):
        ssmkit.create_mixer("gla", 16, **cfg)
